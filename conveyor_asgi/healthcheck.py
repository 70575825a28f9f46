"""``python -m conveyor_asgi.healthcheck``: exit 0 when the local server's ``/health`` is 200.

Container health checks and exec probes run this inside the server's own
image, which has Python but no curl. It reads the address the server was
started with from ``CONVEYOR_HOST`` and ``CONVEYOR_PORT``, as
``python -m conveyor_asgi`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

# Addresses a server listens on for every interface; it answers on loopback.
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def health_url(host: str, port: int) -> str:
    """The URL of ``/health`` for a server started with ``host`` and ``port``."""
    host = host.strip()
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def check(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"no answer from {url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor_asgi.healthcheck",
        description="Exit 0 when the server's /health answers 200, else 1.",
    )
    parser.add_argument("--host", default=os.environ.get("CONVEYOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CONVEYOR_PORT", "8989")))
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    problem = check(health_url(args.host, args.port), args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
