"""Races: broadcasts while members join, leave and drop never skip a member who stays."""

from __future__ import annotations

import asyncio
import random

import pytest
from websockets.exceptions import ConnectionClosed

from .support import Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "race-token"
ENV = {
    "CONVEYOR_SERVER_TOKEN": TOKEN,
    "CONVEYOR_USE_PRESENCE": "true",
    # Readers that keep up are never evicted, even on a busy shared machine.
    "CONVEYOR_SEND_QUEUE_SIZE": "100000",
}
ROOM = "race-room"
STAYERS = 4
MESSAGES = 100  # per sending stayer
HTTP_MESSAGES = 50
CHURNERS = 16
CHURN_STEPS = 30


async def _collect(client: Client, done: str, senders: int) -> list[tuple[object, object]]:
    """Every broadcast a stayer receives, as (sender fd, data), until each of the
    ``senders`` stayers sent its ``done`` marker (after all its own messages)."""
    seen: list[tuple[object, object]] = []
    finished: set[object] = set()
    while len(finished) < senders:
        frame = await client.recv(timeout=30)
        if frame["action"] != "broadcast-action":
            continue
        if frame["data"] == done:
            finished.add(frame.get("fd"))
        else:
            seen.append((frame.get("fd"), frame["data"]))
    return seen


async def _send_all(client: Client) -> None:
    for n in range(MESSAGES):
        await client.send({"action": "broadcast-action", "data": {"n": n, "from": client.fd}})
        if n % 10 == 0:
            await asyncio.sleep(0)


async def _publish_all(server) -> None:
    url = f"{server.http}/conveyor/message?token={TOKEN}"
    for n in range(HTTP_MESSAGES):
        status, body = await ahttp("POST", url, {"channel": ROOM, "message": {"http": n}})
        assert status == 200, body


async def _churn(server, seed: int) -> None:
    """Join, leave, switch, associate, close and drop, at random, on the same channel."""
    rnd = random.Random(seed)
    url = f"{server.ws}?token={TOKEN}"
    client = await Client.connect(url)
    for step in range(CHURN_STEPS):
        op = rnd.choice(["join", "join", "leave", "switch", "assoc", "drop", "close", "send"])
        try:
            if op == "join":
                await client.join(ROOM)
            elif op == "leave":
                await client.send({"action": "channel-disconnect"})
            elif op == "switch":
                await client.join(f"elsewhere-{seed % 3}")
            elif op == "assoc":
                user = seed * 100 + step
                await client.send({"action": "assoc-user-to-fd-action", "userId": user})
            elif op == "send":
                await client.send({"action": "broadcast-action", "data": "churn"})
            elif op == "drop":
                client.drop()
                client = await Client.connect(url)
            else:
                await client.close()
                client = await Client.connect(url)
        except ConnectionClosed:
            client = await Client.connect(url)
        await asyncio.sleep(rnd.random() * 0.01)
    client.drop()


async def test_broadcasts_during_churn_reach_every_member_who_stays(server_factory) -> None:
    server = server_factory(ENV, args=["--log-level", "warning"])
    url = f"{server.ws}?token={TOKEN}"
    stayers = [await Client.connect(url) for _ in range(STAYERS)]
    try:
        for client in stayers:
            await client.join(ROOM)
        # Joins of different connections have no order: each stayer's last update
        # lists all of them.
        roster = sorted(c.fd for c in stayers)
        for client in stayers:
            while (await client.presence())["fds"] != roster:
                pass

        collectors = [asyncio.create_task(_collect(c, "done", STAYERS)) for c in stayers]
        await asyncio.gather(
            *(_send_all(c) for c in stayers),
            _publish_all(server),
            *(_churn(server, seed) for seed in range(CHURNERS)),
        )
        for client in stayers:
            await client.send({"action": "broadcast-action", "data": "done"})
        received = await asyncio.gather(*collectors)

        # Each stayer got every stayer's messages and every HTTP message, once and in order.
        for seen in received:
            for sender in stayers:
                mine = [d["n"] for fd, d in seen if fd == sender.fd]
                assert mine == list(range(MESSAGES)), (sender.fd, mine)
            http = [d["http"] for fd, d in seen if fd is None]
            assert http == list(range(HTTP_MESSAGES))

        # The churners are all gone: the roster is the stayers again.
        # (Dropped sockets are noticed as their resets arrive: allow a moment.)
        channel_url = f"{server.http}/conveyor/channels/{ROOM}?token={TOKEN}"
        for _ in range(100):
            status, body = await ahttp("GET", channel_url)
            if (status, body["fds"]) == (200, roster):
                break
            await asyncio.sleep(0.1)
        assert (status, body["fds"]) == (200, roster)
        output = server.output()
        assert "ERROR" not in output and "Traceback" not in output, output[-3000:]
    finally:
        for client in stayers:
            await client.close()
