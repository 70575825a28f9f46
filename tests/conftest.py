"""Shared fixtures: real servers (memory and Redis backends) and clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from .support import HOST, ServerProcess, free_port

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server: CONVEYOR_TEST_REDIS_URL if it answers, else one we start.

    Outside CI the Redis tests skip with a reason when neither works; in CI
    (CI=true) that is a failure.
    """
    url = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if _redis_answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("no Redis answers and redis-server is not installed")
        pytest.skip("no Redis server answers and redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://{HOST}:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("could not start redis-server")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment selecting each backend in turn (one test, both backends)."""
    if request.param == "memory":
        return {"CONVEYOR_BACKEND_URL": "memory://"}
    url = request.getfixturevalue("redis_url")
    return {
        "CONVEYOR_BACKEND_URL": url,
        "CONVEYOR_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
    }


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(backend: dict[str, str]) -> Iterator[ServerFactory]:
    """Start servers on the parametrized backend; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, **kw: object) -> ServerProcess:
        server = ServerProcess({**backend, **(env or {})}, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.__exit__(None, None, None)
