"""PROTOCOL.md section 2: frames from the client, heartbeats, ordering, the size limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from .protocol_helpers import BACKENDS, TOKEN, pool, serve, sync, unique
from .support import Client, ServerProcess

pytestmark = pytest.mark.anyio

LIMIT = 1000


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(
        request, {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_MAX_MESSAGE_BYTES": str(LIMIT)}
    )


def sized_frame(size: int, filler: str = "x") -> str:
    """A base-action frame of exactly ``size`` UTF-8 bytes (``filler`` may be multi-byte)."""
    head = '{"action":"base-action","data":"'
    tail = '"}'
    room = size - len(head.encode()) - len(tail.encode())
    width = len(filler.encode())
    text = head + filler * (room // width) + "x" * (room % width) + tail
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize(
    "raw",
    [
        "ping",
        "pong",
        "{not json",
        '[1, 2, {"action": "x"}]',
        "42",
        '"text"',
        "null",
        "true",
        " ",
        "",
        "12345678901234567890123",
        "NaN",
        "1e999",
    ],
)
async def test_text_that_is_not_a_json_object_is_echoed_as_base_action(server, raw) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.send(raw)
        frame = await client.recv()
        assert frame == {"action": "base-action", "data": raw, "fd": client.fd}


async def test_echo_goes_to_the_sender_only(server) -> None:
    async with pool(server) as clients:
        a = await clients.open()
        b = await clients.open()
        await a.send("ping")
        assert (await a.expect("base-action"))["data"] == "ping"
        await b.silent(0.2)


@pytest.mark.parametrize(
    "payload",
    [b"\x89\x00", b"\x89", b"\xff\xfe\xfd", b"ping", b"[1,2]", b"42", b"", b"null"],
)
async def test_binary_that_is_not_a_json_object_is_ignored(server, payload) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        for _ in range(3):
            await client.send(payload)
        await sync(client)


async def test_heartbeats_never_close_the_connection(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        await client.join(room)
        for i in range(20):
            await client.send(b"\x89\x00")
            if i % 5 == 0:
                await sync(client)
        await client.send({"action": "broadcast-action", "data": "still here"})
        assert (await client.expect("broadcast-action"))["data"] == "still here"


async def test_binary_json_object_is_handled_like_text(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.send(b'{"action":"base-action","data":{"n":1}}')
        assert await client.recv() == {"action": "base-action", "data": {"n": 1}, "fd": client.fd}
        await client.send(json.dumps({"action": "nope"}).encode())
        assert (await client.expect("error"))["code"] == "unknown-action"
        await client.send(json.dumps({"data": 1}).encode())
        assert (await client.expect("error"))["code"] == "missing-action"


@pytest.mark.parametrize("frame", [{}, {"data": 1}, {"action": None}, {"action": None, "data": 2}])
async def test_missing_or_null_action_gets_missing_action(server, frame) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.send(frame)
        error = await client.recv()
        assert error["action"] == "error" and error["code"] == "missing-action"
        assert "action" in error["data"]
        await sync(client)


@pytest.mark.parametrize("action", [5, True, 1.5, [], ["base-action"], {"name": "x"}])
async def test_non_string_action_gets_invalid_field(server, action) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.send({"action": action, "data": 1})
        error = await client.expect("error")
        assert error["code"] == "invalid-field" and "action" in error["data"]
        await sync(client)


@pytest.mark.parametrize("action", ["no-such-action", "", "BASE-ACTION", "base-action ", "é" * 120])
async def test_unknown_action_gets_unknown_action_naming_it(server, action) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        await client.send({"action": action, "data": 1})
        error = await client.expect("error")
        assert error["code"] == "unknown-action"
        assert action[:20] in error["data"]
        await sync(client)


async def test_frames_are_handled_in_arrival_order(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        room = unique()
        frames: list[str] = []
        for i in range(60):
            kind = i % 3
            if kind == 0:
                frames.append(json.dumps({"action": "base-action", "data": i}))
            elif kind == 1:
                frames.append(json.dumps({"action": "broadcast-action", "data": i}))
            else:
                frames.append(json.dumps({"action": "channel-connect", "channel": f"{room}-{i}"}))
        for frame in frames:
            await client.send(frame)
        seen = [(await client.recv())["data"] for _ in range(40)]
        assert seen == [i for i in range(60) if i % 3 != 2]


async def test_message_of_exactly_the_maximum_is_accepted(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        for filler in ("x", "é", "€", "😀"):
            text = sized_frame(LIMIT, filler)
            await client.send(text)
            assert (await client.expect("base-action"))["data"] == json.loads(text)["data"]
        await client.send(b"\x89" * LIMIT)
        await sync(client)


async def expect_close(client: Client, code: int) -> None:
    try:
        while True:
            await client.recv()
    except Exception:
        pass
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == code


@pytest.mark.parametrize(
    "payload",
    [
        sized_frame(LIMIT + 1),
        sized_frame(LIMIT + 1, "é"),
        "é" * (LIMIT // 2 + 1),
        "€" * 400,
        b"\x89\x00" * (LIMIT // 2) + b"\x00",
        ["x" * 600, "y" * 401],
        [b"\x89" * 500, b"\x00" * 501],
    ],
    ids=[
        "text",
        "two-byte-text",
        "two-byte-non-json",
        "three-byte-non-json",
        "binary",
        "fragmented-text",
        "fragmented-binary",
    ],
)
async def test_message_over_the_maximum_closes_with_1009_and_nobody_else_notices(
    server, payload
) -> None:
    async with pool(server) as clients:
        room = unique()
        big = await clients.open()
        other = await clients.open()
        await big.join(room)
        await other.join(room)
        await sync(big)
        await sync(other)
        await big.ws.send(payload)
        await expect_close(big, 1009)
        await sync(other)
        await other.send({"action": "broadcast-action", "data": "after"})
        assert (await other.expect("broadcast-action"))["data"] == "after"
        fresh = await clients.open()
        await sync(fresh)


async def test_fragmented_message_within_the_maximum_is_reassembled(server) -> None:
    async with pool(server) as clients:
        client = await clients.open()
        text = sized_frame(LIMIT)
        await client.ws.send([text[:300], text[300:700], text[700:]])
        assert (await client.expect("base-action"))["data"] == json.loads(text)["data"]
        raw = b'{"action":"base-action","data":"bin"}'
        await client.ws.send([raw[:10], raw[10:]])
        assert (await client.expect("base-action"))["data"] == "bin"
