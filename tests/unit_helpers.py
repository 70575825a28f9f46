"""Unit-test parts: a real manager on the real memory backend, connections with a
recording ASGI ``send``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from conveyor_asgi.backends.memory import MemoryBackend
from conveyor_asgi.channels import ChannelManager
from conveyor_asgi.connection import Connection
from conveyor_asgi.settings import Settings
from conveyor_asgi.types import UserId


class Recorder:
    """An ASGI ``send`` callable that keeps every message; ``hold`` blocks text sends."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await self.gate.wait()
        self.messages.append(message)

    def hold(self) -> None:
        self.gate.clear()

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages if m["type"] == "websocket.send"]

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts]

    def actions(self) -> list[str]:
        return [frame["action"] for frame in self.frames]

    def presence(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (frame["action"], json.loads(frame["data"]))
            for frame in self.frames
            if frame["action"] in ("channel-connect", "channel-disconnect")
        ]

    @property
    def close_codes(self) -> list[int]:
        return [m["code"] for m in self.messages if m["type"] == "websocket.close"]

    def clear(self) -> None:
        self.messages.clear()


async def settle(rounds: int = 5) -> None:
    """Let writer tasks drain their queues."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def make_manager(**settings: Any) -> ChannelManager:
    backend = MemoryBackend()
    manager = ChannelManager(Settings(**settings), backend)
    await backend.start(manager)
    return manager


async def connect(
    manager: ChannelManager,
    *,
    token: str | None = None,
    join_grant: str | None = None,
    bound_user: UserId | None = None,
    queue_limit: int | None = None,
) -> tuple[Connection, Recorder]:
    """A registered connection with a running writer, as the WebSocket route makes it."""
    recorder = Recorder()
    settings = manager.settings
    conn = Connection(
        await manager.backend.next_connection_id(),
        recorder,
        queue_limit=queue_limit or settings.send_queue_size,
        on_overflow=manager.evict,
        token=token,
        join_grant=join_grant,
        bound_user=bound_user,
        ack_attempts=settings.acknowledgment_attempts if settings.use_acknowledgment else 0,
        ack_timeout=settings.acknowledgment_timeout,
    )
    manager.add(conn)
    conn.start_writer()
    return conn, recorder
