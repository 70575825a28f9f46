"""A Conveyor server extended through the public API, served by the extension tests.

Settings come from the environment, as for ``conveyor_asgi.app:app``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from conveyor_asgi import ActionContext, ActionError, create_app
from conveyor_asgi.actions import Handler

conveyor = create_app()
app = conveyor

#: Frames each connection sent, as the global middleware counted them.
frames_seen: Counter[int] = Counter()


# -- application actions --------------------------------------------------------


@conveyor.action("shout")
async def shout(ctx: ActionContext) -> None:
    """A new action: the text, upper-cased, to the sender's channel."""
    text = ctx.field("data", str)
    await ctx.broadcast(text.upper())


@conveyor.action("whoami")
async def whoami(ctx: ActionContext) -> None:
    """Replies with what the server knows about the sender."""
    ctx.reply(
        {
            "fd": ctx.fd,
            "channel": ctx.channel,
            "userId": ctx.user_id,
            "frames": frames_seen[ctx.fd],
            "trace": ctx.message.get("trace", []),
        }
    )


@conveyor.action("crash")
async def crash(ctx: ActionContext) -> None:
    raise RuntimeError("a bug in an application action")


async def echo_wrapped(ctx: ActionContext) -> None:
    """Replaces the built-in base-action: the echo says who answered."""
    ctx.reply({"echo": ctx.field("data"), "by": "application"})


conveyor.add_action("base-action", echo_wrapped)


# -- middleware -------------------------------------------------------------------


@conveyor.middleware
async def count_frames(ctx: ActionContext, call_next: Handler) -> None:
    """Global: runs for every known action, built-in or not."""
    frames_seen[ctx.fd] += 1
    _trace(ctx, "count")
    await call_next(ctx)


@conveyor.middleware("whoami")
async def trace_whoami(ctx: ActionContext, call_next: Handler) -> None:
    _trace(ctx, "whoami-only")
    await call_next(ctx)


@conveyor.middleware(["broadcast-action", "shout"])
async def moderate(ctx: ActionContext, call_next: Handler) -> None:
    """Per action: rejects some frames with an error, drops others silently."""
    data = ctx.message.get("data")
    if isinstance(data, str) and "forbidden" in data.lower():
        raise ActionError("moderated", f"'{ctx.action}' refused: forbidden word")
    if data == "drop me":
        return  # dropped: no handler, no reply
    await call_next(ctx)


def _trace(ctx: ActionContext, name: str) -> None:
    trace: Any = ctx.message.setdefault("trace", [])
    if isinstance(trace, list):
        trace.append(name)


# -- presence ---------------------------------------------------------------------


@conveyor.presence_payload
def presence_with_count(payload: dict[str, Any], channel: str) -> dict[str, Any]:
    payload["count"] = len(payload["fds"])
    payload["room"] = channel.upper()
    return payload
