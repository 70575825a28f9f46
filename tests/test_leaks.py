"""No leaks: 10,000 connect/join/assoc/drop cycles leave nothing behind."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

from .rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawClient
from .support import HOST, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "leak-token"
ENV = {
    "CONVEYOR_SERVER_TOKEN": TOKEN,
    "CONVEYOR_USE_PRESENCE": "true",
    # Acknowledgments on: every frame to a client waits for an ack it never gets.
    "CONVEYOR_USE_ACKNOWLEDGMENT": "true",
    "CONVEYOR_LOG_LEVEL": "warning",
}
CYCLES = 10_000
WORKERS = 16
CHANNELS = 8
# Growth allowed between the warm-up and the end: allocator noise, not a leak
# (10,000 connections that each kept even one frame would exceed it).
RSS_SLACK = 8 * 1024 * 1024


async def _stats(server) -> dict[str, int]:
    status, body = await ahttp("GET", f"{server.http}/conveyor/stats?token={TOKEN}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _joined(client: RawClient, channel: str, user: int) -> None:
    """Read until this client's own join, with its user id, is announced."""
    while True:
        opcode, payload = await client.read_frame(timeout=30)
        if opcode == OP_PING:
            client.send_frame(OP_PONG, payload)
            continue
        assert opcode == OP_TEXT, (opcode, payload)
        frame = json.loads(payload)
        if frame["action"] != "channel-connect":
            continue
        data = json.loads(frame["data"])
        if data["fd"] == client.fd and data["channel"] == channel:
            assert data["userIds"][str(client.fd)] == user
            return


async def _close_normally(client: RawClient) -> None:
    client.send_frame(OP_CLOSE, struct.pack("!H", 1000))
    try:
        while (await client.read_frame())[0] != OP_CLOSE:
            pass
    except asyncio.IncompleteReadError:
        pass
    client.writer.close()


def _drop(client: RawClient) -> None:
    """End the TCP connection with a reset: no close frame, no FIN."""
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.abort()


async def _cycles(port: int, worker: int, count: int) -> None:
    for n in range(count):
        client = await RawClient.connect(HOST, port, f"token={TOKEN}")
        channel = f"room-{(worker + n) % CHANNELS}"
        user = worker * 1_000_000 + n
        client.send_json({"action": "assoc-user-to-fd-action", "userId": user})
        client.send_json({"action": "channel-connect", "channel": channel})
        await _joined(client, channel, user)
        if n % 2:
            _drop(client)
        else:
            await _close_normally(client)


async def _run(port: int, total: int) -> None:
    per_worker = total // WORKERS
    await asyncio.gather(*(_cycles(port, w, per_worker) for w in range(WORKERS)))


async def _settled(server) -> dict[str, int]:
    """Stats once every connection is gone (cleanup runs as sockets end)."""
    for _ in range(300):
        stats = await _stats(server)
        if stats["connections"] == 0 and stats["sockets"] == 0:
            return stats
        await asyncio.sleep(0.1)
    return stats


async def test_ten_thousand_cycles_leave_no_members_tasks_frames_or_memory(
    server_factory,
) -> None:
    server = server_factory(ENV, args=["--log-level", "warning"])

    # Warm up: imports, caches and the allocator's pools reach their steady size.
    await _run(server.port, 800)
    before = await _settled(server)
    await _run(server.port, CYCLES)
    after = await _settled(server)

    print(
        f"\nRSS before: {before['rss_bytes'] / 2**20:.1f} MiB, "
        f"after {CYCLES} cycles: {after['rss_bytes'] / 2**20:.1f} MiB "
        f"(tasks {before['tasks']} -> {after['tasks']})"
    )
    for key in (
        "connections",
        "sockets",
        "client_addresses",
        "channels",
        "members",
        "lobby",
        "queued",
        "pending_acks",
    ):
        assert after[key] == 0, (key, after)
    assert after["tasks"] == before["tasks"], (before, after)
    assert after["rss_bytes"] - before["rss_bytes"] < RSS_SLACK, (before, after)
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels?token={TOKEN}")
    assert (status, body) == (200, {"channels": []})
    output = server.output()
    assert "ERROR" not in output and "Traceback" not in output, output[-3000:]
