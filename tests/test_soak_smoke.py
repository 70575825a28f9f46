"""The soak command runs end to end and accounts for every frame."""

from __future__ import annotations

import re
import subprocess
import sys

from .support import ROOT


def test_short_soak_delivers_exactly_what_is_expected() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/soak.py",
            "--seconds",
            "2",
            "--clients",
            "6",
            "--channels",
            "2",
            "--churners",
            "1",
            "--sample",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = re.search(r"frames: expected (\d+), delivered (\d+)", out)
    assert counts is not None, out
    assert int(counts[1]) == int(counts[2]) > 0
    assert "errors: 0" in out
    assert re.search(r"RSS over time \(MiB\): t=0s [\d.]+", out), out
    assert "result: OK" in out
