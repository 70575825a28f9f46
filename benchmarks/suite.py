"""The orchestrator: servers, load-client processes, rows, the table and the plot."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from . import loadclient

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REFERENCES = ("naive", "ceiling", "limit")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


class BenchError(RuntimeError):
    """A row could not be measured (a server or a client failed)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    """Resident set size in bytes of ``pid`` and all its descendants (workers)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _rss(int(child))
    except (OSError, ValueError):
        pass
    return total


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and all its descendants."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _cpu_seconds(int(child))
    except (OSError, ValueError, IndexError):
        pass
    return total


# -- servers under test -------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """One server process on a free loopback port; a context manager."""

    kind: str  # conveyor, naive, ceiling, limit, redis
    loop: str
    presence: bool = False
    window: float = 0.0
    deflate: bool = False
    ws: str | None = None
    http: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    def __enter__(self) -> Server:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.presence:
            env["CONVEYOR_USE_PRESENCE"] = "true"
            env["CONVEYOR_PRESENCE_WINDOW"] = str(self.window)
        # The benchmark floods on purpose: queues sized so only a stalled reader overflows.
        env["CONVEYOR_SEND_QUEUE_SIZE"] = "1024"
        env.update(self.env)
        if self.kind == "redis":
            env["CONVEYOR_BACKEND_URL"] = REDIS_URL
            env["CONVEYOR_REDIS_PREFIX"] = f"bench-{secrets.token_hex(4)}"
            cmd = [
                sys.executable,
                "-m",
                "conveyor_asgi",
                "--workers",
                "2",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.references",
                self.kind,
                "--port",
                str(self.port),
                "--loop",
                self.loop,
            ]
            if self.presence:
                cmd.append("--presence")
            if self.deflate:
                cmd.append("--deflate")
            if self.ws:
                cmd += ["--ws", self.ws]
            if self.http:
                cmd += ["--http", self.http]
        # A file, not a pipe: a server that logs a line per connection must never block.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise BenchError(f"{self.kind} server exited at start:\n{err[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    time.sleep(0.2 if self.kind == "redis" else 0.05)
                    return
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise BenchError(f"{self.kind} server did not start listening")

    def cpu(self) -> float:
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        assert self.proc is not None
        return _rss(self.proc.pid)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


# -- load-client processes ------------------------------------------------------------------


class Crowd:
    """Load-client processes (subscribers spread over ``procs``, optionally a publisher)."""

    def __init__(
        self,
        server: Server,
        count: int,
        mode: str,
        procs: int,
        *,
        publisher: bool = False,
        latency: bool = False,
        stall: bool = False,
    ) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[tuple[Any, Pipe]] = []
        self.publisher: Pipe | None = None
        procs = max(1, min(procs, count)) if count else 1
        base = {
            "port": server.port,
            "mode": mode,
            "loop": "uvloop",
            "latency": latency,
            "deflate": server.deflate,
        }
        for index in range(procs):
            share = count // procs + (1 if index < count % procs else 0)
            self._spawn(dict(base, count=share, stall=stall and index == 0))
        if publisher:
            self.publisher = self._spawn(dict(base, mode="publisher", count=1, latency=False))
        self.fds: list[int] = []

    def _spawn(self, spec: dict[str, Any]) -> Pipe:
        mine, theirs = self.ctx.Pipe()
        proc = self.ctx.Process(target=loadclient.process_main, args=(theirs, spec), daemon=True)
        proc.start()
        self.children.append((proc, mine))
        return mine

    def _answer(self, pipe: Pipe, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise BenchError("a load client did not answer in time")
        try:
            kind, value = pipe.recv()
        except EOFError:
            raise BenchError("a load client exited unexpectedly") from None
        if kind == "error":
            raise BenchError(f"load client failed: {value}")
        return value

    def ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for _, pipe in self.children:
            fds = self._answer(pipe, max(0.1, deadline - time.monotonic()))
            if pipe is not self.publisher and fds:
                self.fds.extend(fds)

    def go(self, params: dict[str, Any], publish: dict[str, Any] | None = None) -> list[Any]:
        subscribers = [pipe for _, pipe in self.children if pipe is not self.publisher]
        for pipe in subscribers:
            pipe.send(("go", params))
        for pipe in subscribers:
            self._answer(pipe, 30)  # "started"
        if publish is not None and self.publisher is not None:
            self.publisher.send(("go", publish))
        wait = params["timeout"] + 30
        results = [self._answer(pipe, wait) for pipe in subscribers]
        if publish is not None and self.publisher is not None:
            self._answer(self.publisher, wait)
        return results

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, pipe in self.children:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for proc, pipe in self.children:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            pipe.close()


# -- measurements -------------------------------------------------------------------------


def _rate(results: list[dict[str, Any]]) -> float:
    """Frames per second over all subscribers, from the first frame to the last one counted."""
    frames = sum(r["frames"] for r in results)
    firsts = [r["first_ns"] for r in results if r["first_ns"]]
    if not frames or not firsts:
        return 0.0
    ends = [r["last_ns"] if r["complete"] else r["end_ns"] for r in results]
    seconds = (max(ends) - min(firsts)) / 1e9
    return frames / seconds if seconds > 0 else 0.0


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _window(n: int) -> int:
    """Messages the publisher keeps in flight: enough to saturate, far below the queue bound."""
    return max(8, min(512, 16000 // max(n, 1)))


def fanout(
    server: Server,
    n: int,
    messages: int,
    timeout: float,
    procs: int,
    latency_rate: float | None,
    latency_seconds: float,
) -> dict[str, float]:
    """Saturation frames/s, then (same sockets) latency at a fixed rate well below it."""
    out: dict[str, float] = {}
    with Crowd(server, n, "fanout", procs, publisher=True, latency=True) as crowd:
        crowd.ready()
        cpu0, wall0 = server.cpu(), time.monotonic()
        results = crowd.go(
            {"messages": messages, "timeout": timeout},
            {"messages": messages, "timeout": timeout, "window": _window(n)},
        )
        cpu, wall = server.cpu() - cpu0, time.monotonic() - wall0
        out["rate"] = _rate(results)
        frames = sum(r["frames"] for r in results)
        out["per_cpu"] = frames / cpu if cpu > 0 else 0.0
        out["server_busy"] = 100 * cpu / wall
        out["client_cpu"] = sum(r["cpu"] for r in results)
        out["complete"] = float(all(r["complete"] for r in results))
        if latency_rate:
            count = max(5, int(latency_rate * latency_seconds))
            results = crowd.go(
                {"messages": count, "timeout": latency_seconds + 10},
                {"messages": count, "timeout": latency_seconds + 10, "rate": latency_rate},
            )
            samples = [v for r in results for v in r["latencies"]]
            out["p50"] = _percentile(samples, 0.50) / 1000
            out["p99"] = _percentile(samples, 0.99) / 1000
    return out


STALL_PAYLOAD = 16384


def stalled(
    server: Server, n: int, messages: int, timeout: float, procs: int, stall: bool = True
) -> float:
    """Frames/s of the N-1 readers while one member of the channel stops reading.

    Loopback sockets buffer megabytes in the kernel before a sender feels a
    stalled reader, so these rows send 16 KiB payloads: the stalled member's
    buffers fill within the first few hundred messages.
    """
    with Crowd(server, n, "fanout", procs, publisher=True, stall=stall) as crowd:
        crowd.ready()
        results = crowd.go(
            {"messages": messages, "timeout": timeout},
            {"messages": messages, "timeout": timeout, "window": 16, "size": STALL_PAYLOAD},
        )
    return _rate(results)


def storm(server: Server, n: int, timeout: float, procs: int) -> dict[str, Any]:
    """N connected clients join one channel at once; time until all hold the final roster."""
    with Crowd(server, n, "storm", procs) as crowd:
        crowd.ready()
        results = crowd.go({"size": n, "timeout": timeout})
    start = min(r["start_ns"] for r in results)
    complete = all(r["complete"] for r in results)
    rosters = {tuple(r["roster"] or ()) for r in results}
    exact = rosters == {tuple(sorted(crowd.fds))}
    return {
        "seconds": (max(r["settled_ns"] for r in results) - start) / 1e9 if complete else None,
        "bytes": sum(r["bytes"] for r in results),
        "verified": complete and exact and all(r["storm_ok"] for r in results),
    }


def memory(server: Server, n: int, procs: int) -> float:
    """Server RSS growth per idle connection that joined a channel, in bytes."""
    with Crowd(server, 50, "idle", 1) as warm:
        warm.ready()
    time.sleep(0.5)
    before = server.rss()
    with Crowd(server, n, "idle", procs) as crowd:
        crowd.ready(timeout=180)
        time.sleep(1.0)
        after = server.rss()
    return (after - before) / n


def handshakes(server: Server, count: int, procs: int, timeout: float) -> float:
    """Handshakes per second, each one complete when ``connection-info`` arrived."""
    with Crowd(server, procs, "handshakes", procs) as crowd:
        crowd.ready()
        per = count // procs
        results = crowd.go({"handshakes": per, "concurrency": 16, "timeout": timeout})
    done = sum(r["handshakes"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return done / seconds if seconds > 0 else 0.0


# -- the plan ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    fanout_sizes: tuple[int, ...]
    fanout_frames: int  # frames delivered per saturation run (messages = frames / N)
    fanout_timeout: float
    latency_frames_per_s: float  # offered load of the latency run, far below saturation
    latency_seconds: float
    stall_size: int
    stall_messages: int  # enough to fill a stalled reader's socket buffers many times
    stall_timeout: float
    storm_on: tuple[int, ...]
    storm_off: tuple[int, ...]
    storm_timeout: float
    memory_sizes: tuple[int, ...]
    handshakes: int
    compression_size: int
    procs: int


PLANS = {
    "full": Plan(
        (10, 100, 1000, 5000),
        100_000,
        30,
        5000,
        2.0,
        100,
        600,
        6.0,
        (100, 500, 1000),
        (100, 500),
        60,
        (1000, 5000),
        2000,
        100,
        2,
    ),
    "quick": Plan(
        (10, 100, 1000),
        20_000,
        15,
        5000,
        0.5,
        100,
        400,
        2.0,
        (100, 500),
        (100,),
        30,
        (500,),
        300,
        100,
        2,
    ),
    "tiny": Plan((4,), 200, 10, 200, 0.2, 4, 20, 0.5, (4,), (4,), 10, (8,), 20, 4, 1),
}

PRESENCE_WINDOW = 0.05


@dataclasses.dataclass
class Row:
    name: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float | None]
    note: str = ""


def _messages(plan: Plan, n: int) -> int:
    return max(10, min(5000, plan.fanout_frames // n))


def run_plan(plan: Plan, loop: str, servers: list[str], log: Any) -> list[Row]:
    """Every row for every server, servers side by side within each row group."""
    rows: dict[str, Row] = {}

    def put(
        name: str, unit: str, better: str, server: str, value: float | None, note: str = ""
    ) -> None:
        row = rows.setdefault(name, Row(name, unit, better, {}, note))
        row.values[server] = value

    def step(text: str) -> None:
        print(f"  {text}", file=log, flush=True)

    # Fanout, latency and the stalled reader share one server per kind.
    for kind in servers:
        with Server(kind, loop) as server:
            for n in plan.fanout_sizes:
                step(f"{kind}: fanout N={n}")
                rate = max(2.0, plan.latency_frames_per_s / n)
                got = fanout(
                    server,
                    n,
                    _messages(plan, n),
                    plan.fanout_timeout,
                    plan.procs,
                    rate,
                    plan.latency_seconds,
                )
                put(f"fanout N={n}", "frames/s", "higher", kind, got["rate"])
                put(f"latency p50 N={n}", "ms", "lower", kind, got.get("p50"))
                put(f"latency p99 N={n}", "ms", "lower", kind, got.get("p99"))
                put(f"fanout N={n} per server CPU-second", "frames", "higher", kind, got["per_cpu"])
                put(f"server CPU busy N={n}", "%", "higher", kind, got["server_busy"])
            step(f"{kind}: stalled reader N={plan.stall_size}")
            for stall in (False, True):
                value = stalled(
                    server,
                    plan.stall_size,
                    plan.stall_messages,
                    plan.stall_timeout,
                    plan.procs,
                    stall,
                )
                label = "one stalled" if stall else "none stalled"
                put(
                    f"fanout N={plan.stall_size} 16 KiB, {label}", "frames/s", "higher", kind, value
                )
            step(f"{kind}: handshakes")
            put(
                "connection rate",
                "handshakes/s",
                "higher",
                kind,
                handshakes(server, plan.handshakes, plan.procs, 30),
            )

    # Presence storms: a fresh server each, presence on.
    for n in sorted(set(plan.storm_on) | set(plan.storm_off)):
        for kind in servers:
            variants: list[tuple[str, float]] = []
            if kind in ("conveyor", "redis"):
                if n in plan.storm_on:
                    variants.append((f"window {PRESENCE_WINDOW:g}s", PRESENCE_WINDOW))
                if n in plan.storm_off:
                    variants.append(("window off", 0.0))
            elif n in plan.storm_off:
                variants.append(("window off", 0.0))
            for label, window in variants:
                step(f"{kind}: presence storm N={n} ({label})")
                with Server(kind, loop, presence=True, window=window) as server:
                    got = storm(server, n, plan.storm_timeout, plan.procs)
                put(f"storm N={n} {label}: settle", "s", "lower", kind, got["seconds"])
                put(f"storm N={n} {label}: bytes", "MB", "lower", kind, got["bytes"] / 1e6)
                put(
                    f"storm N={n} {label}: exact rosters",
                    "ok",
                    "higher",
                    kind,
                    1.0 if got["verified"] else 0.0,
                )

    # Memory: a fresh server per size.
    for n in plan.memory_sizes:
        for kind in servers:
            step(f"{kind}: idle memory N={n}")
            with Server(kind, loop) as server:
                put(
                    f"memory per idle connection N={n}",
                    "KiB",
                    "lower",
                    kind,
                    memory(server, n, plan.procs) / 1024,
                )

    # Per-message compression, on against off, for conveyor-asgi only.
    n = plan.compression_size
    for deflate in (False, True):
        label = "on" if deflate else "off"
        step(f"conveyor: compression {label}")
        with Server("conveyor", loop, deflate=deflate) as server:
            got = fanout(server, n, _messages(plan, n), plan.fanout_timeout, plan.procs, None, 0)
            put(f"compression {label}: fanout N={n}", "frames/s", "higher", "conveyor", got["rate"])
        with Server("conveyor", loop, deflate=deflate) as server:
            m = plan.memory_sizes[0]
            put(
                f"compression {label}: memory N={m}",
                "KiB",
                "lower",
                "conveyor",
                memory(server, m, plan.procs) / 1024,
            )
    return list(rows.values())


def run_matrix(plan: Plan, log: Any) -> list[Row]:
    """conveyor-asgi under each uvicorn WebSocket implementation, loop and HTTP parser."""
    rows: dict[str, Row] = {}
    n = plan.compression_size
    for loop in ("asyncio", "uvloop"):
        for ws in ("websockets", "websockets-sansio", "wsproto"):
            print(f"  conveyor: --ws {ws} --loop {loop}", file=log, flush=True)
            with Server("conveyor", loop, ws=ws) as server:
                got = fanout(
                    server, n, _messages(plan, n), plan.fanout_timeout, plan.procs, None, 0
                )
            for name, unit, key in (
                (f"fanout N={n}", "frames/s", "rate"),
                (f"fanout N={n} per server CPU-second", "frames", "per_cpu"),
            ):
                row = rows.setdefault(name, Row(name, unit, "higher", {}))
                row.values[f"{ws}/{loop}"] = got[key]
        for http in ("h11", "httptools"):
            print(f"  conveyor: --http {http} --loop {loop}", file=log, flush=True)
            with Server("conveyor", loop, http=http) as server:
                rate = handshakes(server, plan.handshakes, plan.procs, 30)
            row = rows.setdefault(
                "connection rate", Row("connection rate", "handshakes/s", "higher", {})
            )
            row.values[f"{http}/{loop}"] = rate
    return list(rows.values())


# -- output -----------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "-"
    if unit == "ok":
        return "yes" if value else "NO"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[Row], servers: list[str]) -> str:
    """A Markdown table: absolute values, then conveyor-asgi's ratio to each reference."""
    ours = [s for s in servers if s not in REFERENCES]
    refs = [s for s in servers if s in REFERENCES]
    head = ["row", "unit", *servers] + [f"{o}/{r}" for o in ours for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name, row.unit + (" (lower is better)" if row.better == "lower" else "")]
        cells += [_fmt(row.values.get(s), row.unit) for s in servers]
        for o in ours:
            for r in refs:
                a, b = row.values.get(o), row.values.get(r)
                ok = a is not None and b and a == a and b == b and row.unit != "ok"
                cells.append(f"{a / b:.2f}x" if ok else "-")  # type: ignore[operator]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[Row], servers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("fanout frames/s (higher is better)", [r for r in rows if r.name.startswith("fanout")]),
        ("latency p99, ms", [r for r in rows if r.name.startswith("latency p99")]),
        ("presence storm settle, s", [r for r in rows if r.name.endswith(": settle")]),
        ("memory per idle connection, KiB", [r for r in rows if r.name.startswith("memory per")]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for ax, (title, group) in zip(axes.flat, groups, strict=False):
        width = 0.8 / max(1, len(servers))
        for i, server in enumerate(servers):
            xs = [j + i * width for j in range(len(group))]
            ys = [r.values.get(server) or 0.0 for r in group]
            ax.bar(xs, ys, width, label=server)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(group))])
        ax.set_xticklabels([r.name for r in group], rotation=20, ha="right", fontsize=7)
        ax.set_title(title)
        if "frames/s" in title or "latency" in title:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- entry point ------------------------------------------------------------------------------


def _check_redis() -> str | None:
    """Why the Redis rows cannot run, or None when they can."""
    if importlib.util.find_spec("conveyor_asgi.backends.redis") is None:
        return (
            "--redis needs the Redis backend (conveyor_asgi/backends/redis.py), "
            "which this tree does not contain"
        )
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                return "the Redis server at 127.0.0.1:6379 did not answer PING"
    except OSError as exc:
        return f"no Redis server at 127.0.0.1:6379 ({exc})"
    return None


def _default_loop() -> str:
    from conveyor_asgi.__main__ import uvicorn_options
    from conveyor_asgi.settings import Settings

    loop = str(uvicorn_options(Settings()).get("loop", "auto"))
    if loop == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return loop


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="conveyor-asgi against the naive, ceiling and limit reference servers.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="add conveyor-asgi with the Redis backend and 2 workers",
    )
    parser.add_argument(
        "--servers",
        default="conveyor,naive,ceiling,limit",
        help="comma-separated subset of conveyor,naive,ceiling,limit",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results"),
        help="folder for results.json, results.md and bench.png",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="instead: conveyor-asgi under every uvicorn --ws, --loop and --http choice",
    )
    args = parser.parse_args(argv)

    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - {"conveyor", *REFERENCES}
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.redis:
        problem = _check_redis()
        if problem is not None:
            print(f"benchmarks: {problem}", file=sys.stderr)
            return 2
        servers.insert(1, "redis")
    plan = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
    _raise_file_limit()
    loop = _default_loop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(
        f"benchmarks: servers {', '.join(servers)}; loop {loop}; "
        f"{os.cpu_count()} CPUs; loopback only",
        flush=True,
    )
    try:
        if args.matrix:
            rows = run_matrix(plan, sys.stdout)
            servers = list(dict.fromkeys(k for r in rows for k in r.values))
        else:
            rows = run_plan(plan, loop, servers, sys.stdout)
    except BenchError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    text = table(rows, servers)
    print()
    print(text)
    print(f"\nfinished in {time.monotonic() - started:.0f} s", flush=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    if not args.no_plot and not args.matrix:
        plot(rows, servers, out / "bench.png")
        print(f"plot: {out / 'bench.png'}")
    return 0
