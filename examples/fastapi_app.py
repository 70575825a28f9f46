"""conveyor-asgi inside a FastAPI application.

The real-time server lives under ``/realtime``: clients connect to
``ws://HOST:PORT/realtime?token=...`` (with or without a slash before the
query) and its HTTP API is at ``/realtime/conveyor/...``. The application's
own routes publish to channels with ``await conveyor.publish(...)``.

Run it from the repository root (settings come from ``CONVEYOR_*`` variables)::

    CONVEYOR_SERVER_TOKEN=change-me CONVEYOR_USE_PRESENCE=true \\
        uvicorn examples.fastapi_app:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from conveyor_asgi import create_app

conveyor = create_app()

# Mounted apps get no lifespan events: hand the server's lifespan to the host
# so that shutdown closes every socket cleanly.
app = FastAPI(title="Shop with live updates", lifespan=conveyor.lifespan)
app.router.routes.extend(conveyor.routes("/realtime"))


class Announcement(BaseModel):
    text: str
    extra: dict[str, Any] | None = None


@app.get("/")
async def index() -> dict[str, str]:
    return {"service": "shop", "realtime": "/realtime"}


@app.post("/rooms/{room}/announcements")
async def announce(room: str, announcement: Announcement) -> dict[str, Any]:
    """Send an announcement to everyone in ``room``, as ``broadcast-action``.

    A real application checks here who may announce; this example does not.
    """
    message = {"type": "announcement", "text": announcement.text, **(announcement.extra or {})}
    try:
        await conveyor.publish(room, message)
    except ValueError as exc:  # not a valid channel name
        raise HTTPException(status_code=400, detail=str(exc)) from None
    members = await conveyor.members(room)
    return {"room": room, "delivered_to": len(members)}
