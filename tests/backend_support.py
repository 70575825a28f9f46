"""In-process backend objects and a recording node, for the backend contract tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

import pytest

from conveyor_asgi.backends.base import Backend
from conveyor_asgi.backends.memory import MemoryBackend
from conveyor_asgi.backends.redis import RedisBackend
from conveyor_asgi.types import Delivery, PresenceChange, UserId

from .support import HOST, free_port


class RecordingNode:
    """A Node that records every callback, in order, for tests to await."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Delivery | PresenceChange] = asyncio.Queue()
        self.members: dict[int, tuple[str, UserId | None]] = {}

    def deliver(self, delivery: Delivery) -> None:
        self.events.put_nowait(delivery)

    def presence(self, change: PresenceChange) -> None:
        self.events.put_nowait(change)

    def local_members(self) -> dict[int, tuple[str, UserId | None]]:
        return dict(self.members)

    async def next(self, timeout: float = 5.0) -> Delivery | PresenceChange:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def next_presence(self, timeout: float = 5.0) -> PresenceChange:
        event = await self.next(timeout)
        assert isinstance(event, PresenceChange), event
        return event

    async def quiet(self, within: float = 0.3) -> None:
        """Assert that no callback arrives within ``within`` seconds."""
        try:
            event = await asyncio.wait_for(self.events.get(), within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected callback: {event!r}")


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def make_backend(kind: str, redis_url: str | None, **kw: Any) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    assert redis_url is not None
    kw.setdefault("prefix", unique_prefix())
    kw.setdefault("node_timeout", 3.0)
    return RedisBackend(redis_url, **kw)


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def own_redis_server(persist: bool = False) -> RedisServer:
    """A started RedisServer; without redis-server, skip (outside CI) or fail (in CI)."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed (needed to stop and start Redis)")
    return RedisServer(persist=persist).start()


class RedisServer:
    """A redis-server of our own on a free loopback port, to stop and start at will.

    With ``persist``, data is kept in an append-only file in a temporary
    directory, so a restart finds it again.
    """

    def __init__(self, persist: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="conveyor-redis-")
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
