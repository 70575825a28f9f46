"""PROTOCOL.md section 6: error frames, their codes, and who receives them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from .protocol_helpers import BACKENDS, TOKEN, pool, serve, sync, unique
from .support import ServerProcess, ahttp

pytestmark = pytest.mark.anyio

RATE = 5
BURST = 20


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(
        request,
        {
            "CONVEYOR_SERVER_TOKEN": TOKEN,
            "CONVEYOR_RATE_LIMIT": str(RATE),
            "CONVEYOR_RATE_BURST": str(BURST),
        },
    )


async def mint(server: ServerProcess) -> str:
    status, answer = await ahttp("POST", f"{server.http}/conveyor/auth?token={TOKEN}", {})
    assert status == 200
    return str(answer["auth"])


CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"data": 1}, "missing-action", "action"),
    ({"action": None}, "missing-action", "action"),
    ({"action": "made-up-action"}, "unknown-action", "made-up-action"),
    ({"action": 12}, "invalid-field", "action"),
    ({"action": "broadcast-action"}, "invalid-field", "data"),
    ({"action": "channel-connect", "channel": ""}, "invalid-field", "channel"),
    ({"action": "fanout-action", "data": 1, "auth": "bad"}, "unauthorized", "fanout-action"),
    ({"action": "channel-connect", "channel": "x", "auth": "bad"}, "unauthorized", "channel"),
]


@pytest.mark.parametrize(("frame", "code", "named"), CASES)
async def test_error_frame_goes_to_the_offender_only_and_the_connection_stays_open(
    server, frame, code, named
) -> None:
    async with pool(server) as clients:
        room = unique()
        offender, other = await clients.open(), await clients.open()
        for client in (offender, other):
            await client.join(room)
            await sync(client)
        await offender.send(frame)
        error = await offender.recv()
        assert set(error) == {"action", "code", "data", "fd"}
        assert error["action"] == "error" and error["code"] == code
        assert error["fd"] == offender.fd
        assert isinstance(error["data"], str) and named in error["data"]
        await other.silent(0.2)
        await offender.send({"action": "broadcast-action", "data": "still open"})
        for client in (offender, other):
            assert (await client.expect("broadcast-action"))["data"] == "still open"


async def test_unauthorized_channel_connect_from_a_temporary_token_connection(server) -> None:
    async with pool(server) as clients:
        client = await clients.open(await mint(server))
        await client.join(unique())
        error = await client.expect("error")
        assert error["code"] == "unauthorized"
        await sync(client)


async def test_flooding_gets_rate_limited_errors_and_nobody_else_is_touched(server) -> None:
    async with pool(server) as clients:
        flooder, other = await clients.open(), await clients.open()
        for i in range(BURST + 10):
            await flooder.send({"action": "base-action", "data": i})
        frames = [await flooder.recv() for _ in range(BURST + 10)]
        limited = [f for f in frames if f["action"] == "error"]
        echoed = [f["data"] for f in frames if f["action"] == "base-action"]
        assert limited and echoed[:BURST] == list(range(BURST))
        for error in limited:
            assert error == {
                "action": "error",
                "code": "rate-limited",
                "data": error["data"],
                "fd": flooder.fd,
            }
        await sync(other)
        await asyncio.sleep(1.0)
        await sync(flooder)
