"""The benchmark suite runs end to end at tiny sizes, so it cannot rot (no timing checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--out", str(tmp)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tiny_run_measures_every_row_for_every_server(tmp_path: Path) -> None:
    done = _run("--tiny", "--servers", "conveyor,limit", tmp=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    rows = {row["name"]: row for row in json.loads((tmp_path / "results.json").read_text())}
    for name in (
        "fanout N=4",
        "latency p99 N=4",
        "fanout N=4 16 KiB, one stalled",
        "connection rate",
        "storm N=4 window off: settle",
        "memory per idle connection N=8",
    ):
        assert set(rows[name]["values"]) == {"conveyor", "limit"}, name
        assert all(v is not None for v in rows[name]["values"].values()), name
    assert rows["fanout N=4"]["values"]["conveyor"] > 0
    # The storm check is real: every member ended with the exact roster.
    assert rows["storm N=4 window 0.05s: exact rosters"]["values"]["conveyor"] == 1.0
    assert rows["storm N=4 window off: exact rosters"]["values"]["limit"] == 1.0
    assert rows["compression on: fanout N=4"]["values"]["conveyor"] > 0
    assert "| fanout N=4 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_shared_backend_rows_refuse_clearly_without_their_backend(tmp_path: Path) -> None:
    from benchmarks.suite import _check_redis

    if importlib.util.find_spec("conveyor_asgi.backends.redis") is None:
        done = _run("--tiny", "--redis", tmp=tmp_path)
        assert done.returncode == 2
        assert "--redis needs the Redis backend" in done.stderr
        assert not (tmp_path / "results.json").exists()
    else:
        problem = _check_redis()
        assert problem is None or "Redis backend" not in problem
