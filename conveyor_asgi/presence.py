"""Sending presence updates, optionally coalescing bursts within a window."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .types import PresenceChange

if TYPE_CHECKING:
    from .channels import ChannelManager


class PresenceAnnouncer:
    """Turns membership changes into presence frames for local members.

    With ``window`` 0 every change is announced at once. With a window, the
    first change of a channel starts a timer; changes arriving before it
    fires replace the pending one, and when it fires the members receive one
    update carrying the roster of the latest change. Every update's roster is
    therefore the channel's roster as of the newest change this node knows.
    """

    def __init__(self, manager: ChannelManager, window: float) -> None:
        self._manager = manager
        self._window = window
        self._pending: dict[str, PresenceChange] = {}

    def announce(self, change: PresenceChange) -> None:
        if self._window <= 0:
            self._send(change)
            return
        first = change.channel not in self._pending
        self._pending[change.channel] = change
        if first:
            asyncio.get_running_loop().call_later(self._window, self._flush, change.channel)

    def _flush(self, channel: str) -> None:
        change = self._pending.pop(channel, None)
        if change is not None:
            self._send(change)

    def _send(self, change: PresenceChange) -> None:
        text, msg_id = self._manager.presence_frame(change)
        self._manager.push_presence(change, text, msg_id)
