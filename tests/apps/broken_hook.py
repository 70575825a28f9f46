"""A server whose presence hook fails: members still get the standard payload."""

from __future__ import annotations

from typing import Any

from conveyor_asgi import create_app

app = create_app()


@app.presence_payload
def broken(payload: dict[str, Any], channel: str) -> dict[str, Any]:
    if channel.startswith("broken"):
        raise RuntimeError("a bug in the presence hook")
    payload["fine"] = True
    return payload
