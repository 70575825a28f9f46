"""Small value types shared by the manager and the backends."""

from __future__ import annotations

import dataclasses
from typing import Literal

#: A user id keeps its JSON type: an integer (any width) or a non-empty string.
UserId = int | str

#: Who a delivery is for: one channel's members, every connection in no
#: channel, or every connection.
Target = Literal["channel", "lobby", "all"]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One encoded frame on its way to every node's matching local connections.

    ``filtered`` frames are subject to the recipients' listeners, which match
    on ``action``; unfiltered ones (presence) always arrive.
    """

    target: Target
    channel: str | None
    action: str
    text: str
    filtered: bool = True
    msg_id: str | None = None


@dataclasses.dataclass(frozen=True)
class PresenceChange:
    """A membership change of one channel and the roster right after it.

    ``kind`` is ``"join"`` (joined, or associated a user id while in the
    channel) or ``"leave"``. ``members`` maps every member's connection id to
    its user id (None when it has none), in ascending connection-id order.
    """

    kind: Literal["join", "leave"]
    channel: str
    fd: int
    members: tuple[tuple[int, UserId | None], ...]


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    """What a temporary token allows: optionally one channel and/or one user id."""

    channel: str | None = None
    user_id: UserId | None = None


@dataclasses.dataclass(frozen=True)
class ChannelInfo:
    channel: str
    connections: int
    users: int
