"""One open WebSocket: its state, its bounded send queue and its writer task."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .types import UserId

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Connection:
    """The server's view of one client socket.

    Frames for the client are queued with :meth:`push`, which never waits: a
    writer task of the connection's own drains the queue onto the socket, so
    one slow reader costs nobody else anything. When the queue is full the
    ``on_overflow`` callback (the manager's eviction) is called once.
    """

    __slots__ = (
        "__weakref__",
        "_ack_attempts",
        "_ack_timeout",
        "_on_overflow",
        "_pending",
        "_queue",
        "_queue_limit",
        "_rate_allowance",
        "_rate_stamp",
        "_send",
        "_strike_stamp",
        "_waiter",
        "_writer",
        "bound_user",
        "channel",
        "client",
        "closed",
        "fd",
        "has_bound_user",
        "join_grant",
        "listeners",
        "lock",
        "rate_strikes",
        "send_started",
        "socket_ended",
        "token",
        "user_id",
    )

    def __init__(
        self,
        fd: int,
        send: ASGISend,
        *,
        queue_limit: int,
        on_overflow: Callable[[Connection], None],
        token: str | None = None,
        join_grant: str | None = None,
        bound_user: UserId | None = None,
        client: str = "-",
        ack_attempts: int = 0,
        ack_timeout: float = 0.5,
    ) -> None:
        self.fd = fd
        self.client = client
        self.channel: str | None = None
        self.user_id: UserId | None = bound_user
        self.listeners: set[str] | None = None
        #: The token the socket was opened with, used where a frame omits ``auth``.
        self.token = token
        #: The channel the opening (temporary) token may still join once.
        self.join_grant = join_grant
        self.has_bound_user = bound_user is not None
        self.bound_user = bound_user
        self.closed = False
        #: Set once the server's socket has ended (its read loop returned).
        self.socket_ended = False
        #: Serializes membership changes (join, leave, user id, close).
        self.lock = asyncio.Lock()
        self._send = send
        self._queue: collections.deque[str] = collections.deque()
        self._queue_limit = queue_limit
        self._on_overflow = on_overflow
        #: The future the idle writer task waits on; a plain future costs less than
        #: an Event on the fanout path, where it is woken once per frame per recipient.
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[Any, list[Any]] = {}
        self._ack_attempts = ack_attempts
        self._ack_timeout = ack_timeout
        self._rate_allowance = 0.0
        self._rate_stamp = 0.0
        #: Refused frames, draining at the rate limit: past the burst it is a flood.
        self.rate_strikes = 0.0
        self._strike_stamp = 0.0
        #: When the frame being written now was handed to the socket (0.0: none is).
        self.send_started = 0.0

    def start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def push(self, text: str, msg_id: str | None = None) -> None:
        """Queue ``text`` for the client without waiting.

        With ``msg_id`` (acknowledgments on), the frame is sent again after
        each timeout until the client acknowledges it or attempts run out.
        """
        if self.closed:
            return
        if len(self._queue) >= self._queue_limit:
            self._on_overflow(self)
            return
        self._queue.append(text)
        self._wake()
        if msg_id is not None and self._ack_attempts > 0:
            handle = asyncio.get_running_loop().call_later(self._ack_timeout, self._resend, msg_id)
            self._pending[msg_id] = [text, self._ack_attempts, handle]

    def acknowledge(self, msg_id: Any) -> None:
        """The client acknowledged ``msg_id``: stop sending it again."""
        try:
            entry = self._pending.pop(msg_id)
        except (KeyError, TypeError):
            return
        entry[2].cancel()

    def _resend(self, msg_id: str) -> None:
        entry = self._pending.get(msg_id)
        if entry is None or self.closed:
            return
        text, remaining, _ = entry
        if len(self._queue) >= self._queue_limit:
            self._on_overflow(self)
            return
        self._queue.append(text)
        self._wake()
        if remaining > 1:
            entry[1] = remaining - 1
            entry[2] = asyncio.get_running_loop().call_later(
                self._ack_timeout, self._resend, msg_id
            )
        else:
            del self._pending[msg_id]

    def allow_frame(self, rate: float, burst: int) -> bool:
        """Token bucket: ``rate`` frames a second with bursts of ``burst``."""
        now = time.monotonic()
        if self._rate_stamp == 0.0:
            self._rate_allowance = float(burst)
        else:
            self._rate_allowance = min(
                float(burst), self._rate_allowance + (now - self._rate_stamp) * rate
            )
        self._rate_stamp = now
        if self._rate_allowance < 1.0:
            drained = (now - self._strike_stamp) * rate if self._strike_stamp else 0.0
            self.rate_strikes = max(0.0, self.rate_strikes - drained) + 1.0
            self._strike_stamp = now
            return False
        self._rate_allowance -= 1.0
        return True

    def stalled(self, now: float, limit: float) -> bool:
        """True when one frame has been waiting for the peer's socket over ``limit`` s."""
        started = self.send_started
        return started != 0.0 and now - started > limit

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def pending_acks(self) -> int:
        return len(self._pending)

    def shut(self) -> None:
        """Stop sending: drop queued frames, pending acknowledgments and the writer."""
        self.closed = True
        self._queue.clear()
        for entry in self._pending.values():
            entry[2].cancel()
        self._pending.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    async def close_socket(self, code: int) -> None:
        """Send a close frame with ``code``; errors mean the socket is gone already."""
        # The peer may already be gone; there is nothing left to do then.
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code})

    def abort(self) -> None:
        """Drop the TCP connection at once, queued bytes and all.

        ASGI has no message for this, so it reaches the server's transport
        through the protocol object behind ``send`` (uvicorn's WebSocket
        protocols all keep one); where there is none, it does nothing.
        """
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        abort = getattr(transport, "abort", None)
        if not callable(abort):
            return
        # Linger off: the kernel resets the connection and frees the bytes still
        # queued for the peer, instead of holding them while it waits on a peer
        # that reads nothing.
        sock: Any = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    # A send blocks only while the peer's buffers are full: a
                    # send that never ends is how a dead peer looks under traffic.
                    self.send_started = time.monotonic()
                    await send({"type": "websocket.send", "text": queue.popleft()})
                self.send_started = 0.0
                self._waiter = loop.create_future()
                await self._waiter
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket is gone; the reader sees the close
            self.closed = True
            queue.clear()
