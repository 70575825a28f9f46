"""A FastAPI host that mounts the server with a plain ``app.mount`` (no extra route)."""

from __future__ import annotations

from fastapi import FastAPI

from conveyor_asgi import create_app

conveyor = create_app()
app = FastAPI(lifespan=conveyor.lifespan)
app.mount("/realtime", conveyor)
