"""Graceful shutdown: SIGTERM closes every socket with 1012 and loses no answer."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from conveyor_asgi.errors import CLOSE_SERVICE_RESTART

from .support import HOST, Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "shutdown-token"
ENV = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}


async def _close_code(client: Client) -> int | None:
    """Read until the server closes; the code of the close frame it sent (None: no frame)."""
    try:
        while True:
            await client.ws.recv()
    except ConnectionClosed:
        pass
    frame = client.ws.protocol.close_rcvd
    return None if frame is None else frame.code


async def _stop(server) -> bool:
    """SIGTERM; True when the server went through its whole graceful shutdown."""
    code = await asyncio.to_thread(server.stop, signal.SIGTERM)
    # uvicorn re-raises the signal it handled once it is done, so a clean
    # stop ends "killed by SIGTERM" after its shutdown messages.
    assert code in (0, -signal.SIGTERM), code
    output = server.output()
    assert "conveyor-asgi stopped" in output, output
    assert "Application shutdown complete" in output, output
    return True


@pytest.mark.parametrize("cli", [False, True], ids=["uvicorn", "cli"])
async def test_sigterm_closes_every_client_with_service_restart(server_factory, cli) -> None:
    server = server_factory(ENV, cli=cli)
    url = f"{server.ws}?token={TOKEN}"
    in_room = [await Client.connect(url) for _ in range(3)]
    for client in in_room:
        await client.join("room")
    in_lobby = [await Client.connect(url) for _ in range(2)]
    await asyncio.sleep(0.2)

    stopping = asyncio.create_task(_stop(server))
    codes = await asyncio.gather(*(_close_code(c) for c in in_room + in_lobby))
    assert await stopping
    assert codes == [CLOSE_SERVICE_RESTART] * 5
    output = server.output()
    assert "ERROR" not in output, output
    assert "Traceback" not in output, output


async def test_frames_published_before_sigterm_arrive_before_the_close(server_factory) -> None:
    server = server_factory(ENV)
    member = await Client.connect(f"{server.ws}?token={TOKEN}")
    await member.join("room")
    await member.presence()

    status, _ = await ahttp(
        "POST",
        f"{server.http}/conveyor/message?token={TOKEN}",
        {"channel": "room", "message": "last words"},
    )
    assert status == 200
    stopping = asyncio.create_task(_stop(server))
    frame = await member.expect("broadcast-action")
    assert frame["data"] == "last words"
    assert await _close_code(member) == CLOSE_SERVICE_RESTART
    assert await stopping


async def test_http_publish_in_flight_at_sigterm_gets_an_answer(server_factory) -> None:
    server = server_factory(ENV)
    member = await Client.connect(f"{server.ws}?token={TOKEN}")
    await member.join("room")
    await member.presence()

    # The request is half sent when the signal arrives; the rest follows.
    body = json.dumps({"channel": "room", "message": {"n": 1}}).encode()
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(
        (
            f"POST /conveyor/message?token={TOKEN} HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:10]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    stopping = asyncio.create_task(_stop(server))
    assert await _close_code(member) == CLOSE_SERVICE_RESTART
    writer.write(body[10:])
    await writer.drain()

    # The server answers before it exits: 200 if the member was still there,
    # 404 once it is gone; never a hang, a 500, or a dropped request.
    response = await asyncio.wait_for(reader.read(), 10)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line in (b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"), response
    writer.close()
    assert await stopping


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_members_on_other_nodes_see_leave_updates_at_sigterm(server_factory) -> None:
    # The node timeout is long: the leave updates must come from the shutdown itself.
    env = {**ENV, "CONVEYOR_NODE_TIMEOUT": "60"}
    staying = server_factory(env)
    leaving = server_factory(env)
    watcher = await Client.connect(f"{staying.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()
    goners = [await Client.connect(f"{leaving.ws}?token={TOKEN}") for _ in range(2)]
    for goner in goners:
        await goner.join("room")
        await watcher.presence()

    stopping = asyncio.create_task(_stop(leaving))
    seen = {(await watcher.presence("channel-disconnect", timeout=5))["fd"] for _ in goners}
    assert seen == {g.fd for g in goners}
    assert await stopping
    status, body = await ahttp("GET", f"{staying.http}/conveyor/channels/room?token={TOKEN}")
    assert (status, body["fds"]) == (200, [watcher.fd])
    await watcher.close()
