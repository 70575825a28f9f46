"""Actions: the registry, per-action middleware and the built-in actions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeGuard

from . import frames
from .auth import same_token
from .errors import (
    CHANNEL_FULL,
    INVALID_FIELD,
    MISSING_ACTION,
    UNKNOWN_ACTION,
    ActionError,
    BackendUnavailable,
    InvalidField,
    Unauthorized,
)
from .logging import ACTIONS
from .types import UserId

if TYPE_CHECKING:
    from .channels import ChannelManager
    from .connection import Connection

Handler = Callable[["ActionContext"], Awaitable[None]]
Middleware = Callable[["ActionContext", Handler], Awaitable[None]]

_MAX_CHANNEL_LENGTH = 200
# Control characters (category Cc), and lone surrogates, which no socket can carry.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ABSENT = object()


def valid_channel_name(name: object) -> TypeGuard[str]:
    """Non-empty string of at most 200 code points with no control character."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= _MAX_CHANNEL_LENGTH
        and _CONTROL.search(name) is None
    )


#: Longest user id (characters of a string, digits of an integer) and listener
#: name. Presence sends every member's user id to every member on every change,
#: so an unbounded id would let one client multiply everyone's traffic.
MAX_NAME_LENGTH = 200
#: Listeners one connection may register.
MAX_LISTENERS = 64
_USER_ID_BOUND: int = 10**MAX_NAME_LENGTH  # integers of at most 200 digits


def valid_user_id(value: object) -> bool:
    """An integer (not a boolean) of at most 200 digits or a string of 1 to 200 characters."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_USER_ID_BOUND < value < _USER_ID_BOUND
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH


class ActionContext:
    """What an action handler or middleware gets for one client frame.

    ``message`` is the decoded frame (a dict); ``connection`` the sender.
    Helpers send to the sender, its channel, any channel or everyone.
    """

    __slots__ = ("action", "connection", "manager", "message")

    def __init__(
        self, manager: ChannelManager, connection: Connection, action: str, message: dict[str, Any]
    ) -> None:
        self.manager = manager
        self.connection = connection
        self.action = action
        self.message = message

    @property
    def fd(self) -> int:
        return self.connection.fd

    @property
    def data(self) -> Any:
        return self.message.get("data")

    @property
    def channel(self) -> str | None:
        """The sender's channel, None when it is in none."""
        return self.connection.channel

    @property
    def user_id(self) -> UserId | None:
        """The user id associated with the sender, if any."""
        return self.connection.user_id

    def field(
        self, name: str, kind: type | tuple[type, ...] | None = None, required: bool = True
    ) -> Any:
        """The field ``name``; None when absent or null and not ``required``.

        Raises :class:`InvalidField` when a required field is missing or null,
        or when the value is not of ``kind`` (booleans never count as ints).
        """
        value = self.message.get(name)
        if value is None:
            if required:
                raise InvalidField(f"field '{name}' is required for '{self.action}'")
            return None
        if kind is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind))
        ):
            raise InvalidField(f"field '{name}' of '{self.action}' has the wrong type")
        return value

    def reply(self, data: Any, action: str | None = None) -> None:
        """Send ``{"action", "data", "fd"}`` to the sender only."""
        self.manager.reply(self.connection, action or self.action, data)

    async def broadcast(self, data: Any, action: str | None = None) -> None:
        """Like ``broadcast-action``: the sender's channel, or everyone in no channel."""
        await self.manager.broadcast_from(self.connection, action or self.action, data)

    async def publish(self, channel: str, data: Any, action: str | None = None) -> None:
        """To every member of ``channel``, carrying the sender's id."""
        await self.manager.publish(channel, action or self.action, data, self.connection.fd)

    async def fanout(self, data: Any, action: str | None = None) -> None:
        """To every connection of the deployment."""
        await self.manager.fanout(action or self.action, data, self.connection.fd)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


class ActionRouter:
    """Routes decoded client frames to handlers through their middleware."""

    def __init__(self, manager: ChannelManager) -> None:
        self.manager = manager
        self._handlers: dict[str, Handler] = {}
        self._middleware: list[tuple[frozenset[str] | None, Middleware]] = []
        self._chains: dict[str, Handler] = {}
        for name, handler in BUILTIN_ACTIONS.items():
            self.add_action(name, handler)

    def add_action(self, name: str, handler: Handler) -> None:
        """Register ``handler`` for ``name``, replacing any earlier one (built-ins too)."""
        if not isinstance(name, str) or not name:
            raise ValueError("an action name is a non-empty string")
        self._handlers[name] = handler
        self._chains.clear()

    def add_middleware(
        self, middleware: Middleware, actions: Iterable[str] | str | None = None
    ) -> None:
        """Run ``middleware`` before the handlers of ``actions`` (all actions when None).

        Middleware run in the order they were added, each around the next.
        """
        if not callable(middleware):
            raise TypeError("a middleware is an async callable (ctx, call_next)")
        if isinstance(actions, str):
            actions = (actions,)  # one action name, not its characters
        selected = None if actions is None else frozenset(actions)
        self._middleware.append((selected, middleware))
        self._chains.clear()

    @property
    def actions(self) -> list[str]:
        return sorted(self._handlers)

    def _chain(self, name: str) -> Handler | None:
        chain = self._chains.get(name)
        if chain is not None:
            return chain
        handler = self._handlers.get(name)
        if handler is None:
            return None
        chain = handler
        for selected, middleware in reversed(self._middleware):
            if selected is None or name in selected:
                chain = _wrap(middleware, chain)
        self._chains[name] = chain
        return chain

    async def handle_frame(self, conn: Connection, raw: str | bytes) -> None:
        """One client frame: text (str) or binary (bytes)."""
        try:
            message = frames.loads(raw)
        except frames.Unsupported as exc:
            if raw.lstrip()[:1] in ("{", b"{"):
                # An object the server cannot carry: say why rather than echo it.
                self.manager.error(conn, INVALID_FIELD, f"the frame is refused: {exc}")
                return
            message = _ABSENT
        except ValueError:
            message = _ABSENT
        if not isinstance(message, dict):
            if isinstance(raw, bytes):
                return  # binary that is not a JSON object: a heartbeat, ignored
            message = {"action": "base-action", "data": raw}
        await self.route(conn, message)

    async def route(self, conn: Connection, message: dict[str, Any]) -> None:
        manager = self.manager
        action = message.get("action")
        if manager.settings.use_acknowledgment and action != "acknowledge-action":
            msg_id = message.get("id")
            if msg_id is not None:
                if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)):
                    manager.error(conn, INVALID_FIELD, "field 'id' must be a string or an integer")
                    return
                conn.push(frames.ack_frame(msg_id))
        if action is None:
            manager.error(conn, MISSING_ACTION, "the frame has no 'action'")
            return
        if not isinstance(action, str):
            manager.error(conn, INVALID_FIELD, "field 'action' must be a string")
            return
        chain = self._chain(action)
        if chain is None:
            manager.error(conn, UNKNOWN_ACTION, f"unknown action '{_shorten(action)}'")
            return
        ctx = ActionContext(manager, conn, action, message)
        try:
            await chain(ctx)
        except ActionError as exc:
            manager.error(conn, exc.code, exc.message)
        except BackendUnavailable:
            # The backend logs the outage once; one line per frame would flood.
            ACTIONS.debug(
                "action '%s' of connection %d dropped: backend unavailable",
                _shorten(action),
                conn.fd,
            )
        except Exception:
            ACTIONS.exception("action '%s' failed for connection %d", _shorten(action), conn.fd)


def _wrap(middleware: Middleware, call_next: Handler) -> Handler:
    async def run(ctx: ActionContext) -> None:
        await middleware(ctx, call_next)

    return run


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- built-in actions (PROTOCOL.md section 3) -------------------------------


async def base_action(ctx: ActionContext) -> None:
    data = ctx.field("data")
    ctx.reply(data)


async def broadcast_action(ctx: ActionContext) -> None:
    data = ctx.field("data")
    await ctx.broadcast(data)


def _auth_token(ctx: ActionContext) -> str | None:
    """The frame's ``auth``, or the token the connection was opened with."""
    auth = ctx.field("auth", str, required=False)
    return auth if auth is not None else ctx.connection.token


async def fanout_action(ctx: ActionContext) -> None:
    data = ctx.field("data")
    settings = ctx.manager.settings
    token = _auth_token(ctx)
    if not settings.open and not same_token(token, settings.server_token):
        raise Unauthorized("'fanout-action' needs the server token")
    await ctx.fanout(data)


async def channel_connect(ctx: ActionContext) -> None:
    channel = ctx.field("channel", str)
    if not valid_channel_name(channel):
        raise InvalidField("field 'channel' must be 1 to 200 characters with no control characters")
    conn = ctx.connection
    if conn.channel == channel:
        return
    token = _auth_token(ctx)
    manager = ctx.manager
    settings = manager.settings
    limit = settings.max_channel_members
    if limit and len(await manager.channel_members(channel)) >= limit:
        raise ActionError(CHANNEL_FULL, f"channel '{channel}' is full ({limit} members)")
    if not settings.open and not same_token(token, settings.server_token):
        await _authorize_channel_token(ctx, token, channel)
    await manager.join(conn, channel)


async def _authorize_channel_token(ctx: ActionContext, token: str | None, channel: str) -> None:
    """Accept a temporary token bound to ``channel``, using it up; else raise."""
    conn = ctx.connection
    if token is None:
        raise Unauthorized("'channel-connect' needs the server token or a channel token")
    if conn.token is not None and same_token(token, conn.token):
        # The token that opened the socket was consumed then; its channel right
        # lives on the connection, for one join.
        if conn.join_grant != channel:
            raise Unauthorized("the connection's token does not allow this channel")
        conn.join_grant = None
        return
    if await ctx.manager.backend.take_token(token, channel) is None:
        raise Unauthorized("the token is not valid for this channel")


async def channel_disconnect(ctx: ActionContext) -> None:
    await ctx.manager.leave(ctx.connection)


async def assoc_user(ctx: ActionContext) -> None:
    user_id: UserId = ctx.field("userId", (int, str))
    if not valid_user_id(user_id):
        raise InvalidField(
            "field 'userId' must be an integer of at most 200 digits "
            "or a string of 1 to 200 characters"
        )
    conn = ctx.connection
    if conn.has_bound_user and not (
        type(conn.bound_user) is type(user_id) and conn.bound_user == user_id
    ):
        raise Unauthorized("this connection's user id is bound by its token")
    await ctx.manager.set_user(conn, user_id)


async def add_listener(ctx: ActionContext) -> None:
    name = ctx.field("listen", str)
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        raise InvalidField(
            f"field 'listen' must be an action name of 1 to {MAX_NAME_LENGTH} characters"
        )
    conn = ctx.connection
    if conn.listeners is None:
        conn.listeners = set()
    if name not in conn.listeners and len(conn.listeners) >= MAX_LISTENERS:
        raise InvalidField(f"a connection may listen to at most {MAX_LISTENERS} actions")
    conn.listeners.add(name)


async def acknowledge_action(ctx: ActionContext) -> None:
    msg_id = ctx.field("data", (str, int))
    ctx.connection.acknowledge(msg_id)


BUILTIN_ACTIONS: dict[str, Handler] = {
    "base-action": base_action,
    "broadcast-action": broadcast_action,
    "fanout-action": fanout_action,
    "channel-connect": channel_connect,
    "channel-disconnect": channel_disconnect,
    "assoc-user-to-fd-action": assoc_user,
    "add-listener": add_listener,
    "acknowledge-action": acknowledge_action,
}
