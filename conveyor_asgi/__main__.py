"""``python -m conveyor_asgi``: run the server with uvicorn and the recommended settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError
from .settings import Settings

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _env(name: str, default: str, parse: Callable[[str], Any], rule: str) -> Any:
    """``name`` from the environment, parsed; a bad value names the variable."""
    text = os.environ.get(name, default)
    try:
        return parse(text)
    except ValueError:
        raise ConfigurationError(f"{name}={text!r} is not valid: expected {rule}") from None


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _workers(text: str) -> int:
    workers = int(text)
    if workers < 1:
        raise ValueError(text)
    return workers


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in _LOG_LEVELS:
        raise ValueError(text)
    return level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor_asgi",
        description="Run the conveyor-asgi server. Server settings come from CONVEYOR_* "
        "environment variables.",
    )
    parser.add_argument("--host", default=os.environ.get("CONVEYOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=_port,
                        default=_env("CONVEYOR_PORT", "8989", _port, "a port number"))
    parser.add_argument(
        "--workers", type=_workers,
        default=_env("CONVEYOR_WORKERS", "1", _workers, "a number of processes, 1 or more"),
        help="worker processes (more than one needs CONVEYOR_BACKEND_URL=redis://...)",
    )
    parser.add_argument(
        "--log-level", type=_log_level, choices=_LOG_LEVELS,
        default=_env("CONVEYOR_LOG_LEVEL", "info", _log_level, "one of " + ", ".join(_LOG_LEVELS)),
    )
    return parser


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """The uvicorn options the server is measured and recommended with."""
    return {
        "ws_max_size": max(settings.max_message_bytes, 1),
        "ws_per_message_deflate": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 10,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"conveyor-asgi: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.backend_url.startswith("memory://"):
        print("conveyor-asgi: --workers > 1 needs CONVEYOR_BACKEND_URL=redis://...",
              file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        "conveyor_asgi.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        **uvicorn_options(settings),  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
