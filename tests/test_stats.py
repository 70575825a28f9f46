"""GET /conveyor/stats: the server's internal counts, behind the server token."""

from __future__ import annotations

import pytest

from .support import Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "stats-token"


async def test_stats_need_the_server_token_and_count_what_the_server_holds(
    server_factory,
) -> None:
    server = server_factory({"CONVEYOR_SERVER_TOKEN": TOKEN})
    status, _ = await ahttp("GET", f"{server.http}/conveyor/stats")
    assert status == 401
    status, _ = await ahttp("GET", f"{server.http}/conveyor/stats?token=wrong")
    assert status == 401

    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    b = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.join("room")
    await a.send("sync")
    await a.expect("base-action")
    status, stats = await ahttp(
        "GET", f"{server.http}/conveyor/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200
    assert stats["connections"] == 2
    assert stats["sockets"] == 2
    assert stats["client_addresses"] == 1
    assert (stats["channels"], stats["members"], stats["lobby"]) == (1, 1, 1)
    assert stats["queued"] == 0 and stats["pending_acks"] == 0
    assert stats["tasks"] > 0 and stats["rss_bytes"] > 0
    await a.close()
    await b.close()
