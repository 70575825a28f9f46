"""PROTOCOL.md section 7: the HTTP endpoints."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor_asgi.frames import MAX_DEPTH

from .protocol_helpers import BACKENDS, TOKEN, pool, serve, sync, unique
from .support import HOST, ROOT, Client, ServerProcess, ahttp, http_request

pytestmark = pytest.mark.anyio

MAX_TTL = 60


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(
        request,
        {
            "CONVEYOR_SERVER_TOKEN": TOKEN,
            "CONVEYOR_TOKEN_MAX_TTL": str(MAX_TTL),
            "CONVEYOR_TOKEN_TTL": "30",
        },
    )


@pytest.fixture(scope="module", params=BACKENDS)
def open_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(request, {})


def q(channel: str) -> str:
    return urllib.parse.quote(channel, safe="")


async def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = TOKEN,
    bearer: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    url = f"{server.http}{path}"
    if token is not None:
        url += ("&" if "?" in path else "?") + f"token={token}"
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    return await ahttp(method, url, body, headers=headers, raw=raw)


async def mint(server: ServerProcess, **body: Any) -> str:
    status, answer = await call(server, "POST", "/conveyor/auth", body)
    assert status == 200, answer
    return str(answer["auth"])


# -- authorization ---------------------------------------------------------------------


async def test_every_route_takes_the_token_in_the_query_or_as_bearer(server) -> None:
    async with pool(server) as clients:
        room = unique()
        member = await clients.open()
        await member.join(room)
        await sync(member)
        for how in ({"token": TOKEN}, {"token": None, "bearer": TOKEN}):
            assert (await call(server, "POST", "/conveyor/auth", {}, **how))[0] == 200
            assert (
                await call(
                    server, "POST", "/conveyor/message", {"channel": room, "message": "m"}, **how
                )
            )[0] == 200
            assert (await member.expect("broadcast-action"))["data"] == "m"
            assert (await call(server, "GET", "/conveyor/channels", **how))[0] == 200
            assert (await call(server, "GET", f"/conveyor/channels/{room}", **how))[0] == 200


ROUTES = [
    ("POST", "/conveyor/auth", {}),
    ("POST", "/conveyor/message", {"channel": "room", "message": "m"}),
    ("GET", "/conveyor/channels", None),
    ("GET", "/conveyor/channels/room", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_missing_wrong_and_temporary_tokens_get_401(server, method, path, body) -> None:
    temp = await mint(server)
    for how in (
        {"token": None},
        {"token": "wrong"},
        {"token": None, "bearer": "wrong"},
        {"token": temp},
        {"token": None, "bearer": temp},
        {"token": ""},
    ):
        status, answer = await call(server, method, path, body, **how)
        assert status == 401, (how, answer)
    # the temporary token was not used up by being refused here
    client = await Client.connect(f"{server.ws}?token={temp}")
    await client.close()


async def test_either_place_holding_the_server_token_is_enough(server) -> None:
    for how in ({"token": "stale", "bearer": TOKEN}, {"token": TOKEN, "bearer": "stale"}):
        assert (await call(server, "GET", "/conveyor/channels", **how))[0] == 200


async def test_other_authorization_schemes_get_401(server) -> None:
    for header in (f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", "Bearer "):
        status, _ = await ahttp(
            "GET", f"{server.http}/conveyor/channels", headers={"Authorization": header}
        )
        assert status == 401, header


async def test_bad_token_is_401_before_a_bad_body_is_400(server) -> None:
    status, _ = await call(server, "POST", "/conveyor/message", raw=b"{nope", token="wrong")
    assert status == 401


async def test_health_needs_no_token(server) -> None:
    assert await call(server, "GET", "/health", token=None) == (200, {"status": "ok"})
    assert (await call(server, "GET", "/health", token="wrong"))[0] == 200


async def test_open_mode_checks_nothing_and_ignores_tokens(open_server) -> None:
    async with pool(open_server, None) as clients:
        room = unique()
        member = await clients.open()
        await member.join(room)
        await sync(member)
        for how in ({"token": None}, {"token": "anything"}, {"token": None, "bearer": "x"}):
            assert (await call(open_server, "POST", "/conveyor/auth", {}, **how))[0] == 200
            assert (
                await call(
                    open_server, "POST", "/conveyor/message", {"channel": room, "message": 1}, **how
                )
            )[0] == 200
            assert (await member.expect("broadcast-action"))["data"] == 1
            assert (await call(open_server, "GET", "/conveyor/channels", **how))[0] == 200
            assert (await call(open_server, "GET", f"/conveyor/channels/{room}", **how))[0] == 200


# -- POST /conveyor/auth ---------------------------------------------------------------


async def test_minted_tokens_are_long_random_and_distinct(server) -> None:
    tokens = {await mint(server) for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        assert len(token) >= 22  # at least 128 bits of URL-safe base64


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"channel": "room"},
        {"userId": 7},
        {"userId": "7"},
        {"userId": 453728974839278943},
        {"ttl": 1},
        {"ttl": MAX_TTL},
        {"ttl": 30.5},
        {"channel": None, "userId": None, "ttl": None},
        {"channel": "a" * 200, "userId": "u", "ttl": 5},
    ],
)
async def test_auth_accepts_good_bodies(server, body) -> None:
    status, answer = await call(server, "POST", "/conveyor/auth", body)
    assert status == 200 and set(answer) == {"auth"}


async def test_auth_accepts_an_empty_body(server) -> None:
    status, answer = await call(server, "POST", "/conveyor/auth", raw=b"")
    assert status == 200 and isinstance(answer["auth"], str)


@pytest.mark.parametrize(
    "raw",
    [
        b"{nope",
        b"[]",
        b'"x"',
        b"42",
        b"null",
        b'{"channel": ""}',
        b'{"channel": 5}',
        b'{"channel": "a\\u0000"}',
        b'{"channel": "' + b"a" * 201 + b'"}',
        b'{"channel": "x\\u0085"}',
        b'{"userId": true}',
        b'{"userId": 1.5}',
        b'{"userId": ""}',
        b'{"userId": {}}',
        b'{"userId": []}',
        b'{"ttl": 0}',
        b'{"ttl": 0.5}',
        b'{"ttl": -1}',
        b'{"ttl": 61}',
        b'{"ttl": 60.01}',
        b'{"ttl": "10"}',
        b'{"ttl": true}',
        b'{"ttl": 1e400}',
        b'{"ttl": [10]}',
    ],
)
async def test_auth_refuses_bad_bodies_with_400(server, raw) -> None:
    status, answer = await call(server, "POST", "/conveyor/auth", raw=raw)
    assert status == 400, answer
    assert isinstance(answer, dict) and answer.get("error")


# -- POST /conveyor/message ------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        0,
        False,
        " ",
        [None],
        {"a": 1},
        2**70,
        1.5,
        "😀",
        {"nested": [{"x": 453728974839278943}]},
    ],
)
async def test_message_reaches_every_member_without_fd(server, message) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b, outsider = [await clients.open() for _ in range(3)]
        for client in (a, b):
            await client.join(room)
            await sync(client)
        status, answer = await call(
            server, "POST", "/conveyor/message", {"channel": room, "message": message}
        )
        assert status == 200 and isinstance(answer["success"], str)
        for client in (a, b):
            frame = await client.recv()
            assert frame == {"action": "broadcast-action", "data": message}
            assert type(frame["data"]) is type(message)
        await outsider.silent(0.2)


@pytest.mark.parametrize(
    "raw",
    [
        b"{nope",
        b"",
        b"[]",
        b'"text"',
        b'{"channel": "ROOM"}',
        b'{"channel": "ROOM", "message": null}',
        b'{"channel": "ROOM", "message": ""}',
        b'{"channel": "ROOM", "message": []}',
        b'{"channel": "ROOM", "message": {}}',
        b'{"message": "m"}',
        b'{"channel": null, "message": "m"}',
        b'{"channel": "", "message": "m"}',
        b'{"channel": 5, "message": "m"}',
        b'{"channel": "a\\u001f", "message": "m"}',
    ],
)
@pytest.mark.parametrize("occupied", [True, False], ids=["occupied", "empty"])
async def test_bad_message_bodies_get_400_whether_or_not_the_channel_is_empty(
    server, raw, occupied
) -> None:
    async with pool(server) as clients:
        room = unique()
        if occupied:
            member = await clients.open()
            await member.join(room)
            await sync(member)
        status, answer = await call(
            server, "POST", "/conveyor/message", raw=raw.replace(b"ROOM", room.encode())
        )
        assert status == 400, answer
        if occupied:
            await member.silent(0.1)


async def test_message_nesting_limit(server) -> None:
    async with pool(server) as clients:
        room = unique()
        member = await clients.open()
        await member.join(room)
        await sync(member)
        deep: Any = []
        for _ in range(MAX_DEPTH - 2):  # with the body around it: MAX_DEPTH levels
            deep = [deep]
        status, _ = await call(
            server, "POST", "/conveyor/message", {"channel": room, "message": deep}
        )
        assert status == 200
        assert (await member.expect("broadcast-action"))["data"] == deep
        status, _ = await call(
            server, "POST", "/conveyor/message", {"channel": room, "message": [deep]}
        )
        assert status == 400
        await member.silent(0.1)
    assert "Traceback" not in server.output()


async def test_message_to_an_empty_channel_is_404(server) -> None:
    async with pool(server) as clients:
        room = unique()
        status, _ = await call(
            server, "POST", "/conveyor/message", {"channel": room, "message": "m"}
        )
        assert status == 404
        member = await clients.open()
        await member.join(room)
        await member.send({"action": "channel-disconnect"})
        await sync(member)
        status, _ = await call(
            server, "POST", "/conveyor/message", {"channel": room, "message": "m"}
        )
        assert status == 404


# -- GET /conveyor/channels and /conveyor/channels/{channel} -------------------------------


async def listing(server: ServerProcess) -> dict[str, dict[str, Any]]:
    status, body = await call(server, "GET", "/conveyor/channels")
    assert status == 200 and set(body) == {"channels"}
    result = {}
    for entry in body["channels"]:
        assert set(entry) == {"channel", "connections", "users"}
        result[entry["channel"]] = entry
    return result


async def test_channels_count_connections_and_distinct_users(server) -> None:
    async with pool(server) as clients:
        room, other = unique(), unique()
        users: list[Any] = [7, "7", 7, None, 453728974839278943, "x"]
        members = []
        for user in users:
            client = await clients.open()
            if user is not None:
                await client.send({"action": "assoc-user-to-fd-action", "userId": user})
            await client.join(room)
            await sync(client)
            members.append(client)
        lone = await clients.open()
        await lone.join(other)
        await sync(lone)
        found = await listing(server)
        assert found[room] == {"channel": room, "connections": 6, "users": 4}
        assert found[other] == {"channel": other, "connections": 1, "users": 0}
        await lone.close()
        for client in members[:3]:
            await client.send({"action": "channel-disconnect"})
            await sync(client)
        found = await listing(server)
        assert other not in found  # empty channels are not listed
        assert found[room] == {"channel": room, "connections": 3, "users": 2}


async def test_channel_detail_has_exactly_channel_fds_user_ids(server) -> None:
    async with pool(server) as clients:
        room = f"{unique()} é/ü"
        a, b, c = [await clients.open() for _ in range(3)]
        await b.send({"action": "assoc-user-to-fd-action", "userId": 453728974839278943})
        await c.send({"action": "assoc-user-to-fd-action", "userId": "42"})
        for client in (c, a, b):
            await client.join(room)
            await sync(client)
        status, raw = await ahttp("GET", f"{server.http}/conveyor/channels/{q(room)}?token={TOKEN}")
        assert status == 200
        assert raw == {
            "channel": room,
            "fds": sorted([a.fd, b.fd, c.fd]),
            "userIds": {str(b.fd): 453728974839278943, str(c.fd): "42"},
        }


async def test_channel_detail_of_an_empty_channel_is_404(server) -> None:
    status, _ = await call(server, "GET", f"/conveyor/channels/{unique()}")
    assert status == 404


async def test_unknown_routes_and_methods(server) -> None:
    assert (await call(server, "GET", "/conveyor/nothing"))[0] == 404
    assert (await call(server, "GET", "/conveyor/auth"))[0] == 405
    assert (await call(server, "GET", "/conveyor/message"))[0] == 405


def test_health_is_503_when_the_redis_backend_does_not_answer() -> None:
    pytest.importorskip("conveyor_asgi.backends.redis", reason="no Redis backend on this branch")
    server = ServerProcess({"CONVEYOR_BACKEND_URL": "redis://127.0.0.1:9/0"})
    # start() waits for a 200 from /health, which never comes here: launch by hand.
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", server.app, "--host", HOST, "--port", str(server.port)],
        cwd=ROOT,
        env=server.env,
        stdout=server.log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        status: int | None = None
        while time.monotonic() < deadline and status != 503:
            try:
                status, _ = http_request("GET", f"{server.http}/health")
            except OSError:
                time.sleep(0.1)
        assert status == 503
    finally:
        server.__exit__(None, None, None)
