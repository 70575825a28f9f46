"""An evicted client that never reads is cut off: it holds no socket and no slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from .protocol_helpers import TOKEN
from .support import Client, ahttp
from .test_protocol_presence import _raw_client

pytestmark = pytest.mark.anyio


async def _stats(server) -> dict[str, int]:
    status, stats = await ahttp("GET", f"{server.http}/conveyor/stats?token={TOKEN}")
    assert status == 200, stats
    return stats  # type: ignore[no-any-return]


async def test_an_evicted_non_reader_releases_its_socket_and_connection_slot(
    server_factory,
) -> None:
    server = server_factory(
        {
            "CONVEYOR_SERVER_TOKEN": TOKEN,
            "CONVEYOR_SEND_QUEUE_SIZE": "8",
            "CONVEYOR_MAX_CONNECTIONS": "2",
        }
    )
    url = f"{server.ws}?token={TOKEN}"
    flooder = await Client.connect(url)
    stuck = await asyncio.to_thread(_raw_client, server.port)  # never reads a byte
    try:
        # Both are in no channel, so lobby broadcasts reach the stuck client too.
        blob = "x" * 50_000
        for i in range(400):
            await flooder.send({"action": "broadcast-action", "data": [i, blob]})
            assert (await flooder.expect("broadcast-action"))["data"][0] == i
            if (await _stats(server))["connections"] == 1:
                break
        else:
            raise AssertionError("the client that never reads was never evicted")

        # Evicted: its socket must end too, not linger until TCP gives up.
        deadline = time.monotonic() + 30
        while (await _stats(server))["sockets"] > 1:
            assert time.monotonic() < deadline, "the evicted socket was never cut"
            await asyncio.sleep(0.2)

        # Cut with a reset, not a FIN that would leave megabytes queued in the
        # kernel for a peer that never reads them.
        def drain() -> type[BaseException] | None:
            try:
                while stuck.recv(1 << 16):
                    pass
            except OSError as exc:
                return type(exc)
            return None

        assert await asyncio.to_thread(drain) is ConnectionResetError

        # Its slot is free again: a new client gets in under the limit of two.
        newcomer = await Client.connect(url)
        await newcomer.send("still serving")
        assert (await newcomer.expect("base-action"))["data"] == "still serving"
        await newcomer.close()
    finally:
        stuck.close()
        await flooder.close()
    assert "Traceback" not in server.output()
