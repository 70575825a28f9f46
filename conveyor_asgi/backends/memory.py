"""The in-memory backend: one process, nothing to install."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable
from typing import Literal

from ..types import ChannelInfo, Delivery, PresenceChange, TokenGrant, UserId
from .base import Backend, Node


class MemoryBackend(Backend):
    """State in this process's memory; deliveries go straight to the local node."""

    def __init__(self) -> None:
        self._node: Node | None = None
        self._ids = itertools.count(1)
        self._channels: dict[str, dict[int, UserId | None]] = {}
        self._tokens: dict[str, tuple[TokenGrant, float]] = {}
        self._expiries: list[tuple[float, str]] = []

    async def start(self, node: Node) -> None:
        self._node = node

    async def stop(self) -> None:
        self._node = None
        self._channels.clear()
        self._tokens.clear()
        self._expiries.clear()

    async def healthy(self) -> bool:
        return True

    async def next_connection_id(self) -> int:
        return next(self._ids)

    async def publish(self, delivery: Delivery) -> None:
        if self._node is not None:
            self._node.deliver(delivery)

    async def join(self, channel: str, fd: int, user_id: UserId | None, announce: bool) -> None:
        members = self._channels.setdefault(channel, {})
        members[fd] = user_id
        if announce:
            self._announce("join", channel, fd, members)

    async def leave(self, channel: str, fd: int, announce: bool) -> None:
        members = self._channels.get(channel)
        if members is None or members.pop(fd, _ABSENT) is _ABSENT:
            return
        if not members:
            del self._channels[channel]
        if announce:
            self._announce("leave", channel, fd, members)

    def _announce(
        self,
        kind: Literal["join", "leave"],
        channel: str,
        fd: int,
        members: dict[int, UserId | None],
    ) -> None:
        if self._node is None:
            return
        roster = tuple(sorted(members.items()))
        self._node.presence(PresenceChange(kind, channel, fd, roster))

    async def members(self, channel: str) -> dict[int, UserId | None]:
        return dict(sorted(self._channels.get(channel, {}).items()))

    async def channels(self) -> list[ChannelInfo]:
        return [
            ChannelInfo(name, len(members), _count_users(members.values()))
            for name, members in self._channels.items()
        ]

    async def store_token(self, token: str, grant: TokenGrant, ttl: float) -> None:
        self._purge_expired()
        expires = time.monotonic() + ttl
        self._tokens[token] = (grant, expires)
        heapq.heappush(self._expiries, (expires, token))

    async def take_token(self, token: str, channel: str | None = None) -> TokenGrant | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        grant, expires = entry
        if expires <= time.monotonic():
            del self._tokens[token]
            return None
        if channel is not None and grant.channel != channel:
            return None
        del self._tokens[token]
        return grant

    def _purge_expired(self) -> None:
        # Soonest expiry first: each store pops only what has expired since.
        now = time.monotonic()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, token = heapq.heappop(expiries)
            entry = self._tokens.get(token)
            if entry is not None and entry[1] <= now:
                del self._tokens[token]


_ABSENT = object()


def _count_users(user_ids: Iterable[UserId | None]) -> int:
    """Distinct user ids by value and type: 7 and "7" are two users."""
    return len({(type(u).__name__, u) for u in user_ids if u is not None})
