"""The server mounted under a prefix in FastAPI and Starlette (the examples), under uvicorn."""

from __future__ import annotations

import pytest
import websockets

from .support import Client, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "embedding-server-token"
ENV = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEALTH = "/realtime/health"
EXAMPLES = ["examples.fastapi_app:app", "examples.starlette_app:app"]


@pytest.fixture(params=EXAMPLES, ids=["fastapi", "starlette"])
def server(request: pytest.FixtureRequest, server_factory):
    return server_factory(ENV, app=request.param, health=HEALTH)


async def test_websocket_under_the_prefix_with_and_without_the_slash(server) -> None:
    slash = await Client.connect(f"{server.ws}/realtime/?token={TOKEN}")
    bare = await Client.connect(f"{server.ws}/realtime?token={TOKEN}")
    assert slash.fd != bare.fd

    await slash.send({"action": "assoc-user-to-fd-action", "userId": 1})
    await slash.join("room")
    await slash.presence()
    await bare.send({"action": "assoc-user-to-fd-action", "userId": "two"})
    await bare.join("room")
    for client in (slash, bare):
        roster = await client.presence()
        assert roster["fds"] == sorted([slash.fd, bare.fd])
        assert roster["userIds"] == {str(slash.fd): 1, str(bare.fd): "two"}

    await bare.send({"action": "broadcast-action", "data": "hi"})
    for client in (slash, bare):
        assert await client.expect("broadcast-action") == {
            "action": "broadcast-action",
            "data": "hi",
            "fd": bare.fd,
        }
    await slash.close()
    await bare.close()


async def test_the_handshake_under_the_prefix_checks_the_token(server) -> None:
    for path in ("/realtime", "/realtime/"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{server.ws}{path}?token=wrong", open_timeout=10)
        assert refused.value.response.status_code == 403


async def test_http_endpoints_under_the_prefix(server) -> None:
    base = f"{server.http}/realtime"
    assert await ahttp("GET", f"{base}/health") == (200, {"status": "ok"})
    status, _ = await ahttp("GET", f"{base}/conveyor/channels")
    assert status == 401

    status, body = await ahttp("POST", f"{base}/conveyor/auth", {"channel": "vip"}, headers=AUTH)
    assert status == 200
    temporary = body["auth"]
    member = await Client.connect(f"{server.ws}/realtime?token={temporary}")
    await member.join("vip")
    assert (await member.presence())["fds"] == [member.fd]

    status, body = await ahttp("GET", f"{base}/conveyor/channels", headers=AUTH)
    assert (status, body) == (200, {"channels": [{"channel": "vip", "connections": 1, "users": 0}]})
    status, body = await ahttp("GET", f"{base}/conveyor/channels/vip", headers=AUTH)
    assert (status, body) == (200, {"channel": "vip", "fds": [member.fd], "userIds": {}})

    status, _ = await ahttp(
        "POST", f"{base}/conveyor/message", {"channel": "vip", "message": {"n": 1}}, headers=AUTH
    )
    assert status == 200
    assert await member.expect("broadcast-action") == {
        "action": "broadcast-action",
        "data": {"n": 1},
    }
    await member.close()


async def test_a_host_route_publishes_to_connected_clients(server) -> None:
    a = await Client.connect(f"{server.ws}/realtime?token={TOKEN}")
    b = await Client.connect(f"{server.ws}/realtime/?token={TOKEN}")
    outsider = await Client.connect(f"{server.ws}/realtime?token={TOKEN}")
    for client in (a, b):
        await client.join("news")
    await a.presence()
    await a.presence()
    await b.presence()
    await outsider.join("elsewhere")
    await outsider.presence()

    status, body = await ahttp(
        "POST", f"{server.http}/rooms/news/announcements", {"text": "doors open at nine"}
    )
    assert (status, body) == (200, {"room": "news", "delivered_to": 2})
    for client in (a, b):
        frame = await client.expect("broadcast-action")
        # Published by the server itself: no sender id.
        assert frame == {
            "action": "broadcast-action",
            "data": {"type": "announcement", "text": "doors open at nine"},
        }
    await outsider.silent()

    status, _ = await ahttp(
        "POST", f"{server.http}/rooms/{'x' * 201}/announcements", {"text": "too long a room name"}
    )
    assert status == 400
    for client in (a, b, outsider):
        await client.close()


async def test_the_host_keeps_its_own_routes(server) -> None:
    status, body = await ahttp("GET", f"{server.http}/")
    assert status == 200
    assert body["realtime"] == "/realtime"
    # The server's routes exist only under the prefix.
    status, _ = await ahttp("GET", f"{server.http}/health")
    assert status == 404


@pytest.mark.parametrize("example", EXAMPLES, ids=["fastapi", "starlette"])
async def test_the_host_runs_the_servers_lifespan(server_factory, example: str) -> None:
    # Open (no token): the start-up warning shows the lifespan ran before
    # the application reported it was ready.
    server = server_factory({"CONVEYOR_USE_PRESENCE": "true"}, app=example, health=HEALTH)
    log = server.output()
    assert "runs OPEN" in log
    assert log.index("runs OPEN") < log.index("Application startup complete")
    client = await Client.connect(f"{server.ws}/realtime")
    await client.send("ping")
    assert (await client.expect("base-action"))["data"] == "ping"
    await client.close()


def test_the_routes_helper_needs_a_prefix() -> None:
    from conveyor_asgi import Settings, create_app

    conveyor = create_app(Settings())
    with pytest.raises(ValueError, match="prefix"):
        conveyor.routes("/")
    paths = [route.path for route in conveyor.routes("realtime/")]  # type: ignore[attr-defined]
    assert paths == ["/realtime", "/realtime"]


async def test_a_plain_mount_serves_the_prefix_with_the_slash_only(server_factory) -> None:
    # What the README says of app.mount() without conveyor.routes().
    server = server_factory(ENV, app="tests.apps.plain_mount:app", health=HEALTH)
    client = await Client.connect(f"{server.ws}/realtime/?token={TOKEN}")
    await client.send("ping")
    assert (await client.expect("base-action"))["data"] == "ping"
    await client.close()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{server.ws}/realtime?token={TOKEN}", open_timeout=10)
    assert refused.value.response.status_code == 403
