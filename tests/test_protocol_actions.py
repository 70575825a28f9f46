"""PROTOCOL.md section 3: the built-in actions, their fields, auth rules and listeners."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor_asgi.frames import MAX_DEPTH

from .protocol_helpers import BACKENDS, TOKEN, backend_env, pool, sync, unique
from .support import Client, ServerProcess, ahttp

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """Presence off (the default): no presence frame may ever arrive here."""
    env = {**backend_env(request, request.param), "CONVEYOR_SERVER_TOKEN": TOKEN}
    server = ServerProcess(env, app="tests.protocol_app:app")
    server.start()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


async def mint(server: ServerProcess, **body: object) -> str:
    status, answer = await ahttp("POST", f"{server.http}/conveyor/auth?token={TOKEN}", body)
    assert status == 200, answer
    return str(answer["auth"])


async def members(server: ServerProcess, channel: str) -> list[int]:
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels/{channel}?token={TOKEN}")
    if status == 404:
        return []
    assert status == 200, body
    return list(body["fds"])


async def user_ids(server: ServerProcess, channel: str) -> dict[str, Any]:
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels/{channel}?token={TOKEN}")
    assert status == 200, body
    return dict(body["userIds"])


async def refused(client: Client, frame: dict[str, Any], code: str, field: str) -> None:
    await client.send(frame)
    error = await client.expect("error")
    assert error["code"] == code, error
    assert field in error["data"], error
    assert error["fd"] == client.fd


# -- required fields and types ------------------------------------------------

REQUIRED = [
    ({"action": "base-action"}, "data"),
    ({"action": "base-action", "data": None}, "data"),
    ({"action": "broadcast-action"}, "data"),
    ({"action": "broadcast-action", "data": None}, "data"),
    ({"action": "fanout-action", "auth": TOKEN}, "data"),
    ({"action": "fanout-action", "data": None, "auth": TOKEN}, "data"),
    ({"action": "channel-connect"}, "channel"),
    ({"action": "channel-connect", "channel": None}, "channel"),
    ({"action": "assoc-user-to-fd-action"}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": None}, "userId"),
    ({"action": "add-listener"}, "listen"),
    ({"action": "add-listener", "listen": None}, "listen"),
    ({"action": "acknowledge-action"}, "data"),
    ({"action": "acknowledge-action", "data": None}, "data"),
]


@pytest.mark.parametrize(("frame", "field"), REQUIRED)
async def test_missing_or_null_required_field_is_invalid_field(server, frame, field) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await refused(client, frame, "invalid-field", field)
        await sync(client)


WRONG_TYPES = [
    ({"action": "channel-connect", "channel": "r", "auth": 5}, "auth"),
    ({"action": "channel-connect", "channel": "r", "auth": True}, "auth"),
    ({"action": "channel-connect", "channel": "r", "auth": [TOKEN]}, "auth"),
    ({"action": "fanout-action", "data": 1, "auth": 5}, "auth"),
    ({"action": "fanout-action", "data": 1, "auth": {"t": TOKEN}}, "auth"),
    ({"action": "assoc-user-to-fd-action", "userId": True}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": False}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": 4.5}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": 4.0}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": ""}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": {"id": 1}}, "userId"),
    ({"action": "assoc-user-to-fd-action", "userId": [1]}, "userId"),
    ({"action": "add-listener", "listen": 5}, "listen"),
    ({"action": "add-listener", "listen": ""}, "listen"),
    ({"action": "add-listener", "listen": ["a"]}, "listen"),
    ({"action": "acknowledge-action", "data": {"id": 1}}, "data"),
    ({"action": "acknowledge-action", "data": True}, "data"),
]


@pytest.mark.parametrize(("frame", "field"), WRONG_TYPES)
async def test_field_of_the_wrong_type_is_invalid_field(server, frame, field) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await refused(client, frame, "invalid-field", field)
        await sync(client)


BAD_CHANNELS = [
    "",
    "a" * 201,
    "é" * 201,
    "\x00",
    "room\n",
    "a\tb",
    "\x1f",
    "\x7f",
    "x\x85y",
    "\x9f",
    5,
    1.5,
    True,
    [],
    ["room"],
    {"name": "room"},
]


@pytest.mark.parametrize("channel", BAD_CHANNELS)
async def test_bad_channel_names_are_refused_and_nothing_changes(server, channel) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        await client.join(room)
        await refused(
            client, {"action": "channel-connect", "channel": channel}, "invalid-field", "channel"
        )
        assert await members(server, room) == [client.fd]


@pytest.mark.parametrize(
    "channel",
    [
        "a" * 200,
        "é" * 200,
        "😀" * 200,
        "private-notifications",
        "with space",
        "zero\u200bwidth",
        "a/b/c",
    ],
)
async def test_good_channel_names_are_accepted(server, channel) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.join(channel)
        await client.send({"action": "broadcast-action", "data": "in"})
        frame = await client.expect("broadcast-action")
        assert frame == {"action": "broadcast-action", "data": "in", "fd": client.fd}
        await client.send({"action": "channel-disconnect"})
        await sync(client)


# -- data passthrough and the envelope ---------------------------------------------

DATA = [
    2**70,
    -(2**70),
    2**64,
    2**63,
    2**53 + 1,
    453728974839278943,
    123456789012345678901234567890,
    0.1,
    1e300,
    -2.5e-300,
    1.5,
    0,
    False,
    "",
    [],
    {},
    "😀 ünïcødé \u2028",
    {"nested": {"list": [1, 2**80, {"deep": [None, True, "x"]}], "f": 3.25}},
    [[[[[]]]]],
    "cut emoji \ud83d",
    "\udc00 lone low",
    {"k\ud800": ["\ud800", 2**65]},
]


@pytest.mark.parametrize("data", DATA)
async def test_data_passes_through_unchanged(server, data) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        room = unique()
        await a.join(room)
        await b.join(room)
        await sync(a)
        await sync(b)
        await a.send({"action": "base-action", "data": data})
        echo = await a.expect("base-action")
        assert echo["data"] == data and type(echo["data"]) is type(data)
        await a.send({"action": "broadcast-action", "data": data})
        for client in (a, b):
            frame = await client.expect("broadcast-action")
            assert frame["data"] == data and type(frame["data"]) is type(data)


async def test_big_integers_keep_every_digit_on_the_wire(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        digits = "1234567890123456789012345678901234567890"
        await client.send('{"action":"base-action","data":[' + digits + ",-" + digits + "]}")
        raw = await client.ws.recv()
        assert isinstance(raw, str)
        assert digits in raw and "-" + digits in raw
        assert json.loads(raw)["data"] == [int(digits), -int(digits)]


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_deep_data_passes_through_and_too_deep_is_refused(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        deep = nested(MAX_DEPTH - 1)  # the frame itself is one level more
        await client.send({"action": "broadcast-action", "data": deep})
        assert (await client.expect("broadcast-action"))["data"] == deep
        raw = json.dumps({"action": "broadcast-action", "data": nested(MAX_DEPTH)})
        await client.send(raw)
        error = await client.expect("error")
        assert error["code"] == "invalid-field" and "nested" in error["data"]
        await sync(client)
    assert "Traceback" not in server.output()


async def test_envelope_has_exactly_action_data_fd_and_never_auth(server) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        room = unique()
        await a.join(room, auth=TOKEN)
        await b.join(room, auth=TOKEN)
        await sync(a)
        await sync(b)
        extra = {"auth": TOKEN, "channel": "other", "userId": 3, "extra": "x"}
        await a.send({"action": "base-action", "data": "e", **extra})
        assert await a.recv() == {"action": "base-action", "data": "e", "fd": a.fd}
        await a.send({"action": "broadcast-action", "data": "b", **extra})
        for client in (a, b):
            assert await client.recv() == {"action": "broadcast-action", "data": "b", "fd": a.fd}
        await a.send({"action": "fanout-action", "data": "f", **extra})
        for client in (a, b):
            assert await client.recv() == {"action": "fanout-action", "data": "f", "fd": a.fd}


# -- broadcast and fanout ---------------------------------------------------------------


async def test_broadcast_in_a_channel_reaches_its_members_only(server) -> None:
    async with pool(server) as clients:
        a, b, c, lobby = [await clients.open() for _ in range(4)]
        room, other = unique(), unique()
        for client, channel in ((a, room), (b, room), (c, other)):
            await client.join(channel)
            await sync(client)
        await a.send({"action": "broadcast-action", "data": "hi"})
        for client in (a, b):
            assert await client.recv() == {"action": "broadcast-action", "data": "hi", "fd": a.fd}
        await c.silent(0.2)
        await lobby.silent(0.05)


async def test_broadcast_in_no_channel_reaches_everyone_in_no_channel(server) -> None:
    async with pool(server) as clients:
        a, b, member = [await clients.open() for _ in range(3)]
        await member.join(unique())
        await sync(member)
        await a.send({"action": "broadcast-action", "data": "lobby"})
        for client in (a, b):
            assert await client.recv() == {
                "action": "broadcast-action",
                "data": "lobby",
                "fd": a.fd,
            }
        await member.silent(0.2)


async def test_fanout_with_the_server_token_reaches_every_connection(server) -> None:
    async with pool(server) as clients:
        a, b, c = [await clients.open() for _ in range(3)]
        await b.join(unique())
        await sync(b)
        for auth in ({"auth": TOKEN}, {}, {"auth": None}):
            await a.send({"action": "fanout-action", "data": [1], **auth})
            for client in (a, b, c):
                assert await client.recv() == {"action": "fanout-action", "data": [1], "fd": a.fd}


async def test_fanout_refused_without_the_server_token(server) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        temp = await clients.open(await mint(server))
        bound = await clients.open(await mint(server, channel=unique()))
        for sender, auth in ((a, "wrong"), (temp, None), (bound, None), (a, await mint(server))):
            await refused(
                sender,
                {"action": "fanout-action", "data": 1, "auth": auth},
                "unauthorized",
                "fanout-action",
            )
        await temp.send({"action": "fanout-action", "data": 2, "auth": TOKEN})
        for client in (a, temp, bound):
            assert (await client.expect("fanout-action"))["data"] == 2


# -- channel-connect and channel-disconnect --------------------------------------------


async def test_channel_connect_with_the_server_token_or_its_own(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        for auth in ({"auth": TOKEN}, {}, {"auth": None}):
            room = unique()
            await client.join(room, **auth)
            await sync(client)
            assert await members(server, room) == [client.fd]


async def test_refused_channel_connect_leaves_the_connection_where_it_was(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        await client.join(room)
        await sync(client)
        for auth in ("wrong", await mint(server), await mint(server, channel=unique())):
            await refused(
                client,
                {"action": "channel-connect", "channel": unique(), "auth": auth},
                "unauthorized",
                "channel",
            )
        assert await members(server, room) == [client.fd]
        await client.send({"action": "broadcast-action", "data": "still"})
        assert (await client.expect("broadcast-action"))["data"] == "still"


async def test_temporary_token_bound_to_the_channel_is_consumed_on_use(server) -> None:
    room = unique()
    token = await mint(server, channel=room)
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        await refused(
            a,
            {"action": "channel-connect", "channel": unique(), "auth": token},
            "unauthorized",
            "channel",
        )
        await a.join(room, auth=token)  # the refusal above used nothing up
        await sync(a)
        await refused(
            b,
            {"action": "channel-connect", "channel": room, "auth": token},
            "unauthorized",
            "channel",
        )
        assert await members(server, room) == [a.fd]


async def test_switching_channels_moves_the_connection(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        old, new = unique(), unique()
        await client.join(old)
        await client.join(new)
        await sync(client)
        assert await members(server, old) == []
        assert await members(server, new) == [client.fd]


async def test_same_channel_again_changes_nothing_and_checks_nothing(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        await client.join(room)
        await sync(client)
        await client.join(room)
        await client.join(room, auth="wrong")
        await sync(client)
        assert await members(server, room) == [client.fd]


async def test_channel_disconnect_takes_the_connection_out(server) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        lobby = await clients.open()
        room = unique()
        await a.join(room)
        await a.send({"action": "channel-disconnect"})
        await sync(a)
        assert await members(server, room) == []
        await a.send({"action": "broadcast-action", "data": "back"})
        for client in (a, lobby):
            assert (await client.expect("broadcast-action"))["data"] == "back"
        await a.send({"action": "channel-disconnect"})  # in no channel: nothing happens
        await sync(a)


# -- assoc-user-to-fd-action ---------------------------------------------------------------


async def test_assoc_replaces_and_keeps_the_json_type(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        await client.join(room)
        for user in (42, "42", 453728974839278943, "alice", -7, 2**70):
            await client.send({"action": "assoc-user-to-fd-action", "userId": user})
            await sync(client)
            got = (await user_ids(server, room))[str(client.fd)]
            assert got == user and type(got) is type(user)


async def test_presence_is_off_by_default(server) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        room = unique()
        await a.join(room)
        await b.join(room)
        await b.send({"action": "assoc-user-to-fd-action", "userId": 1})
        await b.join(unique())
        await a.silent(0.2)
        await b.send({"action": "channel-disconnect"})
        await b.silent(0.1)
        await b.close()
        await a.silent(0.2)


# -- add-listener -----------------------------------------------------------------------


async def test_listeners_filter_broadcast_fanout_http_and_application_actions(server) -> None:
    async with pool(server) as clients:
        listener = await clients.open()
        sender = await clients.open()
        room = unique()
        for client in (listener, sender):
            await client.join(room)
            await sync(client)
        await listener.send({"action": "add-listener", "listen": "custom"})
        await sync(listener)

        # Three sources (sender, HTTP, listener) have no order between them:
        # each waits until the previous one's frames reached the sender.
        await sender.send({"action": "broadcast-action", "data": 1})
        await sender.send({"action": "fanout-action", "data": 2})
        await sender.send({"action": "shout", "channel": room, "data": 3})
        for expected in ("broadcast-action", "fanout-action", "shout"):
            assert (await sender.expect(expected))["action"] == expected
        status, _ = await ahttp(
            "POST", f"{server.http}/conveyor/message?token={TOKEN}", {"channel": room, "message": 4}
        )
        assert status == 200
        assert (await sender.expect("broadcast-action"))["data"] == 4
        await listener.send({"action": "broadcast-action", "data": 5})
        await listener.send({"action": "fanout-action", "data": 6})
        for expected in ("broadcast-action", "fanout-action"):
            assert (await sender.expect(expected))["action"] == expected

        # Replies and errors always arrive; the filtered frames above never did.
        await listener.send({"action": "nope"})
        assert (await listener.expect("error"))["code"] == "unknown-action"
        await sync(listener)


async def test_listeners_let_their_actions_through(server) -> None:
    async with pool(server) as clients:
        listener = await clients.open()
        sender = await clients.open()
        room = unique()
        for client in (listener, sender):
            await client.join(room)
            await sync(client)
        for name in ("shout", "fanout-action"):
            await listener.send({"action": "add-listener", "listen": name})
        await sync(listener)
        await sender.send({"action": "broadcast-action", "data": "dropped"})
        await sender.send({"action": "shout", "channel": room, "data": "shouted"})
        await sender.send({"action": "fanout-action", "data": "fanned"})
        assert await listener.recv() == {"action": "shout", "data": "shouted", "fd": sender.fd}
        assert await listener.recv() == {
            "action": "fanout-action",
            "data": "fanned",
            "fd": sender.fd,
        }
        # Frames of two senders have no order between them: send after receiving.
        await listener.send({"action": "fanout-action", "data": "own"})
        assert await listener.recv() == {
            "action": "fanout-action",
            "data": "own",
            "fd": listener.fd,
        }
        await sync(listener)
