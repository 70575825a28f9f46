"""Several uvicorn processes sharing one Redis behave like one server."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from .backend_support import RedisServer, own_redis_server, unique_prefix
from .support import Client, ServerProcess, ahttp

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TOKEN = "cluster-server-token"
NODE_TIMEOUT = 2.0
Nodes = Callable[..., ServerProcess]


def _env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "CONVEYOR_BACKEND_URL": url,
        "CONVEYOR_REDIS_PREFIX": prefix,
        "CONVEYOR_SERVER_TOKEN": TOKEN,
        "CONVEYOR_USE_PRESENCE": "true",
        "CONVEYOR_NODE_TIMEOUT": str(NODE_TIMEOUT),
        **extra,
    }


@pytest.fixture
def nodes(redis_url: str) -> Iterator[Nodes]:
    """Start nodes of one deployment (one prefix) on the shared test Redis."""
    prefix = unique_prefix()
    started: list[ServerProcess] = []

    def start(args: list[str] | None = None, url: str | None = None, **env: str) -> ServerProcess:
        server = ServerProcess(_env(url or redis_url, prefix, **env), args=args)
        started.append(server)
        return server.start()

    start.prefix = prefix  # type: ignore[attr-defined]
    yield start
    for server in started:
        server.__exit__(None, None, None)


def _auth(url: str) -> str:
    return f"{url}?token={TOKEN}"


async def test_two_nodes_deliver_and_answer_as_one_server(nodes: Nodes) -> None:
    a, b = nodes(), nodes()
    on_a = await Client.connect(_auth(a.ws))
    on_b = await Client.connect(_auth(b.ws))
    idle_a = await Client.connect(_auth(a.ws))
    idle_b = await Client.connect(_auth(b.ws))
    assert len({on_a.fd, on_b.fd, idle_a.fd, idle_b.fd}) == 4

    # Presence across nodes, user ids included.
    await on_a.send({"action": "assoc-user-to-fd-action", "userId": 453728974839278943})
    await on_a.join("room")
    assert (await on_a.presence())["fds"] == [on_a.fd]
    await on_b.join("room")
    for client in (on_a, on_b):
        joined = await client.presence()
        assert joined["fd"] == on_b.fd
        assert joined["fds"] == sorted([on_a.fd, on_b.fd])
        assert joined["userIds"] == {str(on_a.fd): 453728974839278943}

    # A channel broadcast reaches members on both nodes and nobody else.
    await on_b.send({"action": "broadcast-action", "data": {"n": 1}})
    for client in (on_a, on_b):
        assert await client.expect("broadcast-action") == {
            "action": "broadcast-action",
            "data": {"n": 1},
            "fd": on_b.fd,
        }

    # A broadcast from outside any channel reaches everyone outside channels.
    await idle_b.send({"action": "broadcast-action", "data": "lobby"})
    for client in (idle_a, idle_b):
        assert (await client.expect("broadcast-action"))["data"] == "lobby"

    # Fanout reaches every connection on every node.
    await idle_a.send({"action": "fanout-action", "data": "all", "auth": TOKEN})
    for client in (on_a, on_b, idle_a, idle_b):
        assert (await client.expect("fanout-action"))["data"] == "all"

    # HTTP publish on either node reaches members on both.
    status, _ = await ahttp(
        "POST",
        f"{b.http}/conveyor/message?token={TOKEN}",
        {"channel": "room", "message": "over http"},
    )
    assert status == 200
    for client in (on_a, on_b):
        assert await client.expect("broadcast-action") == {
            "action": "broadcast-action",
            "data": "over http",
        }
    for client in (idle_a, idle_b):
        await client.silent()

    # Both nodes tell the same story about channels.
    listings = [await ahttp("GET", f"{n.http}/conveyor/channels?token={TOKEN}") for n in (a, b)]
    assert (
        listings[0]
        == listings[1]
        == (200, {"channels": [{"channel": "room", "connections": 2, "users": 1}]})
    )
    shown = [await ahttp("GET", f"{n.http}/conveyor/channels/room?token={TOKEN}") for n in (a, b)]
    assert (
        shown[0]
        == shown[1]
        == (
            200,
            {
                "channel": "room",
                "fds": sorted([on_a.fd, on_b.fd]),
                "userIds": {str(on_a.fd): 453728974839278943},
            },
        )
    )

    # A leave on one node is seen on the other.
    await on_b.close()
    left = await on_a.presence("channel-disconnect")
    assert (left["fd"], left["fds"]) == (on_b.fd, [on_a.fd])
    for client in (on_a, idle_a, idle_b):
        await client.close()


async def test_a_token_minted_on_one_node_works_once_on_another(nodes: Nodes) -> None:
    a, b = nodes(), nodes()
    status, body = await ahttp(
        "POST", f"{a.http}/conveyor/auth?token={TOKEN}", {"channel": "vip", "userId": "u-1"}
    )
    assert status == 200
    temp = body["auth"]

    guest = await Client.connect(f"{b.ws}?token={temp}")
    for node in (a, b):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(f"{node.ws}?token={temp}")
        assert refused.value.response.status_code == 403

    await guest.join("vip")
    joined = await guest.presence()
    assert joined["fds"] == [guest.fd]
    assert joined["userIds"] == {str(guest.fd): "u-1"}
    await guest.close()


async def test_a_killed_node_disappears_and_a_restart_finds_no_ghosts(nodes: Nodes) -> None:
    a, b = nodes(), nodes()
    survivor = await Client.connect(_auth(a.ws))
    doomed = [await Client.connect(_auth(b.ws)) for _ in range(3)]
    await survivor.join("room")
    await survivor.presence()
    for i, client in enumerate(doomed):
        await client.send({"action": "assoc-user-to-fd-action", "userId": i})
        await client.join("room")
        assert (await survivor.presence())["userIds"][str(client.fd)] == i

    b.kill()
    # Within the node timeout (plus one sweep and some slack for a busy machine).
    gone = set()
    for _ in doomed:
        left = await survivor.presence("channel-disconnect", timeout=NODE_TIMEOUT + 4)
        gone.add(left["fd"])
    assert gone == {c.fd for c in doomed}
    assert left["fds"] == [survivor.fd] and left["userIds"] == {}
    status, body = await ahttp("GET", f"{a.http}/conveyor/channels/room?token={TOKEN}")
    assert (status, body["fds"]) == (200, [survivor.fd])

    # The whole deployment dies; once its heartbeats have expired, a new
    # node starts with no stale members.
    a.kill()
    await asyncio.sleep(NODE_TIMEOUT)
    c = nodes()
    assert await ahttp("GET", f"{c.http}/conveyor/channels?token={TOKEN}") == (
        200,
        {"channels": []},
    )


async def test_four_workers_agree_on_a_crowd_joining_and_leaving_at_once(
    nodes: Nodes,
    redis_url: str,
) -> None:
    # Liveness is not under test here: a generous timeout keeps a worker that
    # a loaded machine stalls for a moment from being presumed dead.
    server = nodes(args=["--workers", "4"], CONVEYOR_NODE_TIMEOUT="15")
    assert await _workers_registered(redis_url, nodes.prefix, 4)  # type: ignore[attr-defined]
    opened = await asyncio.gather(
        *(Client.connect(_auth(server.ws)) for _ in range(200)), return_exceptions=True
    )
    clients = [c for c in opened if isinstance(c, Client)]
    last: dict[int, dict[str, Any]] = {}
    readers = [asyncio.create_task(_record_presence(c, last)) for c in clients]
    try:
        assert len(clients) == 200, [e for e in opened if not isinstance(e, Client)][:3]
        await _crowd(server, clients, last, redis_url, nodes.prefix)  # type: ignore[attr-defined]
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _workers_registered(redis_url: str, prefix: str, count: int) -> bool:
    """Wait (bounded) until ``count`` nodes of ``prefix`` have registered in Redis."""
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for _ in range(200):
            if await raw.scard(f"{prefix}:nodes") >= count:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await raw.aclose()


async def _crowd(
    server: ServerProcess,
    clients: list[Client],
    last: dict[int, dict[str, Any]],
    redis_url: str,
    prefix: str,
) -> None:
    await asyncio.gather(*(c.join("crowd") for c in clients))
    random.seed(7)
    leaving = random.sample(clients, 100)
    for i, client in enumerate(leaving):
        if i % 2:
            await client.send({"action": "channel-disconnect"})
        else:
            await client.close()
    staying = [c for c in clients if c not in leaving]
    expected = sorted(c.fd for c in staying if c.fd is not None)

    snapshot = await _settled_snapshot(server, "crowd", last)
    assert snapshot == expected
    for client in staying:
        assert client.fd is not None
        assert last[client.fd]["fds"] == snapshot, f"connection {client.fd} saw a stale roster"
    # The crowd really was spread over several worker processes.
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    members = await raw.hgetall(f"{prefix}:ch:crowd")
    await raw.aclose()
    assert len({value.split("|")[0] for value in members.values()}) > 1


async def _record_presence(client: Client, last: dict[int, dict[str, Any]]) -> None:
    assert client.fd is not None
    while True:
        try:
            raw = await client.ws.recv()
        except websockets.ConnectionClosed:
            return
        frame = json.loads(raw)
        if frame["action"] in ("channel-connect", "channel-disconnect"):
            now = asyncio.get_running_loop().time()
            last[client.fd] = {**json.loads(frame["data"]), "seen": now}


async def _settled_snapshot(
    server: ServerProcess, channel: str, last: dict[int, dict[str, Any]]
) -> list[int]:
    """The channel's fds once no presence update has arrived for a while (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        newest = max((v["seen"] for v in last.values()), default=0.0)
        if loop.time() - newest > 2.0:
            break
    status, body = await ahttp("GET", f"{server.http}/conveyor/channels/{channel}?token={TOKEN}")
    assert status == 200
    return list(body["fds"])


async def test_an_outage_of_redis_keeps_clients_and_recovers(nodes: Nodes) -> None:
    redis_server = own_redis_server()
    try:
        await _outage_scenario(nodes, redis_server)
    finally:
        redis_server.close()


async def _outage_scenario(nodes: Nodes, redis_server: RedisServer) -> None:
    a, b = nodes(url=redis_server.url), nodes(url=redis_server.url)
    first, leaver = await Client.connect(_auth(a.ws)), await Client.connect(_auth(a.ws))
    second, quitter = await Client.connect(_auth(b.ws)), await Client.connect(_auth(b.ws))
    await first.send({"action": "assoc-user-to-fd-action", "userId": 1})
    everyone = [first, second, leaver, quitter]
    for client in everyone:
        await client.join("room")
    all_fds = sorted(c.fd for c in everyone if c.fd is not None)
    for client in everyone:
        assert await _settle_presence(client) == all_fds

    redis_server.stop()
    assert await _health_becomes(a, 503) and await _health_becomes(b, 503)
    status, _ = await ahttp(
        "POST", f"{a.http}/conveyor/message?token={TOKEN}", {"channel": "room", "message": "lost?"}
    )
    assert status == 503
    for n in range(5):
        await first.send({"action": "broadcast-action", "data": n})
    # Still connected and served locally; leaving works locally meanwhile.
    await first.send({"action": "base-action", "data": "ping"})
    assert (await first.expect("base-action"))["data"] == "ping"
    await leaver.close()
    await quitter.send({"action": "channel-disconnect"})
    await quitter.send({"action": "base-action", "data": "still here"})
    assert (await quitter.expect("base-action"))["data"] == "still here"

    redis_server.start()
    assert await _health_becomes(a, 200) and await _health_becomes(b, 200)

    # Members were registered again (Redis came back empty), the leaves made
    # during the outage reached the others, and delivery resumed.
    room = sorted([first.fd, second.fd])
    for node in (a, b):
        assert await ahttp("GET", f"{node.http}/conveyor/channels/room?token={TOKEN}") == (
            200,
            {"channel": "room", "fds": room, "userIds": {str(first.fd): 1}},
        )
    for client in (first, second):
        assert await _settle_presence(client) == room
    await second.send({"action": "broadcast-action", "data": "back"})
    for client in (first, second):
        assert await client.expect("broadcast-action") == {
            "action": "broadcast-action",
            "data": "back",
            "fd": second.fd,
        }
    newcomer = await Client.connect(_auth(b.ws))
    assert newcomer.fd not in all_fds
    await newcomer.send({"action": "broadcast-action", "data": "lobby"})
    for client in (newcomer, quitter):
        assert (await client.expect("broadcast-action"))["data"] == "lobby"

    for node in (a, b):
        log = node.output()
        assert log.count("is unreachable") == 1, log
        assert log.count("is reachable again") == 1, log
    for client in (first, second, newcomer, quitter):
        await client.close()


async def _settle_presence(client: Client, quiet: float = 1.0) -> list[int] | None:
    """Read presence updates until none comes for ``quiet`` seconds; the last roster."""
    fds = None
    while True:
        try:
            frame = await client.recv(timeout=quiet)
        except asyncio.TimeoutError:
            return fds
        assert frame["action"] in ("channel-connect", "channel-disconnect"), frame
        fds = json.loads(frame["data"])["fds"]


async def _next_broadcast(client: Client) -> dict[str, Any]:
    """The next broadcast frame, skipping presence updates re-announced after the outage."""
    while True:
        frame = await client.recv(timeout=10)
        if frame["action"] not in ("channel-connect", "channel-disconnect"):
            return frame


async def _health_becomes(server: ServerProcess, status: int, timeout: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if (await ahttp("GET", f"{server.http}/health"))[0] == status:
            return True
        await asyncio.sleep(0.1)
    return False
