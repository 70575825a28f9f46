"""Ordered publishing: messages leave in the order they were queued, many per round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Sender = Callable[[list[str]], Awaitable[None]]


class Outbox:
    """A queue drained by one writer task, one batch at a time.

    ``send`` receives the batch and raises when it could not be sent; every
    waiter of that batch then gets the same exception.
    """

    def __init__(self, send: Sender, batch_size: int = 512) -> None:
        self._send = send
        self._batch_size = batch_size
        self._queue: list[tuple[str, asyncio.Future[None]]] = []
        self._ready = asyncio.Event()

    async def put(self, message: str) -> None:
        """Queue ``message`` and wait until it is sent (or raise why it was not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        self._ready.set()
        await future

    async def run(self) -> None:
        """The writer: runs until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = self._queue[: self._batch_size]
                del self._queue[: self._batch_size]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        error: Exception | None = None
        try:
            await self._send([message for message, _ in batch])
        except Exception as exc:  # handed to the waiters, who decide
            error = exc
        for _, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def fail_all(self, error: Exception) -> None:
        """Refuse everything still queued (the writer has stopped)."""
        for _, future in self._queue:
            if not future.done():
                future.set_exception(error)
        self._queue.clear()
