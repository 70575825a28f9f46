"""The Redis backend: every worker and node shares state through one Redis server.

Each process is a *node* with a random id, a heartbeat key that expires
after ``node_timeout * 2/3`` and a record of the members it owns. Every node
sweeps the nodes whose heartbeat is gone, removing their members from every
channel with leave updates, so a killed node's connections disappear within
``node_timeout``. All deliveries and presence changes travel on one pub/sub
channel per deployment prefix; each node filters them for its own sockets.

When Redis cannot be reached the node keeps its sockets, refuses what needs
Redis with :class:`~conveyor_asgi.errors.BackendUnavailable`, logs the outage
once and reconnects with backoff. On reconnecting it takes a new node id,
registers its members again (announcing those Redis had lost) and sweeps its
old id, which announces the leaves that happened during the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import BackendUnavailable, ConfigurationError
from ..logging import BACKEND
from ..types import ChannelInfo, Delivery, PresenceChange, TokenGrant, UserId
from . import _redis_wire as wire
from ._outbox import Outbox
from .base import Backend, Node

T = TypeVar("T")

#: Backstop lifetime (seconds) of shared records, refreshed while in use.
LINGER = 24 * 3600
_REFRESH_CHANNELS_EVERY = LINGER / 8
_MAX_BACKOFF = 2.0
_POOL_SIZE = 64
_RESTORE_BATCH = 500
_POOL_WAIT = 20.0


class _Lapsed(RedisError):
    """This node was presumed dead (its heartbeat expired) and must register anew."""


_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisBackend(Backend):
    """Shared state and delivery through Redis (redis-py's asyncio client).

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://``).
        prefix: every key and the pub/sub channel start with it, so several
            deployments can share one Redis server without seeing each other.
        node_timeout: seconds after which a node that stopped answering is
            considered dead and its members are removed from every channel.
    """

    def __init__(self, url: str, prefix: str = "conveyor", node_timeout: float = 10.0) -> None:
        if node_timeout <= 0:
            raise ValueError("node_timeout must be positive")
        _check_url(url)
        self.url = url
        self.keys = wire.Keys(prefix)
        self.node_timeout = node_timeout
        self._beat_every = node_timeout / 6
        # How long a quiet subscription waits before checking for a failure
        # noticed elsewhere (a heartbeat that could not be written).
        self._listen_wait = min(1.0, self._beat_every)
        self._heartbeat_ms = max(1, int(node_timeout * 2000 / 3))
        self._redis: Redis | None = None
        self._node: Node | None = None
        self.node_id = secrets.token_hex(8)
        self._up = False
        self._outage_logged = False
        self._broken = asyncio.Event()
        self._first_try = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._helpers: set[asyncio.Task[None]] = set()
        self._max_id = 0
        self._pending_leaves: set[tuple[str, int]] = set()
        self._outbox = Outbox(self._publish_batch)
        self._last_channel_refresh = 0.0
        self._scripts: dict[str, Any] = {}
        # Whether the manager announces membership changes (its presence
        # setting); members registered again after an outage follow it.
        self._announces = False
        # The last roster seen per channel, to correct local members' view
        # after an outage during which announcements were missed.
        self._rosters: dict[str, tuple[tuple[int, UserId | None], ...]] = {}

    # -- life cycle -------------------------------------------------------

    async def start(self, node: Node) -> None:
        self._node = node
        # Fresh loop-bound objects: a stopped backend may be started again on
        # another event loop (a test client, a reloaded application).
        self._broken = asyncio.Event()
        self._first_try = asyncio.Event()
        self._outbox = Outbox(self._publish_batch)
        # A bounded pool: a burst of work waits for a connection instead of
        # opening one per coroutine. Failures surface at once (no retries) so
        # that an outage is noticed and handled in one place.
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=_POOL_SIZE,
            timeout=_POOL_WAIT,
            decode_responses=True,
            encoding_errors="surrogatepass",
            socket_connect_timeout=max(1.0, min(2.0, self.node_timeout / 3)),
            socket_timeout=max(5.0, self.node_timeout),
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis(connection_pool=pool)
        for name in ("JOIN", "LEAVE", "TAKE_TOKEN", "RAISE_IDS"):
            self._scripts[name] = self._redis.register_script(getattr(wire, name))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._subscriber()),
            loop.create_task(self._heartbeat()),
            loop.create_task(self._outbox.run()),
        ]
        # Serve only after the first attempt: a restarted deployment has swept
        # its dead predecessors by then (or reports the outage on /health).
        await self._first_try.wait()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._helpers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            # Also when an outage or a recovery is under way: whatever this
            # node registered goes. On failure the others sweep this node once
            # its heartbeat expires.
            with contextlib.suppress(*_FAILURES):
                await self._sweep(self.node_id, force=True)
        self._up = False
        self._pending_leaves.clear()
        self._rosters.clear()
        self._outbox.fail_all(BackendUnavailable("the backend stopped"))
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None
        self._node = None

    async def healthy(self) -> bool:
        if not self._up or self._redis is None:
            return False
        try:
            await self._redis.ping()
        except _FAILURES as exc:
            self._mark_down(exc)
            return False
        return True

    # -- the contract -----------------------------------------------------

    async def next_connection_id(self) -> int:
        fd = int(await self._call(lambda r: r.incr(self.keys.ids)))
        self._max_id = max(self._max_id, fd)
        return fd

    async def publish(self, delivery: Delivery) -> None:
        self._require_up()
        await self._outbox.put(wire.encode_delivery(delivery))

    async def join(self, channel: str, fd: int, user_id: UserId | None, announce: bool) -> None:
        self._announces = announce
        await self._call(lambda r: self._join(r, channel, fd, user_id, announce, quiet=False))

    async def leave(self, channel: str, fd: int, announce: bool) -> None:
        try:
            await self._call(lambda r: self._leave(r, channel, fd, announce, ""))
        except BackendUnavailable:
            # Applied when Redis is back (the old node id's sweep covers it too).
            self._pending_leaves.add((channel, fd))
            raise

    async def members(self, channel: str) -> dict[int, UserId | None]:
        flat = cast(
            "dict[str, str]", await self._call(lambda r: r.hgetall(self.keys.channel(channel)))
        )
        return {fd: wire.user_of(v) for fd, v in sorted((int(k), v) for k, v in flat.items())}

    async def channels(self) -> list[ChannelInfo]:
        return await self._call(self._channels)

    async def store_token(self, token: str, grant: TokenGrant, ttl: float) -> None:
        key = self.keys.token(_digest(token))
        value = wire.encode_grant(grant)
        await self._call(lambda r: r.set(key, value, px=max(1, int(ttl * 1000))))

    async def take_token(self, token: str, channel: str | None = None) -> TokenGrant | None:
        args = ["0", ""] if channel is None else ["1", channel]
        key = self.keys.token(_digest(token))
        value = await self._call(lambda r: self._scripts["TAKE_TOKEN"](keys=[key], args=args))
        return None if value is None else wire.decode_grant(value)

    # -- Redis calls ------------------------------------------------------

    def _require_up(self) -> None:
        if not self._up or self._redis is None:
            raise BackendUnavailable("Redis is unreachable")

    async def _call(self, fn: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``fn`` against Redis; a connection failure becomes BackendUnavailable."""
        self._require_up()
        assert self._redis is not None
        try:
            return await fn(self._redis)
        except _FAILURES as exc:
            self._mark_down(exc)
            raise BackendUnavailable("Redis is unreachable") from exc

    async def _join(
        self, r: Redis, channel: str, fd: int, user_id: UserId | None, announce: bool, quiet: bool
    ) -> None:
        keys = [self.keys.channel(channel), self.keys.channels, self.keys.fds(self.node_id)]
        args = [
            fd,
            wire.member_value(self.node_id, user_id, announce),
            channel,
            self.keys.bus,
            int(announce),
            int(quiet),
            LINGER,
        ]
        await self._scripts["JOIN"](keys=keys, args=args, client=r)

    async def _leave(
        self, r: Redis, channel: str, fd: int, announce: bool | None, owner: str
    ) -> bool:
        """Remove ``fd``; ``announce`` None announces as the member's join was."""
        keys = [
            self.keys.channel(channel),
            self.keys.channels,
            self.keys.fds(owner or self.node_id),
        ]
        flag = "auto" if announce is None else int(announce)
        args = [fd, channel, self.keys.bus, flag, owner]
        return bool(await self._scripts["LEAVE"](keys=keys, args=args, client=r))

    async def _channels(self, r: Redis) -> list[ChannelInfo]:
        names = sorted(cast("set[str]", await r.smembers(self.keys.channels)))
        async with r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hvals(self.keys.channel(name))
            values: list[list[str]] = await pipe.execute()
        infos = []
        for name, vals in zip(names, values, strict=True):
            if vals:
                users = {wire.user_json(v) for v in vals} - {"null"}
                infos.append(ChannelInfo(name, len(vals), len(users)))
        return infos

    # -- outages ----------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            self._broken.set()
        if isinstance(exc, _Lapsed):
            BACKEND.warning(
                "this node missed its heartbeat deadline and may have been "
                "presumed dead; registering it again"
            )
        elif not self._outage_logged:
            self._outage_logged = True
            BACKEND.error(
                "Redis at %s is unreachable (%s); keeping local connections and retrying",
                _where(self.url),
                type(exc).__name__,
            )

    async def _subscriber(self) -> None:
        """Keep the bus subscription alive; recover this node after each outage."""
        delay = 0.05
        while True:
            assert self._redis is not None
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.bus)
                await self._recover()
                delay = 0.05
                self._first_try.set()
                await self._listen(pubsub)
            except _FAILURES as exc:
                self._mark_down(exc)
            except Exception as exc:
                BACKEND.exception("the Redis subscription failed")
                self._mark_down(exc)
            finally:
                self._first_try.set()
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _listen(self, pubsub: PubSub) -> None:
        while not self._broken.is_set():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self._listen_wait
            )
            if message is not None and message.get("type") == "message":
                self._dispatch(message["data"])

    def _dispatch(self, raw: str) -> None:
        node = self._node
        if node is None:
            return
        try:
            if raw.startswith(wire.RESYNC):
                if raw[len(wire.RESYNC) :] == self.node_id:
                    self._spawn(self._resync())
                return
            item = wire.decode(raw)
            if isinstance(item, Delivery):
                node.deliver(item)
            elif isinstance(item, PresenceChange):
                self._remember(item)
                node.presence(item)
        except Exception:
            BACKEND.exception("could not handle a bus message of %d characters", len(raw))

    async def _recover(self) -> None:
        """(Re)register this node, its members and the id counter; sweep the dead."""
        assert self._redis is not None and self._node is not None
        r = self._redis
        old_id, self.node_id = self.node_id, secrets.token_hex(8)
        self._broken.clear()
        await self._beat(r, first=True)
        await self._scripts["RAISE_IDS"](
            keys=[self.keys.ids], args=[self._max_id, LINGER], client=r
        )
        restored = await self._restore(r)
        await r.delete(self.keys.heartbeat(old_id))
        await self._sweep_dead(r)
        # Announcements published while this node was not listening are lost
        # to it; once this marker comes back, everything before it has been
        # handled and the local view can be corrected (see _resync).
        await r.publish(self.keys.bus, wire.RESYNC + self.node_id)
        # Leaves that failed while Redis was away. Nothing awaits between the
        # last one and _up, so none can be left behind.
        while self._pending_leaves:
            channel, fd = self._pending_leaves.pop()
            await self._leave(r, channel, fd, None, "")
        self._up = True
        if self._outage_logged:
            self._outage_logged = False
            BACKEND.warning(
                "Redis at %s is reachable again; %d members registered", _where(self.url), restored
            )

    def _remember(self, change: PresenceChange) -> None:
        if change.members:
            self._rosters[change.channel] = change.members
        else:
            self._rosters.pop(change.channel, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def _resync(self) -> None:
        """Show local members the changes to their channels they missed during an outage.

        For each channel with local members whose roster was announced before,
        the difference between that roster and the stored one is announced
        locally, one leave or join at a time, ending on the stored roster.
        """
        assert self._node is not None
        local = {channel for channel, _ in self._node.local_members().values()}
        for channel in sorted(local & self._rosters.keys()):
            try:
                now = await self.members(channel)
            except BackendUnavailable:
                return
            before = self._rosters.get(channel)
            if before is None:
                continue
            for change in _differences(channel, dict(before), now):
                self._remember(change)
                if self._node is not None:
                    self._node.presence(change)

    async def _restore(self, r: Redis) -> int:
        """Register every local member under this node's id, many per round trip."""
        assert self._node is not None
        members = sorted(self._node.local_members().items())
        for start in range(0, len(members), _RESTORE_BATCH):
            async with r.pipeline(transaction=False) as pipe:
                for fd, (channel, user_id) in members[start : start + _RESTORE_BATCH]:
                    await self._join(pipe, channel, fd, user_id, self._announces, quiet=True)
                await pipe.execute()
        return len(members)

    # -- liveness ---------------------------------------------------------

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._beat_every)
            if not self._up or self._redis is None:
                continue
            try:
                await self._beat(self._redis)
                await self._sweep_dead(self._redis)
                if loop.time() - self._last_channel_refresh > _REFRESH_CHANNELS_EVERY:
                    await self._refresh_channels(self._redis)
                    self._last_channel_refresh = loop.time()
            except _FAILURES as exc:
                self._mark_down(exc)

    async def _beat(self, r: Redis, first: bool = False) -> None:
        async with r.pipeline(transaction=False) as pipe:
            # After the first beat the key must still be there: if it expired,
            # the others may have swept this node, which must then register anew.
            pipe.set(self.keys.heartbeat(self.node_id), "1", px=self._heartbeat_ms, xx=not first)
            pipe.sadd(self.keys.nodes, self.node_id)
            pipe.expire(self.keys.nodes, LINGER)
            pipe.expire(self.keys.fds(self.node_id), LINGER)
            pipe.expire(self.keys.ids, LINGER)
            lived = (await pipe.execute())[0]
        if not lived:
            raise _Lapsed("this node's heartbeat expired")

    async def _refresh_channels(self, r: Redis) -> None:
        assert self._node is not None
        names = {channel for channel, _ in self._node.local_members().values()}
        async with r.pipeline(transaction=False) as pipe:
            pipe.expire(self.keys.channels, LINGER)
            for name in names:
                pipe.expire(self.keys.channel(name), LINGER)
            await pipe.execute()

    async def _sweep_dead(self, r: Redis) -> None:
        nodes = sorted(cast("set[str]", await r.smembers(self.keys.nodes)))
        async with r.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.exists(self.keys.heartbeat(node))
            alive = await pipe.execute()
        for node, is_alive in zip(nodes, alive, strict=True):
            if not is_alive and node != self.node_id:
                await self._sweep(node)

    async def _sweep(self, node: str, force: bool = False) -> None:
        """Remove every member ``node`` owns, with leave updates, then the node itself."""
        assert self._redis is not None
        r = self._redis
        claimed = await r.set(
            self.keys.sweep(node),
            self.node_id,
            nx=True,
            px=max(1000, int(self.node_timeout * 1000)),
        )
        if not claimed and not force:
            return
        owned = cast("dict[str, str]", await r.hgetall(self.keys.fds(node)))
        for fd, channel in owned.items():
            await self._leave(r, channel, int(fd), None, node)
        async with r.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.fds(node), self.keys.heartbeat(node), self.keys.sweep(node))
            pipe.srem(self.keys.nodes, node)
            await pipe.execute()
        if owned:
            BACKEND.info("removed %d members of node %s", len(owned), node)

    async def _publish_batch(self, messages: list[str]) -> None:
        # One pipeline on one connection: the batch reaches Redis in order.
        async def send(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.publish(self.keys.bus, message)
                await pipe.execute()

        await self._call(send)


def _differences(
    channel: str, before: dict[int, UserId | None], now: dict[int, UserId | None]
) -> list[PresenceChange]:
    """Leaves then joins (or user changes) that turn ``before`` into ``now``."""
    changes = []
    roster = dict(before)
    for fd in sorted(set(before) - set(now)):
        del roster[fd]
        changes.append(PresenceChange("leave", channel, fd, tuple(sorted(roster.items()))))
    for fd, user in now.items():
        if fd in roster and _same(roster[fd], user):
            continue
        roster[fd] = user
        changes.append(PresenceChange("join", channel, fd, tuple(sorted(roster.items()))))
    return changes


def _same(a: UserId | None, b: UserId | None) -> bool:
    return type(a) is type(b) and a == b


def _check_url(url: str) -> None:
    """Refuse a URL redis-py cannot use, without repeating it (it may hold a password)."""
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"CONVEYOR_BACKEND_URL is not a usable Redis URL: {exc}") from None


def _digest(token: str) -> str:
    # Tokens are stored by digest so that reading Redis does not reveal them.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _where(url: str) -> str:
    """Host and port of ``url``, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # Closing a broken connection may fail in any way; it is being dropped anyway.
    with contextlib.suppress(Exception):
        await awaitable
