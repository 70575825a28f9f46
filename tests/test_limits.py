"""Limits, end to end: each one configurable and answered with a clear code."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conveyor_asgi.errors import (
    CHANNEL_FULL,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_RATE_LIMITED,
    RATE_LIMITED,
    UNAUTHORIZED,
)

from .support import Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "limits-token"
BASE = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}


async def _refused(url: str, **kw: object) -> int:
    """The HTTP status of a handshake that must be refused."""
    with pytest.raises(InvalidStatus) as caught:
        await Client.connect(url, **kw)
    return caught.value.response.status_code


async def _close_code(client: Client, timeout: float = 5.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), timeout)
    except ConnectionClosed:
        pass
    frame = client.ws.protocol.close_rcvd
    return None if frame is None else frame.code


async def test_frame_size_limit_accepts_the_maximum_and_closes_above(server_factory) -> None:
    server = server_factory({**BASE, "CONVEYOR_MAX_MESSAGE_BYTES": "200"})
    url = f"{server.ws}?token={TOKEN}"
    bystander = await Client.connect(url)
    client = await Client.connect(url)
    exact = "x" * 200
    await client.send(exact)
    assert (await client.expect("base-action"))["data"] == exact
    await client.send(b"\x00" * 201)
    assert await _close_code(client) == CLOSE_MESSAGE_TOO_BIG
    await bystander.send("still here")
    assert (await bystander.expect("base-action"))["data"] == "still here"
    await bystander.close()


async def test_rate_limit_answers_errors_then_closes_a_sustained_flood(server_factory) -> None:
    env = {**BASE, "CONVEYOR_RATE_LIMIT": "2", "CONVEYOR_RATE_BURST": "5"}
    server = server_factory(env)
    url = f"{server.ws}?token={TOKEN}"
    bystander = await Client.connect(url)

    # A burst a little over the allowance: the extra frames get error frames.
    polite = await Client.connect(url)
    for n in range(7):
        await polite.send({"action": "base-action", "data": n})
    replies = [await polite.recv() for _ in range(7)]
    assert [r["data"] for r in replies[:5]] == [0, 1, 2, 3, 4]
    assert [r["action"] for r in replies[5:]] == ["error", "error"]
    assert {r["code"] for r in replies[5:]} == {RATE_LIMITED}

    # Well past a burst of refusals is still not a flood: error frames, no close.
    for n in range(60):
        await polite.send({"action": "base-action", "data": n})
    replies = [await polite.recv() for _ in range(60)]
    assert {r["code"] for r in replies if r["action"] == "error"} == {RATE_LIMITED}
    assert sum(r["action"] == "error" for r in replies) >= 55
    await asyncio.sleep(3.0)  # the bucket refills: the connection works again
    await polite.send({"action": "base-action", "data": "again"})
    assert (await polite.expect("base-action"))["data"] == "again"

    # Far past the limit, without pause: closed with the rate-limit code.
    flooder = await Client.connect(url)
    for n in range(1000):
        try:
            await flooder.send({"action": "base-action", "data": n})
        except ConnectionClosed:
            break
    assert await _close_code(flooder) == CLOSE_RATE_LIMITED

    await bystander.send("fine")
    assert (await bystander.expect("base-action"))["data"] == "fine"
    for client in (polite, bystander):
        await client.close()


async def test_connections_per_address_are_limited_and_slots_come_back(server_factory) -> None:
    server = server_factory({**BASE, "CONVEYOR_MAX_CONNECTIONS_PER_IP": "3"})
    url = f"{server.ws}?token={TOKEN}"

    # Concurrent handshakes cannot slip past the limit together.
    results = await asyncio.gather(*(Client.connect(url) for _ in range(8)), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, Client)]
    refused = [r for r in results if isinstance(r, InvalidStatus)]
    assert len(accepted) == 3
    assert len(refused) == 5
    assert {r.response.status_code for r in refused} == {403}

    await accepted[0].close()
    accepted[1].drop()
    await asyncio.sleep(0.3)
    again = [await Client.connect(url) for _ in range(2)]
    assert await _refused(url) == 403
    for client in (accepted[2], *again):
        await client.close()


async def test_total_connections_are_limited(server_factory) -> None:
    server = server_factory({**BASE, "CONVEYOR_MAX_CONNECTIONS": "2"})
    url = f"{server.ws}?token={TOKEN}"
    first, second = await Client.connect(url), await Client.connect(url)
    assert await _refused(url) == 403
    await first.close()
    await asyncio.sleep(0.3)
    third = await Client.connect(url)
    await second.close()
    await third.close()


async def test_full_channel_refuses_a_join_with_an_error_frame(server_factory) -> None:
    server = server_factory({**BASE, "CONVEYOR_MAX_CHANNEL_MEMBERS": "2"})
    url = f"{server.ws}?token={TOKEN}"
    a, b, c = [await Client.connect(url) for _ in range(3)]
    await a.join("room")
    await a.presence()
    await b.join("room")
    await a.presence()
    await b.presence()

    await c.join("room")
    error = await c.expect("error")
    assert error["code"] == CHANNEL_FULL
    assert "room" in error["data"]
    await a.silent(0.2)
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels/room?token={TOKEN}")
    assert (status, body["fds"]) == (200, sorted([a.fd, b.fd]))

    await b.close()
    await a.presence("channel-disconnect")
    await c.join("room")
    assert (await c.presence())["fds"] == sorted([a.fd, c.fd])
    await a.close()
    await c.close()


async def test_http_body_limit(server_factory) -> None:
    server = server_factory({**BASE, "CONVEYOR_MAX_HTTP_BODY_BYTES": "64"})
    member = await Client.connect(f"{server.ws}?token={TOKEN}")
    await member.join("room")
    await member.presence()
    url = f"{server.http}/conveyor/message?token={TOKEN}"

    fits = json.dumps({"channel": "room", "message": "m" * 10}).encode()
    fits = fits + b" " * (64 - len(fits))
    assert len(fits) == 64
    status, _ = await ahttp("POST", url, raw=fits)
    assert status == 200
    assert (await member.expect("broadcast-action"))["data"] == "m" * 10

    status, body = await ahttp("POST", url, raw=fits + b" ")
    assert status == 413
    assert "large" in body["error"]
    await member.silent(0.2)
    await member.close()


async def test_origin_allow_list(server_factory) -> None:
    env = {**BASE, "CONVEYOR_ALLOWED_ORIGINS": "https://app.example, https://admin.example:8443"}
    server = server_factory(env)
    url = f"{server.ws}?token={TOKEN}"
    good = await Client.connect(url, origin="https://app.example")
    other = await Client.connect(url, origin="https://ADMIN.example:8443")
    assert await _refused(url, origin="https://evil.example") == 403
    assert await _refused(url, origin="http://app.example") == 403
    # No Origin header: not a browser, so no page to hijack; the token decides.
    backend_client = await Client.connect(url)
    for client in (good, other, backend_client):
        await client.close()


async def test_origins_are_open_by_default(server_factory) -> None:
    server = server_factory(BASE)
    client = await Client.connect(f"{server.ws}?token={TOKEN}", origin="https://any.example")
    await client.close()


async def test_user_bound_by_token_cannot_be_spoofed_in_presence(server_factory) -> None:
    server = server_factory(BASE)
    watcher = await Client.connect(f"{server.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()

    status, body = await ahttp(
        "POST", f"{server.http}/conveyor/auth?token={TOKEN}", {"channel": "room", "userId": 1001}
    )
    assert status == 200
    user = await Client.connect(f"{server.ws}?token={body['auth']}")
    await user.send({"action": "assoc-user-to-fd-action", "userId": 1})
    refused = await user.expect("error")
    assert refused["code"] == UNAUTHORIZED
    await user.send({"action": "assoc-user-to-fd-action", "userId": "1001"})
    assert (await user.expect("error"))["code"] == UNAUTHORIZED

    await user.join("room")
    for client in (watcher, user):
        joined = await client.presence()
        assert joined["userIds"] == {str(user.fd): 1001}
    await user.send({"action": "assoc-user-to-fd-action", "userId": 1001})  # the same: a no-op
    await watcher.silent(0.2)

    # The token was used up by that handshake: nobody else can take the identity.
    assert await _refused(f"{server.ws}?token={body['auth']}") == 403
    await user.close()
    await watcher.close()
