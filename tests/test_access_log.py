"""uvicorn's own access lines keep working, with every token redacted."""

from __future__ import annotations

import pytest

from .support import Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "access-log-secret-token"


async def test_access_lines_are_formatted_and_redacted(server_factory) -> None:
    server = server_factory({"CONVEYOR_SERVER_TOKEN": TOKEN})
    status, _ = await ahttp("GET", f"{server.http}/conveyor/channels?token={TOKEN}")
    assert status == 200
    status, _ = await ahttp(
        "GET", f"{server.http}/conveyor/channels", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200
    client = await Client.connect(f"{server.ws}?token={TOKEN}&x=1")
    await client.close()

    log = server.output()
    assert "Logging error" not in log
    assert TOKEN not in log
    assert '"GET /conveyor/channels?token=[redacted] HTTP/1.1" 200' in log
    assert '"WebSocket /?token=[redacted]&x=1" [accepted]' in log
