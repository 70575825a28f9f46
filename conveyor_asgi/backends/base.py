"""The backend contract: what differs between one process and a cluster.

A backend owns the state every worker and node must agree on (connection
ids, channel membership with user ids, temporary tokens) and carries frames
between nodes. The :class:`~conveyor_asgi.channels.ChannelManager` of each
process registers itself as the backend's :class:`Node`; the backend calls
it back for every delivery and presence change, on every node, the local one
included. Callbacks run on the event loop and must not block.
"""

from __future__ import annotations

import abc
from typing import Protocol

from ..types import ChannelInfo, Delivery, PresenceChange, TokenGrant, UserId


class Node(Protocol):
    """What a backend calls back on each process."""

    def deliver(self, delivery: Delivery) -> None:
        """Hand ``delivery`` to the matching local connections."""

    def presence(self, change: PresenceChange) -> None:
        """Announce ``change`` to the channel's local members."""

    def local_members(self) -> dict[int, tuple[str, UserId | None]]:
        """Every local connection in a channel: id -> (channel, user id).

        A shared backend registers these again after losing its store.
        """


class Backend(abc.ABC):
    """One interface, two implementations: memory (one process) and Redis.

    Every method may raise :class:`~conveyor_asgi.errors.BackendUnavailable`
    when the shared store cannot be reached. A backend that can lose its
    store reconnects by itself, registers :meth:`Node.local_members` again
    and reports :meth:`healthy` False meanwhile.
    """

    @abc.abstractmethod
    async def start(self, node: Node) -> None:
        """Connect and start calling ``node`` back.

        Returns once the first attempt to connect is over; a store that cannot
        be reached yet is retried in the background (:meth:`healthy` is False).
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release connections and tasks; this node's members are gone."""

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when the backend answers right now."""

    @abc.abstractmethod
    async def next_connection_id(self) -> int:
        """A positive id never handed out before in this deployment."""

    @abc.abstractmethod
    async def publish(self, delivery: Delivery) -> None:
        """Send ``delivery`` to every node (this one included), once.

        Deliveries published one after another from one node reach every node
        in that order. Returns once the delivery is on its way; raises
        ``BackendUnavailable`` when it is not.
        """

    @abc.abstractmethod
    async def join(self, channel: str, fd: int, user_id: UserId | None, announce: bool) -> None:
        """Record ``fd`` (with ``user_id``) as a member of ``channel``.

        Also used when a member's user id changes. With ``announce``, every
        node's :meth:`Node.presence` receives the change with the roster as it
        stands right after it; changes to one channel are announced in the
        order they were made. When this raises ``BackendUnavailable`` the
        caller treats ``fd`` as not joined.
        """

    @abc.abstractmethod
    async def leave(self, channel: str, fd: int, announce: bool) -> None:
        """Remove ``fd`` from ``channel``, announcing as :meth:`join` does.

        Even when this raises ``BackendUnavailable``, the caller has forgotten
        the member: the backend applies the leave once it can.
        """

    @abc.abstractmethod
    async def members(self, channel: str) -> dict[int, UserId | None]:
        """The channel's members, ascending by id, with their user ids."""

    @abc.abstractmethod
    async def channels(self) -> list[ChannelInfo]:
        """Every channel that has members."""

    @abc.abstractmethod
    async def store_token(self, token: str, grant: TokenGrant, ttl: float) -> None:
        """Keep ``token`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def take_token(self, token: str, channel: str | None = None) -> TokenGrant | None:
        """Consume ``token`` and return its grant; None when it is unknown or expired.

        With ``channel``, the token is consumed only when it is bound to that
        channel; otherwise it is left as it was and None is returned.
        """
