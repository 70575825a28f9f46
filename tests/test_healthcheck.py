"""``python -m conveyor_asgi.healthcheck``: the probe the container image runs."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from conveyor_asgi.healthcheck import check, health_url, main

from .support import HOST, ServerProcess, free_port


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8989/health"),
        ("::", "http://127.0.0.1:8989/health"),
        ("", "http://127.0.0.1:8989/health"),
        ("127.0.0.5", "http://127.0.0.5:8989/health"),
        ("::1", "http://[::1]:8989/health"),
        ("conveyor-1", "http://conveyor-1:8989/health"),
    ],
)
def test_the_probe_asks_the_address_the_server_listens_on(host: str, url: str) -> None:
    assert health_url(host, 8989) == url


def test_a_healthy_server_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    with ServerProcess() as server:
        monkeypatch.setenv("CONVEYOR_HOST", HOST)
        monkeypatch.setenv("CONVEYOR_PORT", str(server.port))
        assert main([]) == 0


@pytest.fixture
def unavailable_server() -> Iterator[int]:
    """A loopback HTTP server whose every answer is 503, as /health during an outage."""

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_503_fails_the_probe(unavailable_server: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", HOST, "--port", str(unavailable_server)]) == 1
    assert "answered 503" in capsys.readouterr().err


def test_no_server_fails_the_probe() -> None:
    problem = check(health_url(HOST, free_port()), timeout=2)
    assert problem is not None and "no answer" in problem
