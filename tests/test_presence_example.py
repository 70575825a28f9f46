"""The README's presence example, end to end, on both backends."""

from __future__ import annotations

import pytest

from .support import Client

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-server-token"
ENV = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}
USER_A = 255172010152673280
USER_B = 453728974839278943


async def test_two_clients_see_each_other_with_64_bit_user_ids(server_factory) -> None:
    server = server_factory(ENV)
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    b = await Client.connect(f"{server.ws}?token={TOKEN}")

    await a.send({"action": "assoc-user-to-fd-action", "userId": USER_A})
    await a.join("private-notifications", auth=TOKEN)
    first = await a.presence()
    assert first["fds"] == [a.fd]
    assert first["userIds"] == {str(a.fd): USER_A}

    await b.join("private-notifications")
    await b.send({"action": "assoc-user-to-fd-action", "userId": USER_B})
    for client in (a, b):
        joined = await client.presence()
        assert joined["fd"] == b.fd
        assert joined["fds"] == sorted([a.fd, b.fd])
        assert joined["userIds"] == {str(a.fd): USER_A}
        named = await client.presence()
        assert named["userIds"] == {str(a.fd): USER_A, str(b.fd): USER_B}

    await b.send({"action": "broadcast-action", "data": {"hello": "world"}})
    for client in (a, b):
        frame = await client.expect("broadcast-action")
        assert frame == {"action": "broadcast-action", "data": {"hello": "world"}, "fd": b.fd}

    await b.close()
    left = await a.presence("channel-disconnect")
    assert left["fd"] == b.fd
    assert left["fds"] == [a.fd]
    assert left["userIds"] == {str(a.fd): USER_A}
    await a.close()
