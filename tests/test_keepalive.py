"""Keepalive: protocol pings find dead peers; live quiet clients stay connected."""

from __future__ import annotations

import asyncio

import pytest

from conveyor_asgi.__main__ import uvicorn_options
from conveyor_asgi.errors import ConfigurationError
from conveyor_asgi.settings import Settings

from .rawws import OP_TEXT, RawClient
from .support import HOST, Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "keepalive-token"
# Pings every 0.5 s, to be answered within 2 s (live clients on a busy machine
# must never miss that): a dead peer is gone within about 2.5 s.
ENV = {
    "CONVEYOR_SERVER_TOKEN": TOKEN,
    "CONVEYOR_USE_PRESENCE": "true",
    "CONVEYOR_PING_INTERVAL": "0.5",
    "CONVEYOR_PING_TIMEOUT": "2",
}


def test_ping_settings_come_from_the_environment_and_are_checked() -> None:
    settings = Settings.from_env({"CONVEYOR_PING_INTERVAL": "5", "CONVEYOR_PING_TIMEOUT": "2.5"})
    assert (settings.ping_interval, settings.ping_timeout) == (5.0, 2.5)
    assert Settings.from_env({"CONVEYOR_PING_INTERVAL": "0"}).ping_interval == 0.0
    with pytest.raises(ConfigurationError, match="CONVEYOR_PING_TIMEOUT"):
        Settings.from_env({"CONVEYOR_PING_TIMEOUT": "0"})
    with pytest.raises(ConfigurationError, match="CONVEYOR_PING_INTERVAL"):
        Settings.from_env({"CONVEYOR_PING_INTERVAL": "soon"})
    with pytest.raises(ConfigurationError, match="CONVEYOR_PING_INTERVAL"):
        Settings(ping_interval=-1)


def test_cli_passes_ping_settings_to_uvicorn() -> None:
    options = uvicorn_options(Settings(ping_interval=7.0, ping_timeout=3.0))
    assert options["ws_ping_interval"] == 7.0
    assert options["ws_ping_timeout"] == 3.0
    off = uvicorn_options(Settings(ping_interval=0.0))
    assert off["ws_ping_interval"] is None


async def _members(server, channel: str) -> list[int]:
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels/{channel}?token={TOKEN}")
    return body["fds"] if status == 200 else []


async def test_peer_that_never_answers_pings_is_removed_with_a_leave_update(
    server_factory,
) -> None:
    server = server_factory(ENV, cli=True)
    watcher = await Client.connect(f"{server.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()

    dead = await RawClient.connect(HOST, server.port, f"token={TOKEN}")
    dead.send_json({"action": "channel-connect", "channel": "room"})
    await dead.writer.drain()
    joined = await watcher.presence()
    assert joined["fd"] == dead.fd

    # From now on the raw client reads nothing and answers nothing.
    left = await watcher.presence("channel-disconnect", timeout=10)
    assert left["fd"] == dead.fd
    assert left["fds"] == [watcher.fd]
    assert await _members(server, "room") == [watcher.fd]
    dead.abort()
    await watcher.close()


async def test_peer_that_only_answers_pings_stays_connected(server_factory) -> None:
    server = server_factory(ENV, cli=True)
    watcher = await Client.connect(f"{server.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()
    quiet = await RawClient.connect(HOST, server.port, f"token={TOKEN}")
    quiet.send_json({"action": "channel-connect", "channel": "room"})
    await quiet.writer.drain()
    await watcher.presence()

    # Several ping intervals pass; the client answers pings and does nothing else.
    pings, others = await quiet.answer_pings(4.0)
    assert pings >= 3
    assert set(others) <= {OP_TEXT}  # its own join's presence update
    await watcher.silent(0.1)
    assert await _members(server, "room") == sorted([watcher.fd, quiet.fd])
    quiet.abort()
    await watcher.presence("channel-disconnect")
    await watcher.close()


async def test_client_sending_only_binary_heartbeats_stays_connected(server_factory) -> None:
    server = server_factory(ENV, cli=True)
    watcher = await Client.connect(f"{server.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()
    # A library client answers pings by itself, as a browser does under the npm client.
    beating = await Client.connect(f"{server.ws}?token={TOKEN}", ping_interval=None)
    await beating.join("room")
    await beating.presence()
    await watcher.presence()

    for _ in range(20):
        await beating.send(b"\x89\x00")
        await asyncio.sleep(0.2)

    await beating.silent(0.1)  # heartbeats get no reply
    await watcher.silent(0.1)  # and nobody left
    assert await _members(server, "room") == sorted([watcher.fd, beating.fd])
    await beating.close()
    await watcher.presence("channel-disconnect")
    await watcher.close()


@pytest.mark.parametrize("cli", [False, True], ids=["uvicorn", "cli"])
async def test_ping_settings_under_plain_uvicorn_are_reported_as_ignored(
    server_factory, cli
) -> None:
    server = server_factory(ENV, cli=cli)
    notice = "CONVEYOR_PING_INTERVAL and CONVEYOR_PING_TIMEOUT: keepalive settings have no effect"
    warned = notice in server.output()
    assert warned is not cli


async def test_dead_peer_with_full_buffers_is_removed_under_traffic(server_factory) -> None:
    # Once the peer's buffers are full, uvicorn's ping-timeout close cannot be
    # flushed and the socket never ends by itself: the send watchdog steps in.
    env = {**ENV, "CONVEYOR_SEND_TIMEOUT": "3", "CONVEYOR_SEND_QUEUE_SIZE": "100000"}
    server = server_factory(env, cli=True)
    watcher = await Client.connect(f"{server.ws}?token={TOKEN}")
    await watcher.join("room")
    await watcher.presence()
    dead = await RawClient.connect(HOST, server.port, f"token={TOKEN}")
    dead.send_json({"action": "channel-connect", "channel": "room"})
    await dead.writer.drain()
    await watcher.presence()

    # Far more than the socket buffers hold; the dead peer reads none of it.
    big = "x" * 900_000
    for _ in range(30):
        status, _ = await ahttp(
            "POST",
            f"{server.http}/conveyor/message?token={TOKEN}",
            {"channel": "room", "message": big},
        )
        assert status == 200
        assert (await watcher.expect("broadcast-action"))["data"] == big

    left = await watcher.presence("channel-disconnect", timeout=15)
    assert left["fd"] == dead.fd
    status, stats = await ahttp("GET", f"{server.http}/conveyor/stats?token={TOKEN}")
    assert (stats["connections"], stats["members"], stats["queued"]) == (1, 1, 0)
    assert "took no data for 3 s" in server.output()
    dead.abort()
    await watcher.close()
