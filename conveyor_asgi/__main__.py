"""``python -m conveyor_asgi``: run the server with uvicorn and the recommended settings."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable

from .errors import ConfigurationError
from .settings import Settings

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class _EnvError(Exception):
    pass


def _env_int(name: str, default: int, low: int, high: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise _EnvError(f"{name}={text!r} is not valid: expected an integer") from None
    if not low <= value <= high:
        raise _EnvError(f"{name}={text!r} is not valid: expected {low} to {high}")
    return value


def _env_host() -> str:
    text = os.environ.get("CONVEYOR_HOST", "127.0.0.1")
    if not text.strip():
        # An empty host would make uvicorn listen on every interface.
        raise _EnvError(f"CONVEYOR_HOST={text!r} is not valid: expected an address to listen on")
    return text.strip()


def _env_level() -> str:
    text = os.environ.get("CONVEYOR_LOG_LEVEL", "info")
    if text.strip().lower() not in _LOG_LEVELS:
        raise _EnvError(
            f"CONVEYOR_LOG_LEVEL={text!r} is not valid: expected one of {', '.join(_LOG_LEVELS)}"
        )
    return text.strip().lower()


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def _settings_epilog() -> str:
    lines = ["server settings (environment variables, with their defaults):"]
    for field in dataclasses.fields(Settings):
        lines.append(f"  {field.metadata['env']:<34} {_shown(field.default)}")
    lines.append("")
    lines.append("A bad value stops start-up with a message naming the variable.")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor_asgi",
        description="Run the conveyor-asgi server with uvicorn. Server settings come from "
        "CONVEYOR_* environment variables; the options below default to CONVEYOR_HOST, "
        "CONVEYOR_PORT, CONVEYOR_WORKERS and CONVEYOR_LOG_LEVEL.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=_env_host(),
        help="address to listen on (CONVEYOR_HOST, default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=_bounded(0, 65535),
        default=_env_int("CONVEYOR_PORT", 8989, 0, 65535),
        help="port to listen on (CONVEYOR_PORT, default 8989)",
    )
    parser.add_argument(
        "--workers",
        type=_bounded(1, 1024),
        default=_env_int("CONVEYOR_WORKERS", 1, 1, 1024),
        help="worker processes (CONVEYOR_WORKERS, default 1); more than one needs "
        "CONVEYOR_BACKEND_URL=redis://...",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LOG_LEVELS,
        default=_env_level(),
        help="uvicorn and conveyor log level (CONVEYOR_LOG_LEVEL, default info)",
    )
    return parser


def _installed(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) is not None else fallback


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """The uvicorn options the server is measured and recommended with.

    Keepalive pings are uvicorn's protocol pings: a peer that does not answer
    one within ``ping_timeout`` seconds is closed, and its cleanup (presence
    leave update included) runs as for any other close. A plain
    ``uvicorn conveyor_asgi.app:app`` does not read ``CONVEYOR_PING_*``: it
    uses uvicorn's own ``--ws-ping-interval``/``--ws-ping-timeout``.

    The WebSocket implementation, HTTP parser and loop are the ones that
    measured fastest (``scripts/bench --matrix``); per-message compression is
    off because it costs far more send throughput and memory than it saves.
    """
    interval = settings.ping_interval
    return {
        "ws": "websockets-sansio",
        "http": _installed("httptools", "h11"),
        "loop": _installed("uvloop", "asyncio"),
        "ws_max_size": max(settings.max_message_bytes, 1),
        "ws_ping_interval": interval if interval > 0 else None,
        "ws_ping_timeout": settings.ping_timeout,
        "ws_per_message_deflate": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 10,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()
    except _EnvError as exc:
        print(f"conveyor-asgi: invalid configuration: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"conveyor-asgi: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.backend_url.startswith("memory://"):
        print(
            "conveyor-asgi: --workers > 1 needs CONVEYOR_BACKEND_URL=redis://...", file=sys.stderr
        )
        return 2

    import uvicorn

    # The app reads its own log level in each worker process.
    os.environ["CONVEYOR_LOG_LEVEL"] = args.log_level

    from .app import CLI_MARKER

    # Worker processes inherit it: the app knows its uvicorn got our options.
    os.environ[CLI_MARKER] = "1"
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
