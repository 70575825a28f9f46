"""PROTOCOL.md section 4 (and appendix A's orders): presence updates, end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor_asgi.errors import CLOSE_TRY_AGAIN_LATER

from .protocol_helpers import BACKENDS, TOKEN, pool, serve, sync, unique
from .support import HOST, Client, ServerProcess

pytestmark = pytest.mark.anyio

USER_A = 255172010152673280
USER_B = 453728974839278943


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    yield from serve(request, {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"})


def check_frame(frame: dict[str, Any], action: str) -> dict[str, Any]:
    """The presence envelope is exactly ``{"action", "data"}`` with ``data`` a JSON string."""
    assert set(frame) == {"action", "data"}, frame
    assert frame["action"] == action
    assert isinstance(frame["data"], str)
    data = json.loads(frame["data"])
    assert set(data) == {"fd", "event", "channel", "fds", "userIds"}, data
    assert data["event"] == "channel-presence"
    assert data["fds"] == sorted(data["fds"])
    assert all(isinstance(key, str) for key in data["userIds"])
    return data  # type: ignore[no-any-return]


async def update(client: Client, action: str = "channel-connect") -> dict[str, Any]:
    return check_frame(await client.recv(), action)


async def test_join_is_announced_to_every_member_including_the_joiner(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b, c = [await clients.open() for _ in range(3)]
        await a.join(room)
        first = await update(a)
        assert first == {
            "fd": a.fd,
            "event": "channel-presence",
            "channel": room,
            "fds": [a.fd],
            "userIds": {},
        }
        await c.join(room)
        for client in (a, c):
            assert await update(client) == {
                "fd": c.fd,
                "event": "channel-presence",
                "channel": room,
                "fds": [a.fd, c.fd],
                "userIds": {},
            }
        await b.join(room)  # b's id lies between a's and c's: fds stay ascending
        for client in (a, b, c):
            data = await update(client)
            assert data["fd"] == b.fd and data["fds"] == sorted([a.fd, b.fd, c.fd])


async def test_members_of_other_channels_and_no_channel_hear_nothing(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, other, lobby = [await clients.open() for _ in range(3)]
        await other.join(unique())
        await update(other)
        await a.join(room)
        await update(a)
        await a.send({"action": "channel-disconnect"})
        await other.silent(0.2)
        await lobby.silent(0.05)


async def test_channel_disconnect_is_announced_to_the_others_only(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await clients.open(), await clients.open()
        await a.join(room)
        await update(a)
        await b.join(room)
        await update(a)
        await update(b)
        await b.send({"action": "assoc-user-to-fd-action", "userId": "bob"})
        await update(a)
        await update(b)
        await b.send({"action": "channel-disconnect"})
        left = await update(a, "channel-disconnect")
        assert left == {
            "fd": b.fd,
            "event": "channel-presence",
            "channel": room,
            "fds": [a.fd],
            "userIds": {},
        }
        await sync(b)  # the leaver gets no leave update


async def test_switching_channels_announces_leave_then_join(server) -> None:
    async with pool(server) as clients:
        old, new = unique(), unique()
        a, b, mover = [await clients.open() for _ in range(3)]
        for client, channel in ((a, old), (b, new)):
            await client.join(channel)
            await update(client)
        await mover.join(old)
        await update(a)
        await update(mover)
        await mover.join(new)
        left = await update(a, "channel-disconnect")
        assert left["fd"] == mover.fd and left["fds"] == [a.fd] and left["channel"] == old
        for client in (b, mover):
            data = await update(client)
            assert data["fd"] == mover.fd and data["channel"] == new
            assert data["fds"] == sorted([b.fd, mover.fd])
        await sync(mover)  # no leave update for the mover itself


async def test_connecting_to_the_same_channel_again_announces_nothing(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await clients.open(), await clients.open()
        await a.join(room)
        await update(a)
        await b.join(room)
        await update(a)
        await update(b)
        await b.join(room)
        await b.join(room, auth=TOKEN)
        await sync(b)
        await a.silent(0.2)


@pytest.mark.parametrize("how", ["close", "drop"])
async def test_socket_ending_announces_a_leave(server, how: str) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b, c = [await clients.open() for _ in range(3)]
        for client in (a, b, c):
            await client.join(room)
        for count, client in ((3, a), (2, b), (1, c)):
            for _ in range(count):
                await update(client)
        await c.send({"action": "assoc-user-to-fd-action", "userId": USER_A})
        for client in (a, b, c):
            await update(client)
        if how == "close":
            await b.close()
        else:
            b.drop()
        for client in (a, c):
            left = await update(client, "channel-disconnect")
            assert left == {
                "fd": b.fd,
                "event": "channel-presence",
                "channel": room,
                "fds": sorted([a.fd, c.fd]),
                "userIds": {str(c.fd): USER_A},
            }


async def test_user_id_changes_are_announced_and_repeats_are_not(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await clients.open(), await clients.open()
        await a.join(room)
        await update(a)
        await b.join(room)
        await update(a)
        await update(b)
        for user in (42, "42", USER_B):
            await b.send({"action": "assoc-user-to-fd-action", "userId": user})
            for client in (a, b):
                data = await update(client)
                assert data["fd"] == b.fd and data["userIds"] == {str(b.fd): user}
                assert type(data["userIds"][str(b.fd)]) is type(user)
        await b.send({"action": "assoc-user-to-fd-action", "userId": USER_B})
        await sync(b)
        await a.silent(0.2)


async def test_user_id_associated_outside_a_channel_is_announced_on_join(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a = await clients.open()
        await a.send({"action": "assoc-user-to-fd-action", "userId": "early"})
        await sync(a)
        await a.join(room)
        assert (await update(a))["userIds"] == {str(a.fd): "early"}


async def test_both_orders_end_with_every_member_seeing_both_user_ids(server) -> None:
    """Appendix A: the npm client sends assoc then connect (with auth) without waiting;
    the hand-written example sends connect then assoc (no auth)."""
    async with pool(server) as clients:
        room = unique()
        a = await clients.open(info=False)
        await a.send({"action": "assoc-user-to-fd-action", "userId": USER_A})
        await a.send({"action": "channel-connect", "channel": room, "auth": TOKEN})
        b = await clients.open(info=False)
        await b.send({"action": "channel-connect", "channel": room})
        await b.send({"action": "assoc-user-to-fd-action", "userId": "user-b"})
        for client in (a, b):
            info = await client.expect("connection-info")
            client.fd = json.loads(info["data"])["fd"]
        expected = {str(a.fd): USER_A, str(b.fd): "user-b"}
        for client in (a, b):
            data = await update(client)
            while data["userIds"] != expected:
                data = await update(client)
            assert data["fds"] == sorted([a.fd, b.fd])  # type: ignore[type-var]
        for client in (a, b):
            await client.silent(0.2)


async def test_presence_arrives_through_listeners(server) -> None:
    async with pool(server) as clients:
        room = unique()
        a, b = await clients.open(), await clients.open()
        await a.send({"action": "add-listener", "listen": "custom"})
        await a.join(room)
        await update(a)
        await b.join(room)
        assert (await update(a))["fd"] == b.fd
        await b.close()
        assert (await update(a, "channel-disconnect"))["fd"] == b.fd


# -- eviction of a client that never reads ---------------------------------------------


def _masked(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + size.to_bytes(2, "big")
    header = b"\x81" + length
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_client(port: int) -> socket.socket:
    """A WebSocket client on a bare socket with a tiny receive buffer that we never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /?token={TOKEN} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _close_code(sock: socket.socket) -> int | None:
    """Read every frame left on ``sock`` and return the close frame's code."""
    buffer = bytearray()
    while True:
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            offset = 2
            if size == 126:
                size, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + size:
                break
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")
        chunk = sock.recv(1 << 20)
        if not chunk:
            return None
        buffer += chunk


async def test_a_client_that_never_reads_is_evicted_and_others_keep_receiving(
    server_factory,
) -> None:
    server = server_factory(
        {
            "CONVEYOR_SERVER_TOKEN": TOKEN,
            "CONVEYOR_USE_PRESENCE": "true",
            "CONVEYOR_SEND_QUEUE_SIZE": "8",
        }
    )
    room = unique()
    async with pool(server) as clients:
        a, b = await clients.open(), await clients.open()
        for client in (a, b):
            await client.join(room)
        await update(a)
        await update(a)
        await update(b)
        slow = await asyncio.to_thread(_raw_client, server.port)
        try:
            await asyncio.to_thread(
                slow.sendall, _masked(json.dumps({"action": "channel-connect", "channel": room}))
            )
            slow_fd = (await update(a))["fd"]
            await update(b)
            blob = "x" * 50_000
            left: dict[str, Any] | None = None
            for i in range(400):
                await a.send({"action": "broadcast-action", "data": [i, blob]})
                for client in (a, b):
                    while True:
                        frame = await client.recv()
                        if frame["action"] == "broadcast-action":
                            assert frame["data"][0] == i
                            break
                        data = check_frame(frame, "channel-disconnect")
                        if client is a:
                            left = data
                if left is not None:
                    break
            assert left is not None, "the slow client was never evicted"
            assert left["fd"] == slow_fd and left["fds"] == sorted([a.fd, b.fd])
            await b.send({"action": "broadcast-action", "data": "after"})
            for client in (a, b):
                assert (await client.expect("broadcast-action"))["data"] == "after"
            code = await asyncio.to_thread(_close_code, slow)
            assert code == CLOSE_TRY_AGAIN_LATER
        finally:
            slow.close()
    output = server.output()
    assert f"evicting connection {slow_fd}" in output
    assert TOKEN not in output
