"""The WebSocket route and the HTTP routes."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from . import frames
from .actions import valid_channel_name, valid_user_id
from .auth import bearer_token, new_token, same_token
from .connection import Connection
from .errors import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_RATE_LIMITED,
    RATE_LIMITED,
    BackendUnavailable,
)
from .logging import CONNECTIONS, redact
from .types import TokenGrant

if TYPE_CHECKING:
    from .app import Conveyor

_PREFERRED_SUBPROTOCOL = "socketconveyor.com"


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _path(scope: Scope) -> str:
    path = scope.get("path", "")  # already includes root_path (a mount's prefix)
    query = scope.get("query_string", b"").decode("latin-1")
    return redact(f"{path}?{query}") if query else path


def _query_token(scope: Scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _subprotocol(scope: Scope) -> str | None:
    offered = scope.get("subprotocols") or []
    if _PREFERRED_SUBPROTOCOL in offered:
        return _PREFERRED_SUBPROTOCOL
    return offered[0] if offered else None


class WebSocketEndpoint:
    """The ASGI app behind ``GET /`` with an upgrade: one instance serves every socket."""

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        #: Open sockets (and handshakes in progress) per client address, and in all.
        self._per_client: dict[str, int] = {}
        self._open = 0

    @property
    def open_sockets(self) -> int:
        """Sockets counted against the limits: accepted ones and handshakes in progress."""
        return self._open

    @property
    def client_addresses(self) -> int:
        return len(self._per_client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conveyor = self.conveyor
        await conveyor.startup()

        # The handshake: nothing is accepted before the origin, limits and token pass.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        peer = scope.get("client")
        address = str(peer[0]) if peer else "-"
        refusal = self._refusal(scope, address)
        if refusal is not None:
            CONNECTIONS.info("refused %s %s: %s", _client(scope), _path(scope), refusal)
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return

        # The slot is taken before the first await so that concurrent
        # handshakes cannot all pass the same limit check.
        self._reserve(address)
        try:
            await self._serve(scope, receive, send, address)
        finally:
            self._release(address)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, address: str) -> None:
        conveyor = self.conveyor
        settings = conveyor.settings
        grant: TokenGrant | None = None
        token = _query_token(scope)
        refusal = None
        if not settings.open:
            refusal, grant = await self._check_token(token)
        if refusal is not None:
            CONNECTIONS.info("refused %s %s: %s", _client(scope), _path(scope), refusal)
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return

        # Accepted: register the connection before telling the client its id.
        try:
            fd = await conveyor.manager.backend.next_connection_id()
        except BackendUnavailable:
            CONNECTIONS.info("refused %s %s: backend unavailable", _client(scope), _path(scope))
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return
        conn = Connection(
            fd,
            scope.get("conveyor.send", send),
            queue_limit=settings.send_queue_size,
            on_overflow=conveyor.manager.evict,
            token=None if settings.open else token,
            join_grant=grant.channel if grant else None,
            bound_user=grant.user_id if grant else None,
            client=_client(scope),
            ack_attempts=settings.acknowledgment_attempts if settings.use_acknowledgment else 0,
            ack_timeout=settings.acknowledgment_timeout,
        )
        try:
            await send({"type": "websocket.accept", "subprotocol": _subprotocol(scope)})
            CONNECTIONS.info("accepted %s %s as connection %d", conn.client, _path(scope), fd)
            conveyor.manager.add(conn)
            conn.start_writer()
            msg_id = conveyor.manager.new_msg_id()
            conn.push(frames.connection_info_frame(fd, msg_id), msg_id)
            await self._read_loop(conn, receive)
        finally:
            # Whatever ended the socket, the same cleanup runs.
            conn.socket_ended = True
            await conveyor.manager.remove(conn)
            CONNECTIONS.info("closed connection %d (%s)", fd, conn.client)

    def _reserve(self, address: str) -> None:
        self._open += 1
        self._per_client[address] = self._per_client.get(address, 0) + 1

    def _release(self, address: str) -> None:
        self._open -= 1
        remaining = self._per_client.get(address, 1) - 1
        if remaining > 0:
            self._per_client[address] = remaining
        else:
            self._per_client.pop(address, None)

    def _refusal(self, scope: Scope, address: str) -> str | None:
        settings = self.conveyor.settings
        if not origin_allowed(_header(scope, b"origin"), settings.allowed_origins):
            return "origin not allowed"
        if settings.max_connections and self._open >= settings.max_connections:
            return "connection limit reached"
        limit = settings.max_connections_per_ip
        if limit and self._per_client.get(address, 0) >= limit:
            return "per-address connection limit reached"
        return None

    async def _check_token(self, token: str | None) -> tuple[str | None, TokenGrant | None]:
        settings = self.conveyor.settings
        if token is None:
            return "no token", None
        if same_token(token, settings.server_token):
            return None, None
        try:
            grant = await self.conveyor.manager.backend.take_token(token)
        except BackendUnavailable:
            return "backend unavailable", None
        if grant is None:
            return "invalid token", None
        return None, grant

    async def _read_loop(self, conn: Connection, receive: Receive) -> None:
        settings = self.conveyor.settings
        limit = settings.max_message_bytes
        rate, burst = settings.rate_limit, settings.rate_burst
        flood = flood_threshold(burst)
        router = self.conveyor.router
        manager = self.conveyor.manager
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            raw: str | bytes | None = message.get("text")
            if raw is None:
                raw = message.get("bytes")
                if raw is None:
                    continue
            if _too_big(raw, limit):
                CONNECTIONS.info("closing connection %d: frame over %d bytes", conn.fd, limit)
                conn.shut()
                await conn.close_socket(CLOSE_MESSAGE_TOO_BIG)
                return
            if conn.closed:
                return
            if rate and not conn.allow_frame(rate, burst):
                if conn.rate_strikes > flood:
                    # Refused frames keep coming much faster than the rate:
                    # answering each with an error frame would only feed the flood.
                    CONNECTIONS.warning(
                        "closing connection %d (%s): flooding past the rate limit",
                        conn.fd,
                        conn.client,
                    )
                    conn.shut()
                    await conn.close_socket(CLOSE_RATE_LIMITED)
                    return
                manager.error(conn, RATE_LIMITED, "too many frames; slow down")
                continue
            await router.handle_frame(conn, raw)


def flood_threshold(burst: int) -> int:
    """Refused frames (draining at the rate limit) past which a connection is closed.

    Well above one burst, so that a client merely a little too fast gets
    ``rate-limited`` error frames and time to slow down; a real flood
    reaches it within moments.
    """
    return max(10 * burst, 100)


_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}


def _normal_origin(origin: str) -> str:
    # Scheme and host are case-insensitive, a trailing slash is not part of an
    # origin, and browsers leave the scheme's default port out.
    text = origin.strip().rstrip("/").lower()
    scheme = text.partition("://")[0]
    port = _DEFAULT_PORTS.get(scheme)
    return text[: -len(port)] if port and text.endswith(port) else text


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """True when ``allowed`` has ``"*"`` or lists ``origin`` (scheme://host[:port]).

    A handshake without an ``Origin`` header passes: browsers always send
    one, so its absence means a non-browser client (a back-end, the PHP
    client), which could write any header it liked and which the token, not
    the origin, keeps out. The list protects browsers' users from pages of
    other sites opening sockets with their credentials.
    """
    if "*" in allowed or origin is None:
        return True
    wanted = _normal_origin(origin)
    return any(_normal_origin(entry) == wanted for entry in allowed)


def _too_big(raw: str | bytes, limit: int) -> bool:
    size = len(raw)
    if isinstance(raw, bytes) or size > limit:
        return size > limit
    # A str of n code points is n to 4n UTF-8 bytes: count only when it matters.
    return size * 4 > limit and len(raw.encode("utf-8", "surrogatepass")) > limit


# -- HTTP ---------------------------------------------------------------------


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) as JSON ``{"error": ...}``, like every other HTTP error."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _authorized(conveyor: Conveyor, request: Request) -> bool:
    settings = conveyor.settings
    if settings.open:
        return True
    # Either place may carry it: a stale ?token= must not hide a good bearer token.
    query = same_token(request.query_params.get("token"), settings.server_token)
    bearer = same_token(bearer_token(request.headers.get("authorization")), settings.server_token)
    return query or bearer


async def _json_body(conveyor: Conveyor, request: Request, empty_ok: bool) -> dict[str, Any]:
    limit = conveyor.settings.max_http_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    if not body.strip() and empty_ok:
        return {}
    try:
        value = frames.loads(bytes(body))
    except frames.Unsupported as exc:
        raise _BadRequest(str(exc)) from None
    except ValueError:
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise _BadRequest("the body must be a JSON object")
    return value


class _TooLarge(Exception):
    pass


def _empty_message(message: Any) -> bool:
    return message is None or (isinstance(message, (str, list, dict)) and not message)


def _ttl(body: dict[str, Any], default: float, maximum: float) -> float:
    ttl = body.get("ttl")
    if ttl is None:
        return default
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
        raise _BadRequest("'ttl' must be a number of seconds")
    if not 1 <= ttl <= maximum:
        raise _BadRequest(f"'ttl' must be between 1 and {maximum:g} seconds")
    return float(ttl)


def _guarded(handler: Any) -> Any:
    """Token check, body errors and backend outages, the same for every route."""

    async def endpoint(request: Request) -> Response:
        conveyor = _conveyor(request)
        await conveyor.startup()
        if not _authorized(conveyor, request):
            return _error(401, "a valid server token is required")
        try:
            response: Response = await handler(conveyor, request)
            return response
        except _BadRequest as exc:
            return _error(400, str(exc))
        except _TooLarge:
            return _error(413, "the body is too large")
        except ClientDisconnect:
            return _error(400, "the request body was cut short")
        except BackendUnavailable:
            return _error(503, "the backend is unavailable")

    return endpoint


def _conveyor(request: Request) -> Conveyor:
    conveyor: Conveyor = request.scope["conveyor"]
    return conveyor


async def mint_token(conveyor: Conveyor, request: Request) -> Response:
    body = await _json_body(conveyor, request, empty_ok=True)
    settings = conveyor.settings
    channel = body.get("channel")
    if channel is not None and not valid_channel_name(channel):
        raise _BadRequest("'channel' must be 1 to 200 characters with no control characters")
    user_id = body.get("userId")
    if user_id is not None and not valid_user_id(user_id):
        raise _BadRequest(
            "'userId' must be an integer of at most 200 digits or a string of 1 to 200 characters"
        )
    ttl = _ttl(body, settings.token_ttl, settings.token_max_ttl)
    token = new_token()
    await conveyor.manager.backend.store_token(token, TokenGrant(channel, user_id), ttl)
    return JSONResponse({"auth": token})


async def publish_message(conveyor: Conveyor, request: Request) -> Response:
    body = await _json_body(conveyor, request, empty_ok=False)
    channel = body.get("channel")
    if not valid_channel_name(channel):
        raise _BadRequest("'channel' must be 1 to 200 characters with no control characters")
    message = body.get("message")
    if _empty_message(message):
        raise _BadRequest("'message' must not be empty")
    if not await conveyor.manager.channel_members(channel):
        return _error(404, "nobody is in that channel")
    await conveyor.manager.publish(channel, "broadcast-action", message)
    return JSONResponse({"success": "message sent"})


async def list_channels(conveyor: Conveyor, request: Request) -> Response:
    infos = await conveyor.manager.channels()
    return JSONResponse(
        {
            "channels": [
                {"channel": i.channel, "connections": i.connections, "users": i.users}
                for i in sorted(infos, key=lambda i: i.channel)
            ]
        }
    )


async def show_channel(conveyor: Conveyor, request: Request) -> Response:
    channel = request.path_params["channel"]
    if not valid_channel_name(channel):
        raise _BadRequest("not a valid channel name")
    members = await conveyor.manager.channel_members(channel)
    if not members:
        return _error(404, "nobody is in that channel")
    body = frames.dumps(
        {
            "channel": channel,
            "fds": list(members),
            "userIds": {str(fd): uid for fd, uid in members.items() if uid is not None},
        }
    )
    return Response(body, media_type="application/json")


async def health(request: Request) -> Response:
    conveyor = _conveyor(request)
    try:
        await conveyor.startup()
        ok = await conveyor.manager.backend.healthy()
    except Exception:  # any failure to answer is "unhealthy"
        ok = False
    if ok:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


async def show_stats(conveyor: Conveyor, request: Request) -> Response:
    """Internal counts, for operators and leak checks (never payloads or tokens)."""
    socket = conveyor.websocket
    stats: dict[str, Any] = dict(conveyor.manager.stats())
    stats["sockets"] = socket.open_sockets
    stats["client_addresses"] = socket.client_addresses
    stats["tasks"] = len(asyncio.all_tasks())
    stats["rss_bytes"] = _rss_bytes()
    return JSONResponse(stats)


def _rss_bytes() -> int:
    """The process's resident memory now (Linux), else its peak; 0 when unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


auth_endpoint = _guarded(mint_token)
message_endpoint = _guarded(publish_message)
channels_endpoint = _guarded(list_channels)
channel_endpoint = _guarded(show_channel)
stats_endpoint = _guarded(show_stats)
