"""PROTOCOL.md section 5: acknowledgments in both directions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .protocol_helpers import BACKENDS, TOKEN, Pool, pool, serve, unique
from .support import Client, ServerProcess

pytestmark = pytest.mark.anyio

ATTEMPTS = 2
TIMEOUT = 0.4
#: Longer than every re-send of a frame together.
QUIET = TIMEOUT * (ATTEMPTS + 1) + 0.2


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(
        request,
        {
            "CONVEYOR_SERVER_TOKEN": TOKEN,
            "CONVEYOR_USE_PRESENCE": "true",
            "CONVEYOR_USE_ACKNOWLEDGMENT": "true",
            "CONVEYOR_ACKNOWLEDGMENT_ATTEMPTS": str(ATTEMPTS),
            "CONVEYOR_ACKNOWLEDGMENT_TIMEOUT": str(TIMEOUT),
        },
    )


async def ack(client: Client, frame: dict[str, Any]) -> None:
    await client.send({"action": "acknowledge-action", "data": frame["id"]})


async def opened(clients: Pool) -> Client:
    """A client whose connection-info (which carries an id) is acknowledged."""
    client = await clients.open(info=False)
    info = await client.expect("connection-info")
    assert isinstance(info["id"], str) and info["id"]
    assert set(info) == {"action", "data", "id"}
    client.fd = json.loads(info["data"])["fd"]
    await ack(client, info)
    return client


async def acked(client: Client, action: str) -> dict[str, Any]:
    frame = await client.expect(action)
    assert "id" in frame, frame
    await ack(client, frame)
    return frame


async def test_client_message_with_an_id_is_acknowledged_to_its_sender(server) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        other = await opened(clients)
        for msg_id in ("3f2a-uuid", 17, 2**70):
            await client.send({"action": "base-action", "data": "x", "id": msg_id})
            first, second = await client.recv(), await client.recv()
            reply = first if first["action"] == "acknowledge-action" else second
            echo = second if reply is first else first
            assert reply == {"action": "acknowledge-action", "data": msg_id}
            assert echo["action"] == "base-action" and echo["data"] == "x"
            await ack(client, echo)
        await client.silent(QUIET)  # acknowledgment replies are never sent again
        await other.silent(0.05)


async def test_message_without_an_id_gets_no_acknowledgment(server) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        await client.send({"action": "base-action", "data": "x"})
        await acked(client, "base-action")
        await client.silent(QUIET)


@pytest.mark.parametrize("msg_id", [True, 1.5, [1], {"id": 1}])
async def test_client_id_of_the_wrong_type_is_invalid_field(server, msg_id) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        await client.send({"action": "base-action", "data": "x", "id": msg_id})
        error = await acked(client, "error")
        assert error["code"] == "invalid-field" and "id" in error["data"]


async def test_every_pushed_frame_carries_an_id(server) -> None:
    async with pool(server) as clients:
        room = unique()
        client = await opened(clients)
        await client.send({"action": "nope"})
        await acked(client, "error")
        await client.join(room)
        await acked(client, "channel-connect")
        await client.send({"action": "broadcast-action", "data": 1})
        await acked(client, "broadcast-action")
        await client.send({"action": "base-action", "data": 1})
        await acked(client, "base-action")
        await client.send({"action": "fanout-action", "data": 1})
        await acked(client, "fanout-action")
        await client.silent(QUIET)


async def test_one_message_has_one_id_for_all_its_recipients(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await opened(clients), await opened(clients)
        await a.join(room)
        await acked(a, "channel-connect")
        await b.join(room)
        join_ids = {(await acked(c, "channel-connect"))["id"] for c in (a, b)}
        assert len(join_ids) == 1
        await a.send({"action": "broadcast-action", "data": "same"})
        ids = {(await acked(c, "broadcast-action"))["id"] for c in (a, b)}
        assert len(ids) == 1
        await a.send({"action": "broadcast-action", "data": "next"})
        next_ids = {(await acked(c, "broadcast-action"))["id"] for c in (a, b)}
        assert len(next_ids) == 1 and next_ids != ids


async def test_unacknowledged_frame_arrives_attempts_plus_one_times(server) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        await client.send({"action": "base-action", "data": "again"})
        raws = [await client.ws.recv() for _ in range(ATTEMPTS + 1)]
        assert len(set(raws)) == 1
        assert json.loads(raws[0])["data"] == "again"
        await client.silent(QUIET)


async def test_unacknowledged_connection_info_is_sent_again(server) -> None:
    async with pool(server) as clients:
        client = await clients.open(info=False)
        frames = [await client.expect("connection-info") for _ in range(ATTEMPTS + 1)]
        assert len({f["id"] for f in frames}) == 1
        await client.silent(QUIET)


async def test_acknowledgment_stops_the_re_sends(server) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        await client.send({"action": "base-action", "data": "once"})
        first = await client.expect("base-action")
        await client.ws.recv()  # arrives again after one timeout
        await ack(client, first)
        await client.silent(QUIET)


async def test_acknowledging_unknown_ids_changes_nothing(server) -> None:
    async with pool(server) as clients:
        client = await opened(clients)
        for msg_id in ("never-sent", 12345):
            await client.send({"action": "acknowledge-action", "data": msg_id})
        await client.send({"action": "base-action", "data": "ok"})
        await acked(client, "base-action")
        await client.silent(QUIET)


async def test_closing_with_pending_acknowledgments_disturbs_no_one(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await opened(clients), await opened(clients)
        await a.join(room)
        await acked(a, "channel-connect")
        await b.join(room)
        await acked(a, "channel-connect")
        await b.expect("channel-connect")  # never acknowledged
        await b.close()
        left = await acked(a, "channel-disconnect")
        assert json.loads(left["data"])["fd"] == b.fd
        await a.silent(QUIET)


async def test_listeners_never_hold_back_re_sent_connection_info_or_ack_replies(server) -> None:
    async with pool(server) as clients:
        client = await clients.open(info=False)
        info = await client.expect("connection-info")
        await client.send({"action": "add-listener", "listen": "custom", "id": "l1"})
        assert await client.recv() == {"action": "acknowledge-action", "data": "l1"}
        again = await client.expect("connection-info")  # sent again, listener or not
        assert again == info
        await ack(client, info)
        await client.send({"action": "broadcast-action", "data": "filtered", "id": 9})
        assert await client.recv() == {"action": "acknowledge-action", "data": 9}
        await client.silent(QUIET)
