"""Soak test: mixed traffic for a bounded time, then an exact account of delivery.

Run it from the project root::

    python benchmarks/soak.py                 # 2 minutes against a server it starts
    python benchmarks/soak.py --seconds 600   # longer
    python benchmarks/soak.py --url ws://127.0.0.1:8989 --token SECRET   # a running server

Stable clients stay connected the whole time, some in channels and some in
none; they send channel and lobby broadcasts, one sends fanouts, and HTTP
publishes go to the channels. Churning clients connect, join, broadcast,
associate user ids and leave again (closing or dropping the TCP connection)
all along. Every payload carries a unique id, so at the end each stable
client's received ids are compared with the ids it had to receive: they must
match exactly (nothing missing, nothing twice). The server's memory (RSS, from
``GET /conveyor/stats``) is sampled as the run goes.

Exit status: 0 when every stable client got exactly what it should and no
error happened, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass
class Stable:
    """A client that stays for the whole run; its deliveries are accounted for."""

    ws: Any
    fd: int
    channel: str | None
    received: collections.Counter[str] = field(default_factory=collections.Counter)
    expected: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None


class Soak:
    def __init__(self, args: argparse.Namespace, ws_url: str, http_url: str) -> None:
        self.args = args
        self.ws_url = ws_url
        self.http_url = http_url
        self.token = args.token
        self.ids = itertools.count()
        self.stable: list[Stable] = []
        self.errors: list[str] = []
        self.rss: list[tuple[float, float]] = []
        self.churn_cycles = 0
        self.sent = collections.Counter[str]()
        self.started = time.monotonic()

    # -- clients -------------------------------------------------------------

    def _url(self) -> str:
        return f"{self.ws_url}?token={self.token}" if self.token else self.ws_url

    async def _open(self) -> tuple[Any, int]:
        ws = await websockets.connect(self._url(), max_size=None, open_timeout=10)
        info = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return ws, json.loads(info["data"])["fd"]

    async def _read(self, client: Stable) -> None:
        try:
            async for raw in client.ws:
                frame = json.loads(raw)
                data = frame.get("data")
                if frame["action"] == "error":
                    client.errors.append(f"error frame: {frame.get('code')}")
                elif isinstance(data, dict) and "soak" in data:
                    client.received[data["soak"]] += 1
        except ConnectionClosed as exc:
            if not self.closing:
                client.errors.append(f"connection {client.fd} closed: {exc}")

    closing = False

    async def start_stable(self) -> None:
        channels = [f"soak-{n}" for n in range(self.args.channels)]
        for n in range(self.args.clients):
            in_lobby = n % 5 == 4  # one in five stays in no channel
            ws, fd = await self._open()
            channel = None if in_lobby else channels[n % len(channels)]
            client = Stable(ws, fd, channel)
            if channel is not None:
                await ws.send(json.dumps({"action": "channel-connect", "channel": channel}))
            await ws.send(json.dumps({"action": "assoc-user-to-fd-action", "userId": n}))
            self.stable.append(client)
        # Joins are handled in order per connection: one echo each means all are in.
        for client in self.stable:
            await client.ws.send(json.dumps({"action": "base-action", "data": "ready"}))
            while True:
                frame = json.loads(await asyncio.wait_for(client.ws.recv(), 10))
                if frame["action"] == "base-action":
                    break
            client.reader = asyncio.create_task(self._read(client))

    def _expect(self, msg_id: str, channel: str | None, everyone: bool = False) -> None:
        for client in self.stable:
            if everyone or client.channel == channel:
                client.expected[msg_id] += 1

    # -- traffic ------------------------------------------------------------------

    async def _paced(self, rate: float, step: Any) -> None:
        """Call ``step`` about ``rate`` times a second until the run ends."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        while time.monotonic() < self.deadline:
            await step()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def broadcasts(self, client: Stable) -> None:
        async def step() -> None:
            msg_id = f"b{next(self.ids)}"
            # A lobby broadcast reaches every connection in no channel.
            self._expect(msg_id, client.channel)
            self.sent["broadcast"] += 1
            await client.ws.send(
                json.dumps({"action": "broadcast-action", "data": {"soak": msg_id}})
            )

        await self._paced(self.args.rate, step)

    async def fanouts(self, client: Stable) -> None:
        async def step() -> None:
            msg_id = f"f{next(self.ids)}"
            self._expect(msg_id, None, everyone=True)
            self.sent["fanout"] += 1
            await client.ws.send(json.dumps({"action": "fanout-action", "data": {"soak": msg_id}}))

        await self._paced(max(1.0, self.args.rate / 4), step)

    async def http_publishes(self) -> None:
        channels = sorted({c.channel for c in self.stable if c.channel is not None})

        async def step() -> None:
            channel = random.choice(channels)
            msg_id = f"h{next(self.ids)}"
            status, body = await asyncio.to_thread(
                self._http,
                "POST",
                "/conveyor/message",
                {"channel": channel, "message": {"soak": msg_id}},
            )
            self.sent["http"] += 1
            if status == 200:
                self._expect(msg_id, channel)
            else:
                self.errors.append(f"HTTP publish answered {status}: {body}")

        await self._paced(self.args.http_rate, step)

    async def churn(self, seed: int) -> None:
        rnd = random.Random(seed)
        channels = [f"soak-{n}" for n in range(self.args.channels)]
        while time.monotonic() < self.deadline:
            try:
                await self._churn_once(rnd, channels)
                self.churn_cycles += 1
            except (ConnectionClosed, OSError, asyncio.TimeoutError) as exc:
                self.errors.append(f"churn client: {type(exc).__name__}: {exc}")
            await asyncio.sleep(rnd.random() * 0.05)

    async def _churn_once(self, rnd: random.Random, channels: list[str]) -> None:
        ws, fd = await self._open()
        channel = rnd.choice(channels)
        await ws.send(json.dumps({"action": "assoc-user-to-fd-action", "userId": f"c{fd}"}))
        await ws.send(json.dumps({"action": "channel-connect", "channel": channel}))
        msg_id = f"c{next(self.ids)}"
        # Counted once the churner's own copy is back: the server handled it
        # while the churner was a member, so every stable member must get it.
        await ws.send(json.dumps({"action": "broadcast-action", "data": {"soak": msg_id}}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            data = frame.get("data")
            if isinstance(data, dict) and data.get("soak") == msg_id:
                break
        self._expect(msg_id, channel)
        self.sent["churn broadcast"] += 1
        if rnd.random() < 0.5:
            await ws.close()
        else:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()

    async def sample_rss(self) -> None:
        while time.monotonic() < self.deadline:
            self._sample()
            await asyncio.sleep(min(self.args.sample, max(0.0, self.deadline - time.monotonic())))
        self._sample()

    def _sample(self) -> None:
        status, stats = self._http("GET", "/conveyor/stats", None)
        if status == 200:
            self.rss.append((time.monotonic() - self.started, stats["rss_bytes"] / 2**20))
        else:
            self.errors.append(f"stats answered {status}")

    def _http(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except OSError as err:
            return 0, str(err)

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> bool:
        await self.start_stable()
        self.deadline = time.monotonic() + self.args.seconds
        fanner = self.stable[0]
        traffic = [
            *(self.broadcasts(c) for c in self.stable),
            self.fanouts(fanner),
            self.http_publishes(),
            *(self.churn(seed) for seed in range(self.args.churners)),
            self.sample_rss(),
        ]
        await asyncio.gather(*traffic)
        await self._drain()
        self.closing = True
        for client in self.stable:
            await client.ws.close()
            if client.reader is not None:
                await client.reader
        return self.report()

    async def _drain(self, timeout: float = 15.0) -> None:
        """Wait until every stable client has what it should (or the time is up)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(c.received == c.expected for c in self.stable):
                return
            await asyncio.sleep(0.1)

    def report(self) -> bool:
        expected = sum(sum(c.expected.values()) for c in self.stable)
        delivered = sum(sum(c.received.values()) for c in self.stable)
        unequal = [c for c in self.stable if c.received != c.expected]
        errors = self.errors + [e for c in self.stable for e in c.errors]
        in_channels = sum(1 for c in self.stable if c.channel is not None)
        print(
            f"soak: {self.args.seconds:g} s, {len(self.stable)} stable clients "
            f"({in_channels} in {self.args.channels} channels, "
            f"{len(self.stable) - in_channels} in none), {self.args.churners} churners, "
            f"{self.churn_cycles} churn cycles"
        )
        print("sent: " + ", ".join(f"{k} {v}" for k, v in sorted(self.sent.items())))
        print(f"frames: expected {expected}, delivered {delivered}")
        for client in unequal[:10]:
            missing = sum((client.expected - client.received).values())
            extra = sum((client.received - client.expected).values())
            print(
                f"  client {client.fd} ({client.channel or 'no channel'}): "
                f"{missing} missing, {extra} unexpected or repeated"
            )
        print(f"clients with delivered != expected: {len(unequal)}")
        print(f"errors: {len(errors)}")
        for error in errors[:10]:
            print(f"  {error}")
        print("RSS over time (MiB): " + ", ".join(f"t={t:.0f}s {r:.1f}" for t, r in self.rss))
        ok = not unequal and not errors
        print("result: " + ("OK" if ok else "FAILED"))
        return ok


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _start_server(token: str) -> tuple[subprocess.Popen[bytes], int, Any]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "CONVEYOR_SERVER_TOKEN": token,
            "CONVEYOR_USE_PRESENCE": "true",
            "CONVEYOR_LOG_LEVEL": "warning",
        }
    )
    log = tempfile.TemporaryFile()  # noqa: SIM115 - it outlives this function; main() closes it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor_asgi",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1):
                return proc, port, log
        except OSError:
            time.sleep(0.05)
    proc.kill()
    log.seek(0)
    raise SystemExit(f"the server did not start:\n{log.read().decode(errors='replace')}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic time (120)")
    parser.add_argument("--clients", type=int, default=40, help="stable clients (40)")
    parser.add_argument("--channels", type=int, default=4, help="channels (4)")
    parser.add_argument(
        "--churners", type=int, default=4, help="clients connecting and leaving all along (4)"
    )
    parser.add_argument(
        "--rate", type=float, default=5.0, help="broadcasts a second per stable client (5)"
    )
    parser.add_argument(
        "--http-rate", type=float, default=10.0, help="HTTP publishes a second (10)"
    )
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--url", help="ws://host:port of a running server (default: start one)")
    parser.add_argument("--token", default=None, help="its server token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.channels < 1 or args.seconds <= 0:
        raise SystemExit("--clients, --channels and --seconds must be positive")
    proc = log = None
    if args.url:
        ws_url = args.url.rstrip("/")
        http_url = "http" + ws_url[2:]
    else:
        args.token = args.token or "soak-" + os.urandom(8).hex()
        proc, port, log = _start_server(args.token)
        ws_url, http_url = f"ws://{HOST}:{port}", f"http://{HOST}:{port}"
    try:
        ok = asyncio.run(Soak(args, ws_url, http_url).run())
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            log.close()
            if "Traceback" in output or "ERROR" in output:
                print("server output had errors:\n" + output[-4000:])
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
