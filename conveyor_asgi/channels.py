"""The ChannelManager: who is connected, who is where, and who gets which frame."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from . import frames
from .backends.base import Backend
from .connection import Connection
from .errors import CLOSE_TRY_AGAIN_LATER, BackendUnavailable
from .logging import ACTIONS, CONNECTIONS
from .presence import PresenceAnnouncer
from .settings import Settings
from .types import ChannelInfo, Delivery, PresenceChange, UserId

#: ``hook(payload, channel)``: returns the payload to send, or None to send its
#: (possibly modified) argument.
PresenceHook = Callable[[dict[str, Any], str], dict[str, Any] | None]

#: Seconds an evicted connection's close frame may wait for the peer's socket.
_CLOSE_WAIT = 5.0


class ChannelManager:
    """The one place that knows connections, channels, user ids and listeners.

    Each outgoing frame is encoded once and the same text is queued for
    every local recipient; the manager never waits on a recipient's socket.
    Shared state and cross-node delivery go through the :class:`Backend`,
    which calls :meth:`deliver` and :meth:`presence` back on every node.
    """

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.connections: dict[int, Connection] = {}
        self._members: dict[str, dict[int, Connection]] = {}
        self._lobby: dict[int, Connection] = {}
        self._acks = settings.use_acknowledgment
        self._id_prefix = secrets.token_hex(4)
        self._id_counter = itertools.count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self.presence_hook: PresenceHook | None = None
        self._announcer = PresenceAnnouncer(self, settings.presence_window)

    # -- connections ------------------------------------------------------

    def new_msg_id(self) -> str | None:
        """A message id when acknowledgments are on (one per message, not per recipient)."""
        if not self._acks:
            return None
        return f"{self._id_prefix}-{next(self._id_counter)}"

    def add(self, conn: Connection) -> None:
        self.connections[conn.fd] = conn
        self._lobby[conn.fd] = conn

    def evict(self, conn: Connection, reason: str = "send queue full") -> None:
        """Close a connection that does not keep up; everyone else carries on."""
        if conn.closed:
            return
        CONNECTIONS.warning(
            "evicting connection %d (%s): %s (%d frames queued)",
            conn.fd,
            conn.client,
            reason,
            conn.queued,
        )
        conn.shut()
        task = asyncio.get_running_loop().create_task(self._evict(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _evict(self, conn: Connection) -> None:
        await self.remove(conn)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.close_socket(CLOSE_TRY_AGAIN_LATER), _CLOSE_WAIT)
        # A peer that reads nothing never takes the close frame either, and its
        # socket (with its connection slot and kernel buffers) would stay open
        # until TCP gave up: after a grace period it is cut.
        await asyncio.sleep(_CLOSE_WAIT)
        if not conn.socket_ended:
            CONNECTIONS.warning(
                "aborting connection %d (%s): close not taken", conn.fd, conn.client
            )
            conn.abort()

    def evict_stalled(self, limit: float) -> None:
        """Evict every connection whose socket has taken no data for ``limit`` seconds."""
        now = time.monotonic()
        for conn in list(self.connections.values()):
            if conn.stalled(now, limit):
                self.evict(conn, f"took no data for {limit:g} s")

    async def remove(self, conn: Connection) -> None:
        """Forget ``conn`` everywhere; safe to call more than once."""
        conn.shut()
        async with conn.lock:
            if self.connections.get(conn.fd) is not conn:
                return
            del self.connections[conn.fd]
            self._lobby.pop(conn.fd, None)
            await self._leave_locked(conn)

    # -- membership -------------------------------------------------------

    async def join(self, conn: Connection, channel: str) -> None:
        """Move ``conn`` into ``channel`` (leaving its current one first)."""
        async with conn.lock:
            if conn.closed or conn.channel == channel:
                return
            await self._leave_locked(conn)
            self._members.setdefault(channel, {})[conn.fd] = conn
            self._lobby.pop(conn.fd, None)
            conn.channel = channel
            try:
                await self.backend.join(channel, conn.fd, conn.user_id, self.settings.use_presence)
            except BackendUnavailable:
                # Not a member anywhere then: undo the local half of the join.
                self._forget_member(conn, channel)
                conn.channel = None
                self._lobby[conn.fd] = conn
                raise

    async def leave(self, conn: Connection) -> None:
        async with conn.lock:
            await self._leave_locked(conn)
            if not conn.closed:
                self._lobby[conn.fd] = conn

    async def _leave_locked(self, conn: Connection) -> None:
        channel = conn.channel
        if channel is None:
            return
        conn.channel = None
        self._forget_member(conn, channel)
        try:
            await self.backend.leave(channel, conn.fd, self.settings.use_presence)
        except BackendUnavailable:
            # The local side is done; the backend applies the leave when it is
            # back, so cleanup never stops half way.
            CONNECTIONS.debug("connection %d left '%s' while the backend is away", conn.fd, channel)

    def _forget_member(self, conn: Connection, channel: str) -> None:
        local = self._members.get(channel)
        if local is not None:
            local.pop(conn.fd, None)
            if not local:
                del self._members[channel]

    async def set_user(self, conn: Connection, user_id: UserId) -> None:
        """Associate ``user_id``; members of its channel see it in presence."""
        async with conn.lock:
            if conn.closed or _same_user(conn.user_id, user_id):
                return
            previous, conn.user_id = conn.user_id, user_id
            if conn.channel is not None:
                try:
                    await self.backend.join(
                        conn.channel, conn.fd, user_id, self.settings.use_presence
                    )
                except BackendUnavailable:
                    conn.user_id = previous
                    raise

    def local_members(self) -> dict[int, tuple[str, UserId | None]]:
        return {
            fd: (channel, conn.user_id)
            for channel, members in self._members.items()
            for fd, conn in members.items()
        }

    async def channel_members(self, channel: str) -> dict[int, UserId | None]:
        return await self.backend.members(channel)

    async def channels(self) -> list[ChannelInfo]:
        return await self.backend.channels()

    # -- sending ----------------------------------------------------------

    async def broadcast_from(self, conn: Connection, action: str, data: Any) -> None:
        """``broadcast-action``: to the sender's channel, or to everyone in no channel."""
        msg_id = self.new_msg_id()
        text = frames.action_frame(action, data, conn.fd, msg_id)
        if conn.channel is not None:
            delivery = Delivery("channel", conn.channel, action, text, True, msg_id)
        else:
            delivery = Delivery("lobby", None, action, text, True, msg_id)
        await self.backend.publish(delivery)

    async def fanout(self, action: str, data: Any, fd: int | None) -> None:
        """To every connection, in any channel or none."""
        msg_id = self.new_msg_id()
        text = frames.action_frame(action, data, fd, msg_id)
        await self.backend.publish(Delivery("all", None, action, text, True, msg_id))

    async def publish(self, channel: str, action: str, data: Any, fd: int | None = None) -> None:
        """To every member of ``channel``, on every node."""
        msg_id = self.new_msg_id()
        text = frames.action_frame(action, data, fd, msg_id)
        await self.backend.publish(Delivery("channel", channel, action, text, True, msg_id))

    def reply(self, conn: Connection, action: str, data: Any) -> None:
        """A frame for the sender only (never filtered by listeners)."""
        msg_id = self.new_msg_id()
        conn.push(frames.action_frame(action, data, conn.fd, msg_id), msg_id)

    def error(self, conn: Connection, code: str, text: str) -> None:
        msg_id = self.new_msg_id()
        conn.push(frames.error_frame(code, text, conn.fd, msg_id), msg_id)

    # -- backend callbacks (every node) -------------------------------------

    def deliver(self, delivery: Delivery) -> None:
        if delivery.target == "channel":
            recipients = self._members.get(delivery.channel or "")
            if not recipients:
                return
            targets = list(recipients.values())
        elif delivery.target == "lobby":
            targets = list(self._lobby.values())
        else:
            targets = list(self.connections.values())
        text, msg_id, action = delivery.text, delivery.msg_id, delivery.action
        filtered = delivery.filtered
        for conn in targets:
            listeners = conn.listeners
            if filtered and listeners is not None and action not in listeners:
                continue
            conn.push(text, msg_id)

    def presence(self, change: PresenceChange) -> None:
        if change.channel in self._members:
            self._announcer.announce(change)

    def presence_frame(self, change: PresenceChange) -> tuple[str, str | None]:
        """Encode ``change`` once for all local members of its channel."""
        fds = [fd for fd, _ in change.members]
        user_ids = {str(fd): uid for fd, uid in change.members if uid is not None}
        payload: dict[str, Any] = {
            "fd": change.fd,
            "event": "channel-presence",
            "channel": change.channel,
            "fds": fds,
            "userIds": user_ids,
        }
        action = "channel-connect" if change.kind == "join" else "channel-disconnect"
        msg_id = self.new_msg_id()
        if self.presence_hook is not None:
            try:
                shaped = _shaped(self.presence_hook, payload, change.channel)
                return frames.presence_frame(action, shaped, msg_id), msg_id
            except Exception:
                # An application bug must not cost the members their update.
                ACTIONS.exception("the presence hook failed; sending the standard payload")
        return frames.presence_frame(action, payload, msg_id), msg_id

    def push_presence(self, change: PresenceChange, text: str, msg_id: str | None) -> None:
        """Queue a presence frame for the local members listed in its roster.

        The roster is exactly the update's audience (after a join every member,
        the joiner included; after a leave the remaining ones). A connection
        that joined after this change was made, whose own update is still on its
        way from another node, is not in it and gets nothing stale.
        """
        local = self._members.get(change.channel)
        if not local:
            return
        for fd, _ in change.members:
            conn = local.get(fd)
            if conn is not None:
                conn.push(text, msg_id)

    async def close_all(self, code: int) -> None:
        """Server shutdown: close every socket with ``code`` and forget it."""
        for conn in list(self.connections.values()):
            # Forgotten locally even when the backend is down; the shared
            # store drops this node's members when its node record expires.
            with contextlib.suppress(BackendUnavailable):
                await self.remove(conn)
            await conn.close_socket(code)
        # Evictions still waiting to cut a socket: shutdown ends those sockets anyway.
        for task in self._closing:
            task.cancel()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        """Counts of what the manager holds, for tests and operators."""
        return {
            "connections": len(self.connections),
            "channels": len(self._members),
            "members": sum(len(m) for m in self._members.values()),
            "lobby": len(self._lobby),
            "queued": sum(c.queued for c in self.connections.values()),
            "pending_acks": sum(c.pending_acks for c in self.connections.values()),
        }


def _shaped(hook: PresenceHook, payload: dict[str, Any], channel: str) -> dict[str, Any]:
    """The hook's payload: what it returns, or its copy as it left it when it returns None."""
    copy = dict(payload, fds=list(payload["fds"]), userIds=dict(payload["userIds"]))
    shaped = hook(copy, channel)
    if shaped is None:
        return copy
    if not isinstance(shaped, dict):
        raise TypeError(f"the presence hook returned {type(shaped).__name__}, not a dict")
    return shaped


def _same_user(a: UserId | None, b: UserId | None) -> bool:
    """User ids compare by value and type: 42 and "42" differ."""
    return a is not None and type(a) is type(b) and a == b
