"""Test support: real uvicorn servers on loopback ports and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``uvicorn conveyor_asgi.app:app`` (or another app) in a child process."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        app: str = "conveyor_asgi.app:app",
        args: list[str] | None = None,
        port: int | None = None,
        health: str = "/health",
        cli: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.health = health  # polled until it answers 200 (a mounted app has a prefix)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        self.env.update(env or {})
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.app = app
        self.args = args or []
        #: Run ``python -m conveyor_asgi`` (settings passed to uvicorn) instead of uvicorn.
        self.cli = cli
        # Kept open for the server's whole life; closed and removed in __exit__.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="conveyor-server-", suffix=".log", delete=False
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        if self.cli:
            cmd = [
                sys.executable,
                "-m",
                "conveyor_asgi",
                "--host",
                HOST,
                "--port",
                str(self.port),
                *self.args,
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                HOST,
                "--port",
                str(self.port),
                *self.args,
            ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.http}{self.health}", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)


def http_request(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """A blocking HTTP request; returns (status, decoded JSON or text)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


async def ahttp(method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http_request, method, url, body, **kw)


class Client:
    """A real WebSocket client with helpers to read JSON frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.fd: int | None = None

    @classmethod
    async def connect(cls, url: str, info: bool = True, **kw: Any) -> Client:
        kw.setdefault("max_size", None)
        kw.setdefault("open_timeout", 10)
        client = cls(await websockets.connect(url, **kw))
        if info:
            frame = await client.recv()
            assert frame["action"] == "connection-info", frame
            client.fd = json.loads(frame["data"])["fd"]
        return client

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
        value = json.loads(raw)
        assert isinstance(value, dict) and "action" in value, raw
        return value

    async def expect(self, action: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must have ``action``."""
        frame = await self.recv(timeout)
        assert frame["action"] == action, frame
        return frame

    async def presence(
        self, action: str = "channel-connect", timeout: float = 5.0
    ) -> dict[str, Any]:
        frame = await self.expect(action, timeout)
        data = json.loads(frame["data"])
        assert data["event"] == "channel-presence", data
        return data  # type: ignore[no-any-return]

    async def silent(self, within: float = 0.3) -> None:
        """Assert that no frame arrives within ``within`` seconds."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {raw!r}")

    async def join(self, channel: str, **extra: Any) -> None:
        await self.send({"action": "channel-connect", "channel": channel, **extra})

    async def close(self) -> None:
        await self.ws.close()

    def drop(self) -> None:
        """Cut the TCP connection without a close frame."""
        transport = self.ws.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER on, 0 s: closing sends a RST instead of a FIN.
            linger = b"\x01\x00\x00\x00\x00\x00\x00\x00"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        transport.abort()
