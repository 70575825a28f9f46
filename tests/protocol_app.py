"""A server with one application action, for the listener tests (served by uvicorn)."""

from __future__ import annotations

from conveyor_asgi import ActionContext, create_app

app = create_app()


@app.action("shout")
async def shout(ctx: ActionContext) -> None:
    """Send ``data`` to every member of ``channel``, as an application action would."""
    await ctx.publish(ctx.field("channel", str), ctx.field("data"))
