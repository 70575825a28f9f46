"""``python -m conveyor_asgi`` and start-up with bad configuration values."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from .support import HOST, ROOT, free_port


def _run(
    args: list[str], env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_options_and_every_setting() -> None:
    result = _run(["-m", "conveyor_asgi", "--help"], {})
    assert result.returncode == 0, result.stderr
    for name in (
        "--host",
        "--port",
        "--workers",
        "--log-level",
        "CONVEYOR_HOST",
        "CONVEYOR_PORT",
        "CONVEYOR_WORKERS",
        "CONVEYOR_LOG_LEVEL",
        "CONVEYOR_SERVER_TOKEN",
        "CONVEYOR_USE_PRESENCE",
        "CONVEYOR_BACKEND_URL",
        "CONVEYOR_MAX_MESSAGE_BYTES",
        "CONVEYOR_TOKEN_MAX_TTL",
    ):
        assert name in result.stdout, name


@pytest.mark.parametrize(
    ("variable", "value", "explanation"),
    [
        ("CONVEYOR_USE_PRESENCE", "maybe", "expected one of true/false"),
        ("CONVEYOR_MAX_MESSAGE_BYTES", "0", "must be >= 1"),
        ("CONVEYOR_MAX_MESSAGE_BYTES", "lots", "not valid"),
        ("CONVEYOR_TOKEN_TTL", "-5", "between 1 and"),
        ("CONVEYOR_BACKEND_URL", "mysql://db", "memory:// or redis://"),
        ("CONVEYOR_PORT", "http", "expected an integer"),
        ("CONVEYOR_PORT", "70000", "expected 0 to 65535"),
        ("CONVEYOR_WORKERS", "0", "expected 1 to"),
        ("CONVEYOR_LOG_LEVEL", "loud", "expected one of"),
    ],
)
def test_a_bad_value_stops_the_cli_with_a_message_naming_it(
    variable: str, value: str, explanation: str
) -> None:
    result = _run(["-m", "conveyor_asgi", "--port", "0"], {variable: value})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("conveyor-asgi: invalid configuration:"), result.stderr
    assert variable in result.stderr
    assert explanation in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CONVEYOR_USE_ACKNOWLEDGMENT", "often"), ("CONVEYOR_LOG_LEVEL", "loud")],
)
def test_a_bad_value_stops_plain_uvicorn_with_a_message_naming_it(
    variable: str, value: str
) -> None:
    result = _run(
        ["-m", "uvicorn", "conveyor_asgi.app:app", "--host", HOST, "--port", "0"],
        {variable: value},
    )
    assert result.returncode != 0
    assert "conveyor-asgi: invalid configuration:" in result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_need_a_shared_backend() -> None:
    result = _run(["-m", "conveyor_asgi", "--workers", "2", "--port", "0"], {})
    assert result.returncode == 2
    assert "CONVEYOR_BACKEND_URL=redis://" in result.stderr


def test_the_cli_serves_on_the_configured_port() -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env = {
        **clean,
        "CONVEYOR_HOST": HOST,
        "CONVEYOR_PORT": str(port),
        "CONVEYOR_SERVER_TOKEN": "cli-token",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor_asgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        status = None
        while status is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as resp:
                    status = resp.status
            except OSError:
                time.sleep(0.05)
        assert status == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    # uvicorn shuts down cleanly, then re-raises the signal it got.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "conveyor-asgi stopped" in output
    assert "cli-token" not in output
