"""Load clients: raw-socket WebSocket subscribers and one publisher, each crowd in a process.

The client parses only frame headers to count frames; it decodes payloads
only where a row needs them (the first frame for the connection id, the few
connections that sample latency, presence rosters in the storm). Each
process runs one event loop over its share of the connections and talks to
the orchestrator through a pipe: ``ready`` -> ``go`` -> ``result`` -> ``stop``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import orjson

from . import wire

PAYLOAD_BYTES = 256
HOST = "127.0.0.1"
_OPEN_CONCURRENCY = 64
_LATENCY_CONNECTIONS = 25
_LATENCY_SAMPLES = 20000


def payload(now_ns: int, size: int = PAYLOAD_BYTES) -> str:
    """A ``data`` value of ``size`` characters carrying the send time for latency samples."""
    stamp = f"T{now_ns:019d}"
    return stamp + "x" * (size - len(stamp))


def _frame(message: dict[str, Any]) -> bytes:
    return wire.client_frame(orjson.dumps(message))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Socket(asyncio.Protocol):
    """One client connection; frames go to its crowd."""

    def __init__(self, crowd: _Crowd, request: bytes, decode: bool) -> None:
        self.crowd = crowd
        self.request = request
        self.decode = decode
        self.buf = bytearray()
        self.upgraded = False
        self.fd = 0
        self.frames = 0
        self.base = 0
        self.roster = 0
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready: asyncio.Future[None] | None = None
        self.ready_at = 1
        self.stalled = False
        self.need_fd = not crowd.spec.get("deflate")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.opened, self.ready):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.crowd.bytes += len(data)
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buf[:end]).decode("latin-1")))
                return
            del buf[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        payloads: list[tuple[int, bytes]] | None = [] if self.decode or self.need_fd else None
        count, used = wire.split_frames(buf, payloads)
        if used:
            del buf[:used]
        if count:
            self.crowd.on_frames(self, count, payloads)

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)


class _Crowd:
    """The connections of one process and what the current row counts on them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.sockets: list[_Socket] = []
        self.bytes = 0
        self.go = False
        self.expected = 0
        self.counted = 0
        self.done = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies: list[int] = []
        self.finished: asyncio.Future[None] | None = None
        self.storm_size = 0
        self.storm_ok = True
        self.settled_ns = 0
        self.final_roster: list[int] | None = None
        self.own_copies = 0

    # -- frames ------------------------------------------------------------------------

    def on_frames(
        self, sock: _Socket, count: int, payloads: list[tuple[int, bytes]] | None
    ) -> None:
        now = time.monotonic_ns()
        if sock.need_fd and payloads:
            info = orjson.loads(orjson.loads(payloads[0][1])["data"])
            sock.fd = int(info["fd"])
            sock.need_fd = False
        sock.frames += count
        if sock.ready is not None and sock.frames >= sock.ready_at and not sock.ready.done():
            sock.ready.set_result(None)
        if not self.go:
            return
        if self.storm_size:
            self._storm(sock, payloads or [], now)
            return
        if sock.decode and payloads:
            self._sample(payloads, now)
        if sock.stalled:
            return
        got = sock.frames - sock.base
        if got <= 0:
            return
        taken = min(count, got)
        self.counted += taken
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        if got >= self.expected and got - taken < self.expected:
            self.done += 1
            self._check_done()

    def _sample(self, payloads: list[tuple[int, bytes]], now: int) -> None:
        if len(self.latencies) >= _LATENCY_SAMPLES:
            return
        for _, data in payloads:
            at = data.find(b'"T')
            if at >= 0:
                self.latencies.append((now - int(data[at + 2 : at + 21])) // 1000)

    def _storm(self, sock: _Socket, payloads: list[tuple[int, bytes]], now: int) -> None:
        for _, data in payloads:
            message = orjson.loads(data)
            if message.get("action") != "channel-connect":
                continue
            fds = orjson.loads(message["data"])["fds"]
            # Every update must be true when sent: the receiver is a member, rosters only grow.
            if sock.fd not in fds or len(fds) < sock.roster:
                self.storm_ok = False
            previous, sock.roster = sock.roster, len(fds)
            if len(fds) == self.storm_size and previous < self.storm_size:
                self.settled_ns = max(self.settled_ns, now)
                if self.final_roster is None:
                    self.final_roster = fds
                elif fds != self.final_roster:
                    self.storm_ok = False
                self.done += 1
                self._check_done()

    def _check_done(self) -> None:
        target = len(self.sockets) - (1 if self.spec.get("stall") else 0)
        if self.done >= target and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    # -- phases ------------------------------------------------------------------------

    async def open_all(self) -> None:
        spec = self.spec
        gate = asyncio.Semaphore(_OPEN_CONCURRENCY)
        join = _frame({"action": "channel-connect", "channel": "bench"})
        ping = _frame({"action": "base-action", "data": "ready"})
        # Latency samples come from connections spread over the member list, since
        # servers that send to members in turn reach the first ones first.
        step = max(1, spec["count"] // _LATENCY_CONNECTIONS) if spec.get("latency") else 0

        async def one(index: int) -> None:
            async with gate:
                decode = (step > 0 and index % step == 0) or spec["mode"] == "storm"
                stall = index == 0 and bool(spec.get("stall"))
                sock = await _open(spec, decode, small_buffer=stall, crowd=self)
                sock.stalled = stall
                self.sockets.append(sock)
                await sock.opened
                sock.ready = asyncio.get_running_loop().create_future()
                if spec["mode"] != "storm":
                    # The echo comes back after the join was handled: frames are in order.
                    sock.ready_at = 2
                    sock.send(join + ping)
                if sock.frames >= sock.ready_at:
                    sock.ready.set_result(None)
                await sock.ready

        await asyncio.gather(*(one(i) for i in range(spec["count"])))

    async def run(self, params: dict[str, Any], started: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.counted = self.done = self.first_ns = self.last_ns = self.settled_ns = 0
        self.latencies = []
        self.bytes = 0
        cpu0, t0 = _cpu(), time.monotonic_ns()
        mode = self.spec["mode"]
        if mode == "idle":
            started()
            return {}
        if mode == "storm":
            self.storm_size = params["size"]
            self.go = True
            join = _frame({"action": "channel-connect", "channel": "bench"})
            for sock in self.sockets:
                sock.send(join)
        else:
            self.expected = params["messages"]
            for sock in self.sockets:
                sock.base = sock.frames
            for sock in self.sockets:
                if sock.stalled and sock.transport is not None:
                    sock.transport.pause_reading()
            self.go = True
        started()  # only now may the publisher start: no frame is missed
        if self.spec["count"] == 0 or (self.spec.get("stall") and self.spec["count"] == 1):
            self.finished.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), params["timeout"])
            complete = True
        except asyncio.TimeoutError:
            complete = False
        return {
            "frames": self.counted,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "start_ns": t0,
            "end_ns": time.monotonic_ns(),
            "complete": complete,
            "latencies": self.latencies,
            "bytes": self.bytes,
            "cpu": _cpu() - cpu0,
            "settled_ns": self.settled_ns,
            "storm_ok": self.storm_ok and complete,
            "roster": self.final_roster,
            "fds": sorted(s.fd for s in self.sockets),
        }


async def _open(spec: dict[str, Any], decode: bool, small_buffer: bool, crowd: _Crowd) -> _Socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffer:
        # A stalled reader with a tiny receive buffer pushes back on the server at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, spec["port"]))
    request = wire.upgrade_request(HOST, spec["port"], spec.get("deflate", False))
    _, proto = await loop.create_connection(lambda: _Socket(crowd, request, decode), sock=sock)
    return proto


# -- the publisher -----------------------------------------------------------------------------


async def _publish(crowd: _Crowd, params: dict[str, Any]) -> dict[str, Any]:
    """Send ``messages`` broadcasts: as fast as a window allows, or at a fixed rate."""
    sock = crowd.sockets[0]
    base = sock.frames
    messages, rate, window = params["messages"], params.get("rate"), params.get("window", 32)
    deadline = time.monotonic() + params["timeout"]
    sent = 0
    start = time.monotonic()
    while sent < messages and time.monotonic() < deadline:
        if rate:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            while sent - (sock.frames - base) >= window and time.monotonic() < deadline:
                await asyncio.sleep(0.0005)
        data = payload(time.monotonic_ns(), params.get("size", PAYLOAD_BYTES))
        body = {"action": "broadcast-action", "data": data}
        sock.send(_frame(body))
        sent += 1
    return {"sent": sent, "seconds": time.monotonic() - start}


# -- connection rate ----------------------------------------------------------------------------


async def _handshakes(spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Open, wait for ``connection-info``, close; ``concurrency`` at a time, bounded in count."""
    crowd = _Crowd(spec)
    remaining = params["handshakes"]
    deadline = time.monotonic() + params["timeout"]
    done = 0
    failed = 0

    async def worker() -> None:
        nonlocal remaining, done, failed
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                sock = await _open(spec, False, False, crowd)
                sock.ready = asyncio.get_running_loop().create_future()
                if sock.frames >= 1:
                    sock.ready.set_result(None)
                await asyncio.wait_for(sock.ready, 10)
                done += 1
                assert sock.transport is not None
                sock.transport.close()
            except (OSError, asyncio.TimeoutError):
                failed += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(params["concurrency"])))
    return {"handshakes": done, "failed": failed, "seconds": time.monotonic() - start}


# -- the process ------------------------------------------------------------------------------


def process_main(pipe: Pipe, spec: dict[str, Any]) -> None:
    """Entry point of one load-client process (started by the orchestrator)."""
    if spec.get("loop") == "uvloop":
        import uvloop

        uvloop.run(_main(pipe, spec))
    else:
        asyncio.run(_main(pipe, spec))


async def _main(pipe: Pipe, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: inbox.put_nowait(pipe.recv()))
    crowd = _Crowd(spec)
    try:
        if spec["mode"] == "handshakes":
            pipe.send(("ready", None))
            _, params = await inbox.get()
            pipe.send(("started", None))
            pipe.send(("result", await _handshakes(spec, params)))
        else:
            await asyncio.wait_for(crowd.open_all(), spec.get("open_timeout", 120))
            pipe.send(("ready", [s.fd for s in crowd.sockets]))
            # Several runs may share the connections: "go" until "stop".
            while True:
                command, params = await inbox.get()
                if command == "stop":
                    break
                if spec["mode"] == "publisher":
                    pipe.send(("result", await _publish(crowd, params)))
                else:
                    started = lambda: pipe.send(("started", None))  # noqa: E731
                    pipe.send(("result", await crowd.run(params, started)))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        await inbox.get()  # hold on until "stop"
    for sock in crowd.sockets:
        if sock.transport is not None:
            sock.transport.abort()
