"""A minimal WebSocket client on a raw socket, for peers no library would play.

It completes the opening handshake and then does only what a test tells it:
stay silent (never answering pings, as a dead peer), answer pings and nothing
else, or send hand-made frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.fd: int | None = None

    @classmethod
    async def connect(cls, host: str, port: int, query: str = "") -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        target = f"/?{query}" if query else "/"
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        client = cls(reader, writer)
        opcode, payload = await client.read_frame()
        assert opcode == OP_TEXT, opcode
        client.fd = json.loads(json.loads(payload)["data"])["fd"]
        return client

    async def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """One frame from the server (servers never mask): (opcode, payload)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """A single masked frame, as RFC 6455 requires of clients."""
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def send_json(self, frame: Any) -> None:
        self.send_frame(OP_TEXT, json.dumps(frame).encode())

    async def answer_pings(self, seconds: float) -> tuple[int, list[int]]:
        """Answer every ping for ``seconds``; returns (pings answered, other opcodes seen)."""
        pings, others = 0, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                opcode, payload = await self.read_frame(timeout=left)
            except asyncio.TimeoutError:
                break
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                pings += 1
            else:
                others.append(opcode)
        return pings, others

    async def closed_by_server(self, timeout: float) -> bool:
        """Read (without answering anything) until the server ends the stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                await self.read_frame(timeout=left)
        except (asyncio.IncompleteReadError, ConnectionError):
            return True
        except asyncio.TimeoutError:
            return False
        return False

    def abort(self) -> None:
        self.writer.transport.abort()
