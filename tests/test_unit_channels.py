"""ChannelManager and Connection, on the real memory backend."""

from __future__ import annotations

import asyncio
import json

import pytest

from conveyor_asgi.errors import CLOSE_TRY_AGAIN_LATER

from .unit_helpers import connect, make_manager, settle

pytestmark = pytest.mark.anyio


async def test_join_announces_to_every_member_with_ascending_fds() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra), (b, rb), (c, rc) = [await connect(manager) for _ in range(3)]
    await manager.join(c, "room")
    await manager.join(a, "room")
    await manager.set_user(c, 453728974839278943)
    await manager.join(b, "room")
    await settle()
    last = (
        "channel-connect",
        {
            "fd": b.fd,
            "event": "channel-presence",
            "channel": "room",
            "fds": [a.fd, b.fd, c.fd],
            "userIds": {str(c.fd): 453728974839278943},
        },
    )
    for recorder in (ra, rb, rc):
        assert recorder.presence()[-1] == last
    assert len(rc.presence()) == 4 and len(ra.presence()) == 3 and len(rb.presence()) == 1


async def test_presence_off_sends_no_presence() -> None:
    manager = await make_manager()
    (a, ra), (b, rb) = await connect(manager), await connect(manager)
    await manager.join(a, "room")
    await manager.join(b, "room")
    await manager.set_user(b, 1)
    await manager.leave(b)
    await manager.remove(a)
    await settle()
    assert ra.presence() == [] and rb.presence() == []


async def test_leave_is_announced_to_the_others_only() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra), (b, rb) = await connect(manager), await connect(manager)
    await manager.join(a, "room")
    await manager.join(b, "room")
    await settle()
    ra.clear()
    rb.clear()
    await manager.leave(b)
    await settle()
    assert ra.presence() == [
        (
            "channel-disconnect",
            {
                "fd": b.fd,
                "event": "channel-presence",
                "channel": "room",
                "fds": [a.fd],
                "userIds": {},
            },
        )
    ]
    assert rb.frames == []
    assert manager.stats()["lobby"] == 1 and b.channel is None


async def test_switching_channels_leaves_then_joins() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra), (b, rb), (m, rm) = [await connect(manager) for _ in range(3)]
    await manager.join(a, "old")
    await manager.join(b, "new")
    await manager.join(m, "old")
    await settle()
    for recorder in (ra, rb, rm):
        recorder.clear()
    await manager.join(m, "new")
    await settle()
    assert [(k, d["channel"], d["fds"]) for k, d in ra.presence()] == [
        ("channel-disconnect", "old", [a.fd])
    ]
    assert [(k, d["channel"], d["fds"]) for k, d in rm.presence()] == [
        ("channel-connect", "new", [b.fd, m.fd])
    ]
    assert rb.presence() == rm.presence()
    assert await manager.channel_members("old") == {a.fd: None}


async def test_joining_the_same_channel_again_changes_nothing() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra) = await connect(manager)
    await manager.join(a, "room")
    await settle()
    ra.clear()
    await manager.join(a, "room")
    await settle()
    assert ra.frames == []
    assert await manager.channel_members("room") == {a.fd: None}


async def test_user_ids_compare_by_value_and_type() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra) = await connect(manager)
    await manager.join(a, "room")
    for user in (42, "42", "42", 42, 42):
        await manager.set_user(a, user)
    await settle()
    users = [d["userIds"] for _, d in ra.presence()]
    assert users == [{}, {str(a.fd): 42}, {str(a.fd): "42"}, {str(a.fd): 42}]
    infos = await manager.channels()
    assert [(i.channel, i.connections, i.users) for i in infos] == [("room", 1, 1)]


async def test_users_count_distinct_ids_by_value_and_type() -> None:
    manager = await make_manager()
    for user in (7, "7", 7, None):
        conn, _ = await connect(manager)
        if user is not None:
            await manager.set_user(conn, user)
        await manager.join(conn, "room")
    assert [(i.connections, i.users) for i in await manager.channels()] == [(4, 2)]


async def test_remove_cleans_up_everything_and_is_idempotent() -> None:
    manager = await make_manager(use_presence=True, use_acknowledgment=True)
    (a, ra), (b, _) = await connect(manager), await connect(manager)
    await manager.join(a, "room")
    await manager.join(b, "room")
    await manager.set_user(b, "bob")
    b.listeners = {"x"}
    await settle()
    assert manager.stats()["pending_acks"] > 0
    await manager.remove(b)
    await manager.remove(b)
    await settle()
    assert b.closed and b.pending_acks == 0 and b.queued == 0
    assert await manager.channel_members("room") == {a.fd: None}
    stats = manager.stats()
    assert stats["connections"] == 1 and stats["members"] == 1 and stats["lobby"] == 0
    left = [d for k, d in ra.presence() if k == "channel-disconnect"]
    assert len(left) == 1 and left[0]["fd"] == b.fd
    await manager.remove(a)
    assert manager.stats() == {
        "connections": 0,
        "channels": 0,
        "members": 0,
        "lobby": 0,
        "queued": 0,
        "pending_acks": 0,
    }
    assert await manager.channels() == []


async def test_broadcast_targets_the_channel_or_the_lobby() -> None:
    manager = await make_manager()
    pairs = [await connect(manager) for _ in range(4)]
    (a, ra), (b, rb), (c, rc), (_, rd) = pairs
    await manager.join(a, "room")
    await manager.join(b, "room")
    await manager.broadcast_from(a, "broadcast-action", {"x": 1})
    await manager.broadcast_from(c, "broadcast-action", 2)
    await settle()
    in_room = f'{{"action":"broadcast-action","data":{{"x":1}},"fd":{a.fd}}}'
    in_lobby = f'{{"action":"broadcast-action","data":2,"fd":{c.fd}}}'
    assert ra.texts == rb.texts == [in_room]
    assert rc.texts == rd.texts == [in_lobby]


async def test_each_frame_is_encoded_once_for_every_recipient() -> None:
    manager = await make_manager()
    recorders = []
    for _ in range(3):
        conn, recorder = await connect(manager)
        await manager.join(conn, "room")
        recorders.append(recorder)
    await manager.publish("room", "broadcast-action", [1, 2, 3])
    await manager.fanout("fanout-action", "all", None)
    await settle()
    for index in range(2):
        texts = [recorder.texts[index] for recorder in recorders]
        assert all(text is texts[0] for text in texts)


async def test_http_publish_and_fanout_carry_no_fd_unless_given() -> None:
    manager = await make_manager()
    (a, ra), (_, rb) = await connect(manager), await connect(manager)
    await manager.join(a, "room")
    await manager.publish("room", "broadcast-action", 2**70)
    await manager.fanout("fanout-action", "f", None)
    await settle()
    assert ra.frames == [
        {"action": "broadcast-action", "data": 2**70},
        {"action": "fanout-action", "data": "f"},
    ]
    assert rb.frames == [{"action": "fanout-action", "data": "f"}]


async def test_listeners_filter_traffic_but_not_replies_errors_or_presence() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra), (b, rb) = await connect(manager), await connect(manager)
    a.listeners = {"custom"}
    await manager.join(a, "room")
    await manager.join(b, "room")
    await manager.broadcast_from(b, "broadcast-action", 1)
    await manager.broadcast_from(a, "broadcast-action", 1)
    await manager.fanout("fanout-action", 2, a.fd)
    await manager.publish("room", "broadcast-action", 3)
    await manager.publish("room", "custom", 4, b.fd)
    manager.reply(a, "base-action", 5)
    manager.error(a, "unknown-action", "nope")
    await settle()
    assert ra.actions() == ["channel-connect", "channel-connect", "custom", "base-action", "error"]
    assert rb.actions().count("broadcast-action") == 3


async def test_full_send_queue_evicts_and_announces_the_leave() -> None:
    manager = await make_manager(use_presence=True)
    (a, ra) = await connect(manager)
    (slow, rslow) = await connect(manager, queue_limit=3)
    await manager.join(a, "room")
    await manager.join(slow, "room")
    await settle()
    rslow.hold()
    for i in range(10):
        await manager.publish("room", "broadcast-action", i)
        await settle()
    await settle()
    assert slow.closed and slow.fd not in manager.connections
    assert rslow.close_codes == [CLOSE_TRY_AGAIN_LATER]
    assert await manager.channel_members("room") == {a.fd: None}
    left = [d for k, d in ra.presence() if k == "channel-disconnect"]
    assert [(d["fd"], d["fds"]) for d in left] == [(slow.fd, [a.fd])]
    assert [f["data"] for f in ra.frames if f["action"] == "broadcast-action"] == list(range(10))


async def test_message_ids_are_unique_and_only_with_acknowledgments() -> None:
    assert (await make_manager()).new_msg_id() is None
    manager = await make_manager(use_acknowledgment=True)
    ids = {manager.new_msg_id() for _ in range(100)}
    assert len(ids) == 100 and None not in ids


async def test_unacknowledged_frames_are_sent_attempts_plus_one_times() -> None:
    manager = await make_manager(
        use_acknowledgment=True, acknowledgment_attempts=2, acknowledgment_timeout=0.02
    )
    (a, ra) = await connect(manager)
    manager.reply(a, "base-action", "x")
    await asyncio.sleep(0.15)
    assert len(ra.texts) == 3 and len(set(ra.texts)) == 1
    assert a.pending_acks == 0
    msg_id = json.loads(ra.texts[0])["id"]
    assert isinstance(msg_id, str)


async def test_acknowledging_stops_re_sends_and_close_drops_pending() -> None:
    manager = await make_manager(
        use_acknowledgment=True, acknowledgment_attempts=3, acknowledgment_timeout=0.02
    )
    (a, ra) = await connect(manager)
    manager.reply(a, "base-action", "x")
    manager.reply(a, "base-action", "y")
    await settle()
    first = ra.frames[0]["id"]
    a.acknowledge(first)
    a.acknowledge("unknown")
    a.acknowledge(["unhashable"])
    assert a.pending_acks == 1
    await manager.remove(a)
    assert a.pending_acks == 0
    await asyncio.sleep(0.1)
    assert len(ra.texts) == 2


async def test_presence_hook_shapes_the_payload() -> None:
    manager = await make_manager(use_presence=True)
    manager.presence_hook = lambda payload, channel: {**payload, "room": channel.upper()}
    (a, ra) = await connect(manager)
    await manager.join(a, "lobby")
    await settle()
    assert ra.presence()[0][1]["room"] == "LOBBY"


async def test_close_all_closes_every_socket() -> None:
    manager = await make_manager(use_presence=True)
    pairs = [await connect(manager) for _ in range(3)]
    for conn, _ in pairs:
        await manager.join(conn, "room")
    await manager.close_all(1012)
    for conn, recorder in pairs:
        assert conn.closed and recorder.close_codes == [1012]
    assert manager.stats()["connections"] == 0
