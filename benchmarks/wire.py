"""Just enough of the WebSocket wire format for the load client and the limit server."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_TEXT = 0x1
OP_CLOSE = 0x8


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, unfragmented frame as a server sends it."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One client frame, masked with an all-zero key so the payload bytes stay as they are."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    return header + b"\0\0\0\0" + payload


def upgrade_request(host: str, port: int, deflate: bool = False) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_frames(buf: bytearray, payloads: list[tuple[int, bytes]] | None) -> tuple[int, int]:
    """Walk the complete frames at the start of ``buf``: returns (frames, bytes consumed).

    Only headers are read unless ``payloads`` is given, which then receives
    ``(opcode, unmasked payload)`` of every frame. That keeps counting cheap.
    """
    pos = 0
    count = 0
    size = len(buf)
    while size - pos >= 2:
        second = buf[pos + 1]
        length = second & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            head = 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        masked = second & 0x80
        if masked:
            head += 4
        end = pos + head + length
        if end > size:
            break
        if payloads is not None:
            data = bytes(buf[pos + head : end])
            if masked:
                data = _unmask(data, bytes(buf[pos + head - 4 : pos + head]))
            payloads.append((buf[pos] & 0x0F, data))
        count += 1
        pos = end
    return count, pos


def _unmask(data: bytes, key: bytes) -> bytes:
    if key == b"\0\0\0\0" or not data:
        return data
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(data), "big")
