"""Token redaction keeps every log line intact, uvicorn's access lines included."""

from __future__ import annotations

import logging

import pytest
from uvicorn.logging import AccessFormatter

from conveyor_asgi.logging import RedactingFilter

from .support import Client, ServerProcess, http_request

pytestmark = pytest.mark.anyio

TOKEN = "never-in-the-logs-4217"


def test_access_records_keep_their_arguments_for_uvicorns_formatter() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/conveyor/channels?token={TOKEN}", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(record)
    line = AccessFormatter("%(message)s", use_colors=False).format(record)
    assert line == '127.0.0.1:5000 - "GET /conveyor/channels?token=[redacted] HTTP/1.1" 200'


def test_a_secret_split_over_arguments_is_still_masked() -> None:
    record = logging.LogRecord(
        "conveyor_asgi.server",
        logging.INFO,
        __file__,
        1,
        "opened with %s=%s",
        ("token", TOKEN),
        None,
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "opened with token=[redacted]"


async def test_a_real_server_logs_requests_without_errors_or_tokens() -> None:
    with ServerProcess({"CONVEYOR_SERVER_TOKEN": TOKEN}) as server:
        status, _ = http_request("GET", f"{server.http}/conveyor/channels?token={TOKEN}")
        assert status == 200
        client = await Client.connect(f"{server.ws}/?token={TOKEN}")
        await client.close()
        server.stop()
        output = server.output()
    assert "Logging error" not in output
    assert '"GET /conveyor/channels?token=[redacted] HTTP/1.1" 200' in output
    assert TOKEN not in output
