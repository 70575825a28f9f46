"""The three reference servers, each speaking just enough of the protocol for the rows.

- ``naive_app``: the Starlette endpoint people write first. It serializes the
  frame again for every recipient and awaits each send in turn.
- ``ceiling``: a bare ``websockets`` server that encodes each frame once and
  hands it to that library's ``broadcast`` helper.
- ``limit``: a raw asyncio protocol server that does the upgrade by hand and
  writes one pre-built frame to every member's transport.

Enough protocol means: ``connection-info`` on connect, ``channel-connect``
(with a presence update to every member when presence is on), ``base-action``
echo and ``broadcast-action`` to the sender's channel. Leaves are not
announced: the rows never measure them.

Run ``python -m benchmarks.references {ceiling,limit} --port P [--loop L] [--presence]``;
the naive app runs under uvicorn as ``benchmarks.references:naive_app``
(presence with ``BENCH_PRESENCE=1``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
from typing import Any

import orjson

from . import wire

# -- naive ----------------------------------------------------------------------------


def _naive() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    ids = itertools.count(1)
    channels: dict[str, dict[int, WebSocket]] = {}
    presence = os.environ.get("BENCH_PRESENCE") == "1"

    async def send_all(members: dict[int, WebSocket], frame: dict[str, Any]) -> None:
        for member in list(members.values()):
            with contextlib.suppress(Exception):
                await member.send_json(frame)

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        fd = next(ids)
        members: dict[int, WebSocket] | None = None
        info = json.dumps({"fd": fd, "event": "connection-info"})
        await ws.send_json({"action": "connection-info", "data": info})
        try:
            while True:
                message = await ws.receive_json()
                action = message.get("action")
                if action == "channel-connect":
                    channel = message["channel"]
                    members = channels.setdefault(channel, {})
                    members[fd] = ws
                    if presence:
                        await send_all(members, _presence_frame(fd, channel, sorted(members)))
                elif action == "broadcast-action" and members is not None:
                    frame = {"action": action, "data": message["data"], "fd": fd}
                    await send_all(members, frame)
                else:
                    await ws.send_json({"action": action, "data": message.get("data"), "fd": fd})
        except WebSocketDisconnect:
            pass
        finally:
            if members is not None:
                members.pop(fd, None)

    return Starlette(routes=[WebSocketRoute("/", endpoint)])


def _presence_frame(fd: int, channel: str, fds: list[int]) -> dict[str, Any]:
    data = {"fd": fd, "event": "channel-presence", "channel": channel, "fds": fds, "userIds": {}}
    return {"action": "channel-connect", "data": json.dumps(data, separators=(",", ":"))}


naive_app = _naive()


# -- ceiling: websockets with its broadcast helper --------------------------------------


async def _ceiling(port: int, presence: bool) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    ids = itertools.count(1)
    channels: dict[str, dict[int, ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        fd = next(ids)
        members: dict[int, ServerConnection] | None = None
        info = orjson.dumps({"fd": fd, "event": "connection-info"}).decode()
        await ws.send(orjson.dumps({"action": "connection-info", "data": info}).decode())
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                action = message.get("action")
                if action == "channel-connect":
                    channel = message["channel"]
                    members = channels.setdefault(channel, {})
                    members[fd] = ws
                    if presence:
                        frame = _presence_frame(fd, channel, sorted(members))
                        broadcast(members.values(), orjson.dumps(frame).decode())
                elif action == "broadcast-action" and members is not None:
                    frame = {"action": action, "data": message["data"], "fd": fd}
                    broadcast(members.values(), orjson.dumps(frame).decode())
                else:
                    reply = {"action": action, "data": message.get("data"), "fd": fd}
                    await ws.send(orjson.dumps(reply).decode())
        finally:
            if members is not None:
                members.pop(fd, None)

    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=2**20,
        ping_interval=None,
        backlog=4096,
    ):
        await asyncio.Future()


# -- limit: raw asyncio protocol ---------------------------------------------------------

_BUFFER_CAP = 4 * 1024 * 1024  # skip a member whose transport already holds this much


class _LimitServer:
    def __init__(self, presence: bool) -> None:
        self.presence = presence
        self.ids = itertools.count(1)
        self.channels: dict[str, dict[int, asyncio.Transport]] = {}

    def send_all(self, members: dict[int, asyncio.Transport], payload: bytes) -> None:
        frame = wire.server_frame(payload)
        for transport in members.values():
            if transport.get_write_buffer_size() < _BUFFER_CAP:
                transport.write(frame)


class _LimitProtocol(asyncio.Protocol):
    def __init__(self, server: _LimitServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.upgraded = False
        self.fd = 0
        self.members: dict[int, asyncio.Transport] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.members is not None:
            self.members.pop(self.fd, None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded and not self._upgrade():
            return
        payloads: list[tuple[int, bytes]] = []
        _, used = wire.split_frames(self.buf, payloads)
        del self.buf[:used]
        for opcode, payload in payloads:
            if opcode == wire.OP_CLOSE:
                assert self.transport is not None
                self.transport.close()
                return
            if opcode == wire.OP_TEXT:
                self._handle(orjson.loads(payload))

    def _upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        key = b""
        for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        del self.buf[: end + 4]
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + wire.accept_key(key) + b"\r\n\r\n"
        )
        self.upgraded = True
        self.fd = next(self.server.ids)
        info = orjson.dumps({"fd": self.fd, "event": "connection-info"}).decode()
        self._send(orjson.dumps({"action": "connection-info", "data": info}))
        return True

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(wire.server_frame(payload))

    def _handle(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        server = self.server
        if action == "channel-connect":
            channel = message["channel"]
            self.members = server.channels.setdefault(channel, {})
            assert self.transport is not None
            self.members[self.fd] = self.transport
            if server.presence:
                frame = _presence_frame(self.fd, channel, sorted(self.members))
                server.send_all(self.members, orjson.dumps(frame))
        elif action == "broadcast-action" and self.members is not None:
            frame = {"action": action, "data": message["data"], "fd": self.fd}
            server.send_all(self.members, orjson.dumps(frame))
        else:
            self._send(orjson.dumps({"action": action, "data": message.get("data"), "fd": self.fd}))


async def _limit(port: int, presence: bool) -> None:
    server = _LimitServer(presence)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: _LimitProtocol(server), "127.0.0.1", port, backlog=4096
    )
    async with listener:
        await asyncio.Future()


def _uvicorn(args: argparse.Namespace) -> None:
    """conveyor-asgi or the naive app under uvicorn, with the options the CLI recommends."""
    import uvicorn

    from conveyor_asgi.__main__ import uvicorn_options
    from conveyor_asgi.settings import Settings

    options = uvicorn_options(Settings.from_env())
    for name in ("ws", "loop", "http"):
        if getattr(args, name):
            options[name] = getattr(args, name)
    if args.deflate:
        options["ws_per_message_deflate"] = True
    if args.kind == "naive":
        os.environ["BENCH_PRESENCE"] = "1" if args.presence else "0"
    app = "conveyor_asgi.app:app" if args.kind == "conveyor" else "benchmarks.references:naive_app"
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        **options,
    )  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.references")
    parser.add_argument("kind", choices=["conveyor", "naive", "ceiling", "limit"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default=None)
    parser.add_argument("--ws", default=None)
    parser.add_argument("--http", default=None)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--presence", action="store_true")
    args = parser.parse_args()
    if args.kind in ("conveyor", "naive"):
        _uvicorn(args)
        return
    run = _ceiling if args.kind == "ceiling" else _limit
    if args.loop in (None, "auto", "uvloop"):
        import uvloop

        uvloop.run(run(args.port, args.presence))
    else:
        asyncio.run(run(args.port, args.presence))


if __name__ == "__main__":
    main()
