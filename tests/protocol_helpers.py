"""Helpers shared by the protocol tests: one server per module, tracked clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from .support import Client, ServerProcess

#: Module-scoped servers run once per backend, with the ids the `backend` fixture uses.
BACKENDS = ["memory", "redis"]

TOKEN = "s3cret-server-token-value"


def backend_env(request: pytest.FixtureRequest, name: str) -> dict[str, str]:
    """The environment selecting backend ``name`` (as the `backend` fixture builds it)."""
    if name == "memory":
        return {"CONVEYOR_BACKEND_URL": "memory://"}
    url = request.getfixturevalue("redis_url")
    return {
        "CONVEYOR_BACKEND_URL": url,
        "CONVEYOR_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
    }


def serve(request: pytest.FixtureRequest, env: dict[str, str]) -> Iterator[ServerProcess]:
    """Start a server for a module-scoped fixture parametrized by ``BACKENDS``."""
    server = ServerProcess({**backend_env(request, request.param), **env})
    server.start()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def unique(prefix: str = "room") -> str:
    """A channel name no other test uses (servers are shared within a module)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Pool:
    """Opens clients against one server and closes them all at the end."""

    def __init__(self, server: ServerProcess, token: str | None = TOKEN) -> None:
        self.server = server
        self.token = token
        self.clients: list[Client] = []

    def url(self, token: str | None = "default", query: str | None = None) -> str:
        chosen = self.token if token == "default" else token
        url = self.server.ws
        if chosen is not None:
            url += f"?token={chosen}"
            if query:
                url += f"&{query}"
        elif query:
            url += f"?{query}"
        return url

    async def open(self, token: str | None = "default", **kw: Any) -> Client:
        client = await Client.connect(self.url(token), **kw)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)


@contextlib.asynccontextmanager
async def pool(server: ServerProcess, token: str | None = TOKEN) -> AsyncIterator[Pool]:
    clients = Pool(server, token)
    try:
        yield clients
    finally:
        await clients.close()


async def refused_status(url: str, **kw: Any) -> int:
    """The HTTP status of a refused handshake (fails when the socket opens)."""
    try:
        ws = await websockets.connect(url, open_timeout=10, **kw)
    except websockets.InvalidStatus as exc:
        return int(exc.response.status_code)
    await ws.close()
    raise AssertionError(f"the handshake to {url} was accepted")


def presence_data(frame: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(frame["data"])
    assert isinstance(data, dict)
    return data


async def joined(client: Client, channel: str, presence: bool = True, **extra: Any) -> None:
    """Join ``channel`` and, with presence on, read the joiner's own update."""
    await client.join(channel, **extra)
    if presence:
        update = await client.presence()
        assert update["channel"] == channel and update["fd"] == client.fd, update
    else:
        await sync(client)


async def sync(client: Client, marker: Any = None) -> None:
    """Round-trip a base-action echo: every earlier frame of ``client`` was handled.

    The echo must be the next frame: anything else arriving first fails.
    """
    marker = marker if marker is not None else f"sync-{uuid.uuid4().hex[:8]}"
    await client.send({"action": "base-action", "data": marker})
    frame = await client.recv()
    assert frame == {"action": "base-action", "data": marker, "fd": client.fd}, frame
