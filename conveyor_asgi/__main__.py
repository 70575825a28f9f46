"""``python -m conveyor_asgi``: run the server with uvicorn and the recommended settings."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .errors import ConfigurationError
from .settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor_asgi",
        description="Run the conveyor-asgi server. Server settings come from CONVEYOR_* "
        "environment variables.",
    )
    parser.add_argument("--host", default=os.environ.get("CONVEYOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CONVEYOR_PORT", "8989")))
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("CONVEYOR_WORKERS", "1")),
        help="worker processes (more than one needs CONVEYOR_BACKEND_URL=redis://...)",
    )
    parser.add_argument("--log-level", default=os.environ.get("CONVEYOR_LOG_LEVEL", "info"))
    return parser


def _installed(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) is not None else fallback


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """The uvicorn options the server is measured and recommended with.

    The WebSocket implementation, HTTP parser and loop are the ones that
    measured fastest (``scripts/bench --matrix``); per-message compression is
    off because it costs far more send throughput and memory than it saves.
    """
    return {
        "ws": "websockets-sansio",
        "http": _installed("httptools", "h11"),
        "loop": _installed("uvloop", "asyncio"),
        "ws_max_size": max(settings.max_message_bytes, 1),
        "ws_per_message_deflate": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 10,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
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
