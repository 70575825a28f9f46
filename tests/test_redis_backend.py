"""Redis backend specifics, in process: sharing, prefixes, expiries, node liveness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from conveyor_asgi.backends import backend_from_url
from conveyor_asgi.backends.redis import RedisBackend
from conveyor_asgi.errors import BackendUnavailable, ConfigurationError
from conveyor_asgi.settings import Settings
from conveyor_asgi.types import Delivery, PresenceChange, TokenGrant

from .backend_support import RecordingNode, RedisServer, own_redis_server, unique_prefix

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

Start = Callable[..., Any]


@pytest.fixture
async def start(redis_url: str) -> AsyncIterator[Start]:
    """Start RedisBackends (with their nodes); every one is stopped after the test."""
    running: list[RedisBackend] = []

    async def start_backend(
        prefix: str, node_timeout: float = 3.0
    ) -> tuple[RedisBackend, RecordingNode]:
        backend = RedisBackend(redis_url, prefix=prefix, node_timeout=node_timeout)
        node = RecordingNode()
        await backend.start(node)
        running.append(backend)
        return backend, node

    yield start_backend
    for backend in running:
        await backend.stop()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def _keys(raw: aioredis.Redis, prefix: str) -> list[str]:
    return sorted([key async for key in raw.scan_iter(match=f"{prefix}:*")])


def test_settings_select_the_redis_backend_with_prefix_and_timeout(redis_url: str) -> None:
    settings = Settings(backend_url=redis_url, redis_prefix="deploy-a", node_timeout=4)
    backend = backend_from_url(settings)
    assert isinstance(backend, RedisBackend)
    assert backend.keys.prefix == "deploy-a"
    assert backend.node_timeout == 4


def test_a_stopped_backend_starts_again_on_another_event_loop(redis_url: str) -> None:
    backend = RedisBackend(redis_url, prefix=unique_prefix(), node_timeout=2)

    async def round_trip() -> Delivery | PresenceChange:
        node = RecordingNode()
        await backend.start(node)
        try:
            await backend.publish(Delivery("all", None, "a", "1"))
            return await node.next()
        finally:
            await backend.stop()

    assert asyncio.run(round_trip()) == asyncio.run(round_trip()) == Delivery("all", None, "a", "1")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:port/0", "redis://:s3cret@127.0.0.1:x/0"])
def test_an_unusable_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        RedisBackend(url)
    assert "CONVEYOR_BACKEND_URL" in str(refused.value)
    assert "s3cret" not in str(refused.value)


async def test_two_nodes_of_one_prefix_share_state_and_delivery(start) -> None:
    prefix = unique_prefix()
    a, node_a = await start(prefix)
    b, node_b = await start(prefix)

    assert (
        len(
            {
                await a.next_connection_id(),
                await b.next_connection_id(),
                await a.next_connection_id(),
            }
        )
        == 3
    )
    await a.join("room", 11, "ann", announce=True)
    expected = PresenceChange("join", "room", 11, ((11, "ann"),))
    assert await node_a.next_presence() == expected
    assert await node_b.next_presence() == expected
    assert await b.members("room") == {11: "ann"}

    delivery = Delivery("channel", "room", "broadcast-action", '{"x":1}')
    await b.publish(delivery)
    assert await node_a.next() == delivery
    assert await node_b.next() == delivery

    await a.store_token("shared-token", TokenGrant("room", 5), 60)
    assert await b.take_token("shared-token", "room") == TokenGrant("room", 5)
    assert await a.take_token("shared-token", "room") is None


async def test_deployments_with_different_prefixes_do_not_see_each_other(start) -> None:
    a, node_a = await start(unique_prefix())
    b, node_b = await start(unique_prefix())

    await a.join("room", 1, 1, announce=True)
    await a.store_token("their-token", TokenGrant(), 60)
    await a.publish(Delivery("all", None, "fanout-action", "{}"))
    assert await node_a.next_presence()
    assert await node_a.next()

    assert await b.members("room") == {}
    assert await b.channels() == []
    assert await b.take_token("their-token") is None
    await node_b.quiet()


async def test_everything_stored_expires_or_is_removed_when_unused(start, raw) -> None:
    prefix = unique_prefix()
    backend, _ = await start(prefix)
    await backend.next_connection_id()
    await backend.store_token("tok", TokenGrant("room", None), 60)
    await backend.join("room", 1, None, announce=True)
    await backend.join("room", 2, "u", announce=True)

    keys = await _keys(raw, prefix)
    assert f"{prefix}:ch:room" in keys
    for key in keys:
        assert await raw.ttl(key) > 0, key
    assert all("tok" not in key.split(":tok:")[-1] for key in keys), "tokens are stored hashed"

    await backend.leave("room", 1, announce=True)
    await backend.leave("room", 2, announce=True)
    keys = await _keys(raw, prefix)
    assert f"{prefix}:ch:room" not in keys
    assert f"{prefix}:channels" not in keys

    await backend.stop()
    assert [k for k in await _keys(raw, prefix) if ":node" in k] == []


async def test_a_node_presumed_dead_registers_its_members_again(start, raw) -> None:
    prefix = unique_prefix()
    a, node_a = await start(prefix, node_timeout=1.2)
    b, node_b = await start(prefix, node_timeout=1.2)
    node_a.members[21] = ("room", 9)
    await a.join("room", 21, 9, announce=True)
    await node_b.next_presence()

    # As if a had been cut off long enough: its heartbeat is gone, b sweeps it.
    await raw.delete(f"{prefix}:node:{a.node_id}")
    left = await node_b.next_presence(timeout=5)
    assert (left.kind, left.fd, left.members) == ("leave", 21, ())

    # a notices at its next beat and registers the member again, announced.
    back = await node_b.next_presence(timeout=5)
    assert back == PresenceChange("join", "room", 21, ((21, 9),))
    assert await b.members("room") == {21: 9}


async def test_without_presence_a_swept_node_leaves_and_returns_silently(start, raw) -> None:
    prefix = unique_prefix()
    a, node_a = await start(prefix, node_timeout=1.2)
    b, node_b = await start(prefix, node_timeout=1.2)
    node_a.members[31] = ("room", "x")
    await a.join("room", 31, "x", announce=False)

    old_id = a.node_id
    await raw.delete(f"{prefix}:node:{old_id}")
    # a registers under a new id and its old record is swept, all without a word.
    assert await _until(lambda: _is(raw.exists(f"{prefix}:node:{old_id}:fds"), 0))
    assert await _until(lambda: _is(_new_id_and(a, old_id, b.members("room")), {31: "x"}))
    await node_b.quiet(0.5)
    await node_a.quiet(0.1)


async def _new_id_and(backend: RedisBackend, old_id: str, value: Awaitable[object]) -> object:
    result = await value
    return result if backend.node_id != old_id else None


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_an_outage_refuses_work_and_recovery_applies_what_happened_meanwhile() -> None:
    server = own_redis_server(persist=True)
    prefix = unique_prefix()
    a = RedisBackend(server.url, prefix=prefix, node_timeout=1.2)
    b = RedisBackend(server.url, prefix=prefix, node_timeout=1.2)
    node_a, node_b = RecordingNode(), RecordingNode()
    try:
        await a.start(node_a)
        await b.start(node_b)
        node_b.members[5] = ("room", None)
        await b.join("room", 5, None, announce=True)
        for fd, user in ((1, 10), (2, 20)):
            node_a.members[fd] = ("room", user)
            await a.join("room", fd, user, announce=True)
        for _ in range(3):
            await node_b.next_presence()

        server.stop()
        assert await _until(lambda: _not(a.healthy()))
        with pytest.raises(BackendUnavailable):
            await a.publish(Delivery("all", None, "fanout-action", "{}"))
        with pytest.raises(BackendUnavailable):
            await a.join("room", 3, None, announce=True)
        # The socket of member 2 closes while Redis is away.
        del node_a.members[2]
        with pytest.raises(BackendUnavailable):
            await a.leave("room", 2, announce=True)

        server.start()
        assert await _until(a.healthy)
        assert await _until(b.healthy)
        # Whichever node came back first, b's member sees member 2 leave, once.
        left = await node_b.next_presence(timeout=10)
        assert (left.kind, left.fd, left.members) == ("leave", 2, ((1, 10), (5, None)))
        assert await b.members("room") == {1: 10, 5: None}
        await node_b.quiet(1.0)  # the others were known already: no second join
    finally:
        await a.stop()
        await b.stop()
        server.close()


async def test_a_node_started_while_redis_is_down_serves_once_it_is_up() -> None:
    server = RedisServer()  # a free port, nothing listening yet
    backend = RedisBackend(server.url, prefix=unique_prefix(), node_timeout=1.2)
    try:
        await backend.start(RecordingNode())
        assert await backend.healthy() is False
        with pytest.raises(BackendUnavailable):
            await backend.next_connection_id()
        server.start()
        assert await _until(backend.healthy)
        assert await backend.next_connection_id() == 1
    finally:
        await backend.stop()
        server.close()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    """Poll ``check`` until it is true; False when ``timeout`` passes first."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False
