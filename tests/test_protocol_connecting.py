"""PROTOCOL.md section 1: the handshake, tokens, subprotocols, connection-info, logging."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
import websockets

from conveyor_asgi.errors import CLOSE_SERVICE_RESTART

from .protocol_helpers import (
    BACKENDS,
    TOKEN,
    joined,
    pool,
    refused_status,
    serve,
    sync,
    unique,
)
from .support import Client, ServerProcess, ahttp

pytestmark = pytest.mark.anyio

USER = 453728974839278943


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(request, {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"})


@pytest.fixture(scope="module", params=BACKENDS)
def open_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(request, {"CONVEYOR_USE_PRESENCE": "true"})


async def mint(server: ServerProcess, **body: object) -> str:
    status, answer = await ahttp("POST", f"{server.http}/conveyor/auth?token={TOKEN}", body)
    assert status == 200, answer
    token = answer["auth"]
    assert isinstance(token, str)
    return token


async def test_server_token_without_slash_before_the_query_is_accepted(server) -> None:
    url = f"ws://127.0.0.1:{server.port}?token={TOKEN}"
    assert "/?" not in url
    client = await Client.connect(url)
    try:
        assert isinstance(client.fd, int) and client.fd > 0
    finally:
        await client.close()


async def test_connection_info_is_the_first_frame_with_double_encoded_data(server) -> None:
    async with websockets.connect(f"{server.ws}/?token={TOKEN}") as ws:
        raw = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(raw, str)
    frame = json.loads(raw)
    assert set(frame) == {"action", "data"}
    assert frame["action"] == "connection-info"
    assert isinstance(frame["data"], str)
    info = json.loads(frame["data"])
    assert set(info) == {"fd", "event"}
    assert info["event"] == "connection-info"
    assert isinstance(info["fd"], int) and not isinstance(info["fd"], bool) and info["fd"] > 0


async def test_connection_ids_are_distinct_and_never_reused(server) -> None:
    seen: list[int] = []
    for _ in range(3):
        client = await Client.connect(f"{server.ws}?token={TOKEN}")
        assert client.fd is not None
        seen.append(client.fd)
        await client.close()
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        seen += [a.fd, b.fd]  # type: ignore[list-item]
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=wrong-token-xyz", f"?token={TOKEN}x", "?tok=other"],
    ids=["missing", "empty", "wrong", "longer", "other-parameter"],
)
async def test_bad_tokens_refuse_the_upgrade_with_403(server, query: str) -> None:
    assert await refused_status(f"{server.ws}/{query}") == 403


async def test_expired_temporary_token_is_refused(server) -> None:
    token = await mint(server, ttl=1)
    await asyncio.sleep(1.3)
    assert await refused_status(f"{server.ws}?token={token}") == 403


async def test_temporary_token_opens_one_connection_only(server) -> None:
    token = await mint(server)
    first = await Client.connect(f"{server.ws}?token={token}")
    try:
        assert await refused_status(f"{server.ws}?token={token}") == 403
    finally:
        await first.close()
    assert await refused_status(f"{server.ws}?token={token}") == 403


async def test_refused_handshake_does_not_use_up_a_token(server) -> None:
    token = await mint(server)
    assert await refused_status(f"{server.ws}?token={token}x") == 403
    client = await Client.connect(f"{server.ws}?token={token}")
    await client.close()


async def test_channel_bound_token_allows_one_join_without_auth(server) -> None:
    room = unique()
    token = await mint(server, channel=room)
    async with pool(server, token) as clients:
        client = await clients.open()
        await joined(client, room)
        await client.send({"action": "channel-disconnect"})
        await sync(client)
        await client.join(room)
        error = await client.expect("error")
        assert error["code"] == "unauthorized"
        await sync(client)


async def test_channel_bound_token_allows_one_join_with_the_same_token_as_auth(server) -> None:
    room = unique()
    token = await mint(server, channel=room)
    async with pool(server, token) as clients:
        client = await clients.open()
        await joined(client, room, auth=token)
        await client.join(unique(), auth=token)
        assert (await client.expect("error"))["code"] == "unauthorized"
        await client.send({"action": "channel-disconnect"})
        await client.join(room, auth=token)
        assert (await client.expect("error"))["code"] == "unauthorized"
        await sync(client)


async def test_channel_bound_token_refuses_other_channels_and_keeps_its_right(server) -> None:
    room = unique()
    token = await mint(server, channel=room)
    async with pool(server, token) as clients:
        client = await clients.open()
        await client.join(unique())
        error = await client.expect("error")
        assert error["code"] == "unauthorized" and error["fd"] == client.fd
        await joined(client, room)


async def test_handshake_token_cannot_be_used_by_another_connection(server) -> None:
    room = unique()
    token = await mint(server, channel=room)
    async with pool(server) as clients:
        owner = await clients.open(token)
        other = await clients.open(await mint(server))
        await other.join(room, auth=token)
        assert (await other.expect("error"))["code"] == "unauthorized"
        await joined(owner, room)


async def test_unbound_temporary_token_cannot_join_channels_on_its_strength(server) -> None:
    token = await mint(server)
    async with pool(server, token) as clients:
        client = await clients.open()
        await client.join(unique())
        assert (await client.expect("error"))["code"] == "unauthorized"
        await client.join(unique(), auth=token)
        assert (await client.expect("error"))["code"] == "unauthorized"
        await joined(client, unique(), auth=TOKEN)


async def test_user_bound_token_associates_the_user_from_the_start(server) -> None:
    room = unique()
    token = await mint(server, userId=USER)
    async with pool(server, token) as clients:
        client = await clients.open()
        await client.join(room, auth=TOKEN)
        update = await client.presence()
        assert update["userIds"] == {str(client.fd): USER}
        for other in (USER + 1, str(USER), "someone"):
            await client.send({"action": "assoc-user-to-fd-action", "userId": other})
            error = await client.expect("error")
            assert error["code"] == "unauthorized"
            assert "userId" in error["data"] or "user id" in error["data"]
        await client.send({"action": "assoc-user-to-fd-action", "userId": USER})
        await sync(client)
        status, body = await ahttp("GET", f"{server.http}/conveyor/channels/{room}?token={TOKEN}")
        assert status == 200 and body["userIds"] == {str(client.fd): USER}


async def test_token_bound_to_channel_and_user(server) -> None:
    room = unique()
    token = await mint(server, channel=room, userId="alice")
    async with pool(server, token) as clients:
        client = await clients.open()
        await client.join(room, auth=token)
        update = await client.presence()
        assert update["userIds"] == {str(client.fd): "alice"}


async def test_open_mode_ignores_tokens_and_their_user_binding(open_server) -> None:
    room = unique()
    status, answer = await ahttp(
        "POST", f"{open_server.http}/conveyor/auth", {"userId": 77, "channel": "elsewhere"}
    )
    assert status == 200
    token = answer["auth"]
    async with pool(open_server, None) as clients:
        plain = await clients.open()
        garbage = await clients.open("not-a-token")
        bound = await clients.open(token)
        again = await clients.open(token)  # nothing was used up
        for client in (plain, garbage, bound, again):
            await joined(client, room, auth="whatever")
            for earlier in [c for c in (plain, garbage, bound, again) if c.fd < client.fd]:
                await earlier.presence()
        await bound.send({"action": "assoc-user-to-fd-action", "userId": 5})
        for client in (plain, garbage, bound, again):
            update = await client.presence()
            assert update["userIds"] == {str(bound.fd): 5}
        await garbage.send({"action": "fanout-action", "data": 1, "auth": "nonsense"})
        for client in (plain, garbage, bound, again):
            assert (await client.expect("fanout-action"))["data"] == 1


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["chat", "socketconveyor.com"], "socketconveyor.com"),
        (["socketconveyor.com"], "socketconveyor.com"),
        (["chat", "superchat"], "chat"),
        (None, None),
    ],
)
async def test_subprotocol_selection(server, offered, selected) -> None:
    async with websockets.connect(f"{server.ws}?token={TOKEN}", subprotocols=offered) as ws:
        assert ws.subprotocol == selected
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["action"] == "connection-info"


async def test_connections_are_logged_with_address_and_no_token(server) -> None:
    secret = await mint(server)
    client = await Client.connect(f"{server.ws}?token={secret}")
    await client.close()
    assert await refused_status(f"{server.ws}?token=wrong-token-xyz") == 403
    await ahttp("GET", f"{server.http}/conveyor/channels?token={TOKEN}")
    await ahttp(
        "GET", f"{server.http}/conveyor/channels", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    await asyncio.sleep(0.2)
    output = server.output()
    assert re.search(r"INFO.*accepted 127\.0\.0\.1:\d+ /\?token=\[redacted\]", output), output
    assert re.search(r"INFO.*refused 127\.0\.0\.1:\d+ /\?token=\[redacted\]", output), output
    for token in (TOKEN, secret, "wrong-token-xyz"):
        assert token not in output
    assert "Logging error" not in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVEYOR_USE_PRESENCE", "maybe"),
        ("CONVEYOR_MAX_MESSAGE_BYTES", "lots"),
        ("CONVEYOR_ACKNOWLEDGMENT_TIMEOUT", "-1"),
        ("CONVEYOR_TOKEN_TTL", "7200"),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    server = ServerProcess({name: value})
    try:
        with pytest.raises(RuntimeError) as failure:
            server.start()
        assert name in str(failure.value)
        assert server.proc is not None and server.proc.poll() not in (None, 0)
    finally:
        server.__exit__(None, None, None)


async def test_no_token_in_any_log_line_even_at_trace_level(server_factory) -> None:
    server = server_factory(
        {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"},
        args=["--log-level", "trace"],
    )
    secret = await mint(server, channel="logged")
    async with pool(server) as clients:
        client = await clients.open()
        await client.join("logged", auth=TOKEN)
        await client.presence()
        other = await clients.open(secret)
        await other.join("logged", auth=secret)
        await other.presence()
        await client.send({"action": "fanout-action", "data": 1, "auth": TOKEN})
        await client.expect("channel-connect")
        await client.expect("fanout-action")
    await ahttp(
        "GET", f"{server.http}/conveyor/channels", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert await refused_status(f"{server.ws}?token=wrong-token-xyz") == 403
    await asyncio.sleep(0.2)
    output = server.output()
    assert "TRACE" in output and "[redacted]" in output
    for token in (TOKEN, secret, "wrong-token-xyz"):
        assert token not in output


async def test_open_mode_is_announced_loudly_at_start_up(open_server, server) -> None:
    assert re.search(r"WARNING.*CONVEYOR_SERVER_TOKEN.*OPEN", open_server.output())
    assert "OPEN" not in server.output()


@pytest.mark.parametrize("query", [f"?token={TOKEN}&room=a&debug=1", f"?room=a&token={TOKEN}"])
async def test_extra_query_options_beside_the_token(server, query: str) -> None:
    client = await Client.connect(f"ws://127.0.0.1:{server.port}{query}")
    await sync(client)
    await client.close()


async def test_extra_query_options_without_a_token_in_open_mode(open_server) -> None:
    client = await Client.connect(f"ws://127.0.0.1:{open_server.port}?room=a")
    await sync(client)
    await client.close()


async def test_tokens_without_a_ttl_live_for_the_configured_default(server_factory) -> None:
    server = server_factory({"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_TOKEN_TTL": "1"})
    short = await mint(server)
    kept = await mint(server, ttl=30)
    await asyncio.sleep(1.3)
    assert await refused_status(f"{server.ws}?token={short}") == 403
    client = await Client.connect(f"{server.ws}?token={kept}")
    await client.close()


async def test_server_shutdown_closes_sockets_with_the_restart_code(server_factory) -> None:
    server = server_factory({"CONVEYOR_SERVER_TOKEN": TOKEN})
    async with pool(server) as clients:
        a, b = await clients.open(), await clients.open()
        await a.join(unique())
        await sync(a)
        await asyncio.to_thread(server.stop)
        for client in (a, b):
            await asyncio.wait_for(client.ws.wait_closed(), 10)
            assert client.ws.close_code == CLOSE_SERVICE_RESTART
