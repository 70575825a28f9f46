"""The ActionRouter and the built-in actions, with a real manager and connections."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from conveyor_asgi.actions import ActionContext, ActionRouter, valid_channel_name, valid_user_id
from conveyor_asgi.channels import ChannelManager
from conveyor_asgi.errors import ActionError
from conveyor_asgi.types import TokenGrant

from .unit_helpers import Recorder, connect, make_manager, settle

pytestmark = pytest.mark.anyio

TOKEN = "server-token"


async def setup(**settings: Any) -> tuple[ChannelManager, ActionRouter]:
    manager = await make_manager(**settings)
    return manager, ActionRouter(manager)


async def last(recorder: Recorder) -> dict[str, Any]:
    await settle()
    return recorder.frames[-1]


@pytest.mark.parametrize("name", ["a", "room", "a" * 200, "é" * 200, "😀", "sp ace", "\u200b"])
def test_valid_channel_names(name: str) -> None:
    assert valid_channel_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 201,
        "\x00",
        "\x1f",
        "\x7f",
        "\x85",
        "\x9f",
        "a\nb",
        "\ud800",
        1,
        None,
        True,
        ["a"],
        {"a": 1},
    ],
)
def test_invalid_channel_names(name: object) -> None:
    assert not valid_channel_name(name)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (-1, True),
        (2**80, True),
        ("x", True),
        ("42", True),
        ("", False),
        (True, False),
        (False, False),
        (1.0, False),
        (None, False),
        ([], False),
        ({}, False),
    ],
)
def test_valid_user_ids(value: object, ok: bool) -> None:
    assert valid_user_id(value) is ok


@pytest.mark.parametrize("raw", ["ping", "[1]", "42", "null", '"s"', "{bad"])
async def test_text_that_is_not_an_object_is_echoed(raw: str) -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)
    await router.handle_frame(conn, raw)
    assert await last(rec) == {"action": "base-action", "data": raw, "fd": conn.fd}


@pytest.mark.parametrize("raw", [b"\x89\x00", b"\xff", b"[1]", b"ping", b""])
async def test_binary_that_is_not_an_object_is_ignored(raw: bytes) -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)
    await router.handle_frame(conn, raw)
    await settle()
    assert rec.frames == [] and not conn.closed


@pytest.mark.parametrize(
    "raw",
    [
        '{"action":"broadcast-action","data":"cut \\ud83d"}',
        '{"action":"broadcast-action","data":["\\udc00", 12345678901234567890123]}',
    ],
)
async def test_lone_surrogate_escapes_are_json_like_any_other(raw: str) -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)
    await router.handle_frame(conn, raw)
    frame = await last(rec)
    assert frame["action"] == "broadcast-action"
    assert frame["data"] == json.loads(raw)["data"]
    assert rec.texts[-1].isascii()


async def test_binary_object_is_routed() -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)
    await router.handle_frame(conn, b'{"action":"base-action","data":1}')
    assert await last(rec) == {"action": "base-action", "data": 1, "fd": conn.fd}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({}, "missing-action"),
        ({"action": None}, "missing-action"),
        ({"action": 1}, "invalid-field"),
        ({"action": []}, "invalid-field"),
        ({"action": "nope"}, "unknown-action"),
        ({"action": "base-action"}, "invalid-field"),
        ({"action": "channel-connect", "channel": "\x85"}, "invalid-field"),
        ({"action": "assoc-user-to-fd-action", "userId": 1.5}, "invalid-field"),
        ({"action": "fanout-action", "data": 1, "auth": "wrong"}, "unauthorized"),
    ],
)
async def test_bad_messages_get_error_frames(message: dict[str, Any], code: str) -> None:
    manager, router = await setup(server_token=TOKEN)
    conn, rec = await connect(manager, token=TOKEN)
    await router.route(conn, message)
    error = await last(rec)
    assert error["action"] == "error" and error["code"] == code and error["fd"] == conn.fd


async def test_channel_connect_with_a_temporary_token_consumes_it() -> None:
    manager, router = await setup(server_token=TOKEN)
    await manager.backend.store_token("tmp", TokenGrant(channel="room"), 60)
    (a, ra), (b, rb) = await connect(manager, token=TOKEN), await connect(manager, token=TOKEN)
    await router.route(a, {"action": "channel-connect", "channel": "other", "auth": "tmp"})
    assert (await last(ra))["code"] == "unauthorized"
    await router.route(a, {"action": "channel-connect", "channel": "room", "auth": "tmp"})
    await router.route(b, {"action": "channel-connect", "channel": "room", "auth": "tmp"})
    assert (await last(rb))["code"] == "unauthorized"
    assert await manager.channel_members("room") == {a.fd: None}


async def test_opening_token_grant_allows_one_join() -> None:
    manager, router = await setup(server_token=TOKEN)
    conn, rec = await connect(manager, token="opening", join_grant="room")
    await router.route(conn, {"action": "channel-connect", "channel": "room"})
    assert conn.channel == "room"
    await router.route(conn, {"action": "channel-disconnect"})
    await router.route(conn, {"action": "channel-connect", "channel": "room", "auth": "opening"})
    assert (await last(rec))["code"] == "unauthorized" and conn.channel is None


async def test_bound_user_refuses_other_user_ids() -> None:
    manager, router = await setup(server_token=TOKEN)
    conn, rec = await connect(manager, token="t", bound_user=5)
    assert conn.user_id == 5
    await router.route(conn, {"action": "assoc-user-to-fd-action", "userId": "5"})
    assert (await last(rec))["code"] == "unauthorized"
    await router.route(conn, {"action": "assoc-user-to-fd-action", "userId": 5})
    await settle()
    assert len(rec.frames) == 1 and conn.user_id == 5


async def test_application_action_replaces_a_built_in() -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)

    async def shout(ctx: ActionContext) -> None:
        ctx.reply(str(ctx.data).upper())

    router.add_action("base-action", shout)
    await router.route(conn, {"action": "base-action", "data": "hi"})
    assert await last(rec) == {"action": "base-action", "data": "HI", "fd": conn.fd}
    with pytest.raises(ValueError):
        router.add_action("", shout)


async def test_middleware_runs_for_its_actions_and_can_reject() -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)
    seen: list[str] = []

    async def audit(ctx: ActionContext, call_next: Any) -> None:
        seen.append(ctx.action)
        await call_next(ctx)

    async def deny(ctx: ActionContext, call_next: Any) -> None:
        raise ActionError("unauthorized", "broadcasts are closed")

    async def swallow(ctx: ActionContext, call_next: Any) -> None:
        return None

    router.add_middleware(audit)
    router.add_middleware(deny, ["broadcast-action"])
    router.add_middleware(swallow, ["fanout-action"])
    await router.route(conn, {"action": "broadcast-action", "data": 1})
    assert await last(rec) == {
        "action": "error",
        "code": "unauthorized",
        "data": "broadcasts are closed",
        "fd": conn.fd,
    }
    await router.route(conn, {"action": "fanout-action", "data": 1})
    await router.route(conn, {"action": "base-action", "data": 2})
    assert await last(rec) == {"action": "base-action", "data": 2, "fd": conn.fd}
    assert len(rec.frames) == 2
    assert seen == ["broadcast-action", "fanout-action", "base-action"]


async def test_a_crashing_action_is_logged_and_nothing_else_happens(caplog) -> None:
    manager, router = await setup()
    conn, rec = await connect(manager)

    async def broken(ctx: ActionContext) -> None:
        raise RuntimeError("boom")

    router.add_action("broken", broken)
    with caplog.at_level(logging.ERROR, logger="conveyor_asgi.actions"):
        await router.route(conn, {"action": "broken"})
    assert any("broken" in r.getMessage() and r.exc_info for r in caplog.records)
    await router.route(conn, {"action": "base-action", "data": "alive"})
    assert (await last(rec))["data"] == "alive"


async def test_client_ids_are_acknowledged_without_an_id() -> None:
    manager, router = await setup(use_acknowledgment=True)
    conn, rec = await connect(manager)
    await router.route(conn, {"action": "base-action", "data": 1, "id": "m1"})
    await settle()
    assert rec.frames[0] == {"action": "acknowledge-action", "data": "m1"}
    assert rec.frames[1]["action"] == "base-action" and "id" in rec.frames[1]


async def test_add_listener_collects_actions() -> None:
    manager, router = await setup()
    conn, _ = await connect(manager)
    assert conn.listeners is None
    await router.route(conn, {"action": "add-listener", "listen": "a"})
    await router.route(conn, {"action": "add-listener", "listen": "b"})
    assert conn.listeners == {"a", "b"}
