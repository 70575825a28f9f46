"""conveyor-asgi inside a Starlette application.

The real-time server lives under ``/realtime``: clients connect to
``ws://HOST:PORT/realtime?token=...`` (with or without a slash before the
query) and its HTTP API is at ``/realtime/conveyor/...``. The application's
own route publishes to channels with ``await conveyor.publish(...)``.

Run it from the repository root (settings come from ``CONVEYOR_*`` variables)::

    CONVEYOR_SERVER_TOKEN=change-me CONVEYOR_USE_PRESENCE=true \\
        uvicorn examples.starlette_app:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conveyor_asgi import create_app

conveyor = create_app()


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"service": "dashboard", "realtime": "/realtime"})


async def announce(request: Request) -> JSONResponse:
    """POST /rooms/{room}/announcements with ``{"text": ...}``: tell the room.

    A real application checks here who may announce; this example does not.
    """
    room = request.path_params["room"]
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return JSONResponse({"error": "'text' must be a string"}, status_code=400)
    try:
        await conveyor.publish(room, {"type": "announcement", "text": text})
    except ValueError as exc:  # not a valid channel name
        return JSONResponse({"error": str(exc)}, status_code=400)
    members = await conveyor.members(room)
    return JSONResponse({"room": room, "delivered_to": len(members)})


app = Starlette(
    routes=[
        Route("/", index),
        Route("/rooms/{room}/announcements", announce, methods=["POST"]),
        # A Mount of the server under /realtime, plus a WebSocket route for
        # the bare prefix (ws://host/realtime?token=..., no slash).
        *conveyor.routes("/realtime"),
    ],
    # Mounted apps get no lifespan events: the host runs the server's.
    lifespan=conveyor.lifespan,
)
