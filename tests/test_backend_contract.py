"""The backend contract (backends/base.py), checked against both backends in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conveyor_asgi.backends.base import Backend
from conveyor_asgi.types import ChannelInfo, Delivery, PresenceChange, TokenGrant

from .backend_support import RecordingNode, make_backend

pytestmark = pytest.mark.anyio

BIG = 453728974839278943
WIDER_THAN_64_BITS = 2**70 + 1


@pytest.fixture(params=["memory", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Backend, RecordingNode]]:
    """A started backend of each kind and the node it calls back."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    backend = make_backend(request.param, url)
    node = RecordingNode()
    await backend.start(node)
    try:
        yield backend, node
    finally:
        await backend.stop()


async def test_connection_ids_are_positive_and_never_repeat(pair) -> None:
    backend, _ = pair
    ids = await asyncio.gather(*(backend.next_connection_id() for _ in range(60)))
    assert len(set(ids)) == 60
    assert all(isinstance(i, int) and i > 0 for i in ids)


async def test_join_and_leave_announce_the_roster_right_after_the_change(pair) -> None:
    backend, node = pair
    await backend.join("room", 1, 42, announce=True)
    assert await node.next_presence() == PresenceChange("join", "room", 1, ((1, 42),))
    await backend.join("room", 2, "42", announce=True)
    assert await node.next_presence() == PresenceChange("join", "room", 2, ((1, 42), (2, "42")))
    await backend.leave("room", 1, announce=True)
    assert await node.next_presence() == PresenceChange("leave", "room", 1, ((2, "42"),))


async def test_changes_of_one_channel_are_announced_in_mutation_order(pair) -> None:
    backend, node = pair
    for fd in range(1, 21):
        await backend.join("room", fd, None, announce=True)
    for fd in range(1, 11):
        await backend.leave("room", fd, announce=True)
    seen = [await node.next_presence() for _ in range(30)]
    assert [(c.kind, c.fd) for c in seen] == (
        [("join", fd) for fd in range(1, 21)] + [("leave", fd) for fd in range(1, 11)]
    )
    assert [len(c.members) for c in seen] == list(range(1, 21)) + list(range(19, 9, -1))
    assert seen[-1].members == tuple((fd, None) for fd in range(11, 21))


async def test_without_announce_state_changes_silently(pair) -> None:
    backend, node = pair
    await backend.join("quiet", 5, "u", announce=False)
    assert await backend.members("quiet") == {5: "u"}
    await backend.leave("quiet", 5, announce=False)
    assert await backend.members("quiet") == {}
    await node.quiet()


async def test_leaving_a_channel_one_is_not_in_changes_nothing(pair) -> None:
    backend, node = pair
    await backend.join("room", 1, None, announce=True)
    await node.next_presence()
    await backend.leave("room", 2, announce=True)
    await backend.leave("elsewhere", 1, announce=True)
    await node.quiet()
    assert await backend.members("room") == {1: None}


async def test_a_new_user_id_is_announced_as_a_join_with_every_digit(pair) -> None:
    backend, node = pair
    await backend.join("room", 3, None, announce=True)
    await backend.join("room", 3, WIDER_THAN_64_BITS, announce=True)
    await backend.join("room", 4, BIG, announce=True)
    await node.next_presence()
    assert (await node.next_presence()).members == ((3, WIDER_THAN_64_BITS),)
    assert (await node.next_presence()).members == ((3, WIDER_THAN_64_BITS), (4, BIG))
    assert await backend.members("room") == {3: WIDER_THAN_64_BITS, 4: BIG}


async def test_members_are_ascending_and_keep_user_id_types(pair) -> None:
    backend, _ = pair
    for fd, user in [(30, "30"), (4, 4), (100, None), (7, "é ünïcode")]:
        await backend.join("mixed", fd, user, announce=False)
    members = await backend.members("mixed")
    assert list(members.items()) == [(4, 4), (7, "é ünïcode"), (30, "30"), (100, None)]
    assert type(members[4]) is int and type(members[30]) is str


async def test_channels_count_connections_and_distinct_users_by_type(pair) -> None:
    backend, _ = pair
    await backend.join("a", 1, 7, announce=False)
    await backend.join("a", 2, "7", announce=False)
    await backend.join("a", 3, 7, announce=False)
    await backend.join("a", 4, None, announce=False)
    await backend.join("b", 5, None, announce=False)
    infos = sorted(await backend.channels(), key=lambda i: i.channel)
    assert infos == [ChannelInfo("a", 4, 2), ChannelInfo("b", 1, 0)]


async def test_an_emptied_channel_no_longer_exists(pair) -> None:
    backend, _ = pair
    await backend.join("gone", 1, None, announce=False)
    await backend.leave("gone", 1, announce=False)
    assert await backend.members("gone") == {}
    assert all(info.channel != "gone" for info in await backend.channels())


async def test_a_token_is_taken_once(pair) -> None:
    backend, _ = pair
    grant = TokenGrant(None, BIG)
    await backend.store_token("t-once", grant, 60)
    assert await backend.take_token("t-once") == grant
    assert await backend.take_token("t-once") is None
    assert await backend.take_token("never-stored") is None


async def test_a_channel_token_is_used_up_only_by_its_channel(pair) -> None:
    backend, _ = pair
    await backend.store_token("t-room", TokenGrant("room", "alice"), 60)
    assert await backend.take_token("t-room", "other") is None
    assert await backend.take_token("t-room", "room") == TokenGrant("room", "alice")
    assert await backend.take_token("t-room", "room") is None


async def test_an_unbound_token_is_not_used_up_for_a_channel(pair) -> None:
    backend, _ = pair
    await backend.store_token("t-free", TokenGrant(None, None), 60)
    assert await backend.take_token("t-free", "room") is None
    assert await backend.take_token("t-free") == TokenGrant(None, None)


async def test_an_expired_token_is_refused(pair) -> None:
    backend, _ = pair
    await backend.store_token("t-short", TokenGrant("room", 1), 1)
    await asyncio.sleep(1.3)
    assert await backend.take_token("t-short") is None


async def test_deliveries_from_one_node_arrive_in_order_and_intact(pair) -> None:
    backend, node = pair
    sent = [
        Delivery(
            "channel",
            "room",
            "broadcast-action",
            f'{{"n":{i},"s":"a\\nb"}}\n',
            i % 2 == 0,
            f"id-{i}" if i % 3 else None,
        )
        for i in range(50)
    ]
    sent += [
        Delivery("lobby", None, "x", "{}", True, None),
        Delivery("all", None, "fanout-action", '"é"', True, None),
    ]
    for delivery in sent:
        await backend.publish(delivery)
    assert [await node.next() for _ in sent] == sent


async def test_concurrent_publishes_all_arrive(pair) -> None:
    backend, node = pair
    deliveries = [Delivery("all", None, "a", str(i)) for i in range(200)]
    await asyncio.gather(*(backend.publish(d) for d in deliveries))
    received = [await node.next() for _ in deliveries]
    assert sorted(d.text for d in received) == sorted(d.text for d in deliveries)


async def test_a_healthy_backend_says_so(pair) -> None:
    backend, _ = pair
    assert await backend.healthy() is True
