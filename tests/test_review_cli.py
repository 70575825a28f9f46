"""A bad CONVEYOR_* value for the command line stops start-up with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .support import ROOT, free_port


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVEYOR_PORT", "eighty"),
        ("CONVEYOR_PORT", "70000"),
        ("CONVEYOR_WORKERS", "two"),
        ("CONVEYOR_WORKERS", "0"),
        ("CONVEYOR_LOG_LEVEL", "verbose"),
    ],
)
def test_the_cli_names_the_bad_variable(name: str, value: str) -> None:
    done = _run(["-m", "conveyor_asgi", "--host", "127.0.0.1"], **{name: value})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{name}={value!r}" in done.stderr


def test_a_bad_command_line_option_is_refused_by_the_parser() -> None:
    done = _run(["-m", "conveyor_asgi", "--log-level", "verbose"])
    assert done.returncode == 2
    assert "--log-level" in done.stderr


def test_uvicorn_import_of_the_app_names_a_bad_log_level() -> None:
    done = _run(
        [
            "-m",
            "uvicorn",
            "conveyor_asgi.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ],
        CONVEYOR_LOG_LEVEL="verbose",
    )
    assert done.returncode != 0
    assert "CONVEYOR_LOG_LEVEL='verbose'" in done.stderr
    assert "Traceback" not in done.stderr
