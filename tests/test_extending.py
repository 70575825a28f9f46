"""The extension API on a real server: application actions, middleware, presence hook.

The server runs ``tests/apps/extended.py`` (and ``broken_hook.py``) under uvicorn.
"""

from __future__ import annotations

import pytest

from conveyor_asgi import ActionContext, Settings, create_app
from conveyor_asgi.actions import Handler

from .support import Client

pytestmark = pytest.mark.anyio

TOKEN = "extending-server-token"
ENV = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}
EXTENDED = "tests.apps.extended:app"


@pytest.fixture
def server(server_factory):
    return server_factory(ENV, app=EXTENDED)


async def _pair(server, channel: str) -> tuple[Client, Client]:
    """Two clients in ``channel``, their join updates read."""
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    b = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.join(channel)
    await a.presence()
    await b.join(channel)
    await a.presence()
    await b.presence()
    return a, b


async def test_a_new_action_reaches_the_senders_channel(server) -> None:
    a, b = await _pair(server, "lounge")
    await a.send({"action": "shout", "data": "hello there"})
    for client in (a, b):
        frame = await client.expect("shout")
        assert frame == {"action": "shout", "data": "HELLO THERE", "fd": a.fd}
    await a.close()
    await b.close()


async def test_a_new_action_validates_its_fields_with_error_frames(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.send({"action": "shout", "data": 42})
    error = await a.expect("error")
    assert error["code"] == "invalid-field"
    assert "data" in error["data"]
    await a.send({"action": "shout"})
    assert (await a.expect("error"))["code"] == "invalid-field"
    await a.close()


async def test_an_application_action_replaces_a_built_in_one(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.send({"action": "base-action", "data": [1, 2]})
    frame = await a.expect("base-action")
    assert frame == {
        "action": "base-action",
        "data": {"echo": [1, 2], "by": "application"},
        "fd": a.fd,
    }
    # Raw text is routed as base-action too, so it reaches the replacement.
    await a.send("ping")
    frame = await a.expect("base-action")
    assert frame["data"] == {"echo": "ping", "by": "application"}
    await a.close()


async def test_per_action_middleware_rejects_a_frame_with_an_error(server) -> None:
    a, b = await _pair(server, "moderated")
    for action in ("broadcast-action", "shout"):
        await a.send({"action": action, "data": "some FORBIDDEN text"})
        error = await a.expect("error")
        assert error == {
            "action": "error",
            "code": "moderated",
            "data": f"'{action}' refused: forbidden word",
            "fd": a.fd,
        }
    await b.silent()

    # The connection stays open and the same actions still work.
    await a.send({"action": "broadcast-action", "data": "fine"})
    for client in (a, b):
        assert (await client.expect("broadcast-action"))["data"] == "fine"
    await a.close()
    await b.close()


async def test_per_action_middleware_can_drop_a_frame_silently(server) -> None:
    a, b = await _pair(server, "dropping")
    await a.send({"action": "broadcast-action", "data": "drop me"})
    await a.silent()
    await b.silent()
    await a.send({"action": "broadcast-action", "data": "keep me"})
    for client in (a, b):
        assert (await client.expect("broadcast-action"))["data"] == "keep me"
    await a.close()
    await b.close()


async def test_per_action_middleware_leaves_other_actions_alone(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.send({"action": "base-action", "data": "forbidden"})
    frame = await a.expect("base-action")
    assert frame["data"] == {"echo": "forbidden", "by": "application"}
    await a.close()


async def test_global_middleware_runs_for_every_known_action_in_order(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.join("counted")
    await a.presence()
    await a.send({"action": "assoc-user-to-fd-action", "userId": "ada"})
    await a.presence()
    await a.send({"action": "base-action", "data": 1})
    await a.expect("base-action")
    await a.send({"action": "whoami"})
    info = (await a.expect("whoami"))["data"]
    assert info == {
        "fd": a.fd,
        "channel": "counted",
        "userId": "ada",
        "frames": 4,
        # The global middleware was added first, so it runs first.
        "trace": ["count", "whoami-only"],
    }

    # Frames with no handler never reach middleware.
    await a.send({"action": "no-such-action"})
    assert (await a.expect("error"))["code"] == "unknown-action"
    await a.send({"action": "whoami"})
    assert (await a.expect("whoami"))["data"]["frames"] == 5
    await a.close()


async def test_the_presence_hook_shapes_every_update(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    b = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.send({"action": "assoc-user-to-fd-action", "userId": 7})
    await a.join("shaped")
    first = await a.presence()
    assert first == {
        "fd": a.fd,
        "event": "channel-presence",
        "channel": "shaped",
        "fds": [a.fd],
        "userIds": {str(a.fd): 7},
        "count": 1,
        "room": "SHAPED",
    }
    await b.join("shaped")
    for client in (a, b):
        update = await client.presence()
        assert update["fds"] == sorted([a.fd, b.fd])
        assert update["count"] == 2
    await b.close()
    left = await a.presence("channel-disconnect")
    assert left["fd"] == b.fd
    assert left["count"] == 1
    assert left["fds"] == [a.fd]
    await a.close()


async def test_a_crashing_action_is_logged_and_the_connection_carries_on(server) -> None:
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.send({"action": "crash"})
    await a.silent()
    await a.send({"action": "whoami"})
    assert (await a.expect("whoami"))["data"]["fd"] == a.fd
    await a.close()
    log = server.output()
    assert f"action 'crash' failed for connection {a.fd}" in log
    assert "RuntimeError: a bug in an application action" in log


async def test_a_failing_presence_hook_falls_back_to_the_standard_payload(server_factory) -> None:
    server = server_factory(ENV, app="tests.apps.broken_hook:app")
    a = await Client.connect(f"{server.ws}?token={TOKEN}")
    await a.join("broken-room")
    update = await a.presence()
    assert set(update) == {"fd", "event", "channel", "fds", "userIds"}
    assert update["fds"] == [a.fd]
    await a.join("good-room")
    update = await a.presence()
    assert update["fine"] is True
    await a.close()
    assert "RuntimeError: a bug in the presence hook" in server.output()


# -- the registration API itself (no server needed) --------------------------------


def test_the_action_decorator_requires_a_name() -> None:
    conveyor = create_app(Settings())

    async def handler(ctx: ActionContext) -> None:
        return None

    with pytest.raises(TypeError, match="action name"):
        conveyor.action(handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        conveyor.add_action("", handler)
    conveyor.action("custom")(handler)
    assert "custom" in conveyor.router.actions


def test_middleware_must_be_callable() -> None:
    conveyor = create_app(Settings())
    with pytest.raises(TypeError, match="middleware"):
        conveyor.add_middleware("not a function")  # type: ignore[arg-type]


def test_middleware_decorators_return_the_function() -> None:
    conveyor = create_app(Settings())

    async def mw(ctx: ActionContext, call_next: Handler) -> None:
        await call_next(ctx)

    assert conveyor.middleware(mw) is mw
    assert conveyor.middleware()(mw) is mw
    assert conveyor.middleware("base-action")(mw) is mw

    def hook(payload: dict[str, object], channel: str) -> None:
        return None

    assert conveyor.presence_payload(hook) is hook
