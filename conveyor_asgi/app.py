"""The Conveyor application object, ``create_app()``, and the module-level ``app``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar, overload

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from . import endpoints
from .actions import ActionRouter, Handler, Middleware, valid_channel_name, valid_user_id
from .auth import new_token
from .backends import backend_from_url
from .backends.base import Backend
from .channels import ChannelManager, PresenceHook
from .errors import CLOSE_SERVICE_RESTART, ConfigurationError
from .logging import SERVER, configure_standalone_logging, install_redaction
from .settings import Settings
from .types import ChannelInfo, TokenGrant, UserId

F = TypeVar("F", bound=Callable[..., Any])


class Conveyor:
    """A Conveyor server: an ASGI application plus the API to extend and drive it.

    Serve it with uvicorn, or mount it inside a Starlette or FastAPI app::

        conveyor = create_app(Settings(use_presence=True))
        app = FastAPI(lifespan=conveyor.lifespan)
        app.mount("/realtime", conveyor)

    Mounted apps do not receive lifespan events, so pass :meth:`lifespan` to
    the host (as above) for a clean shutdown; the server also starts itself
    on first use.
    """

    def __init__(self, settings: Settings | None = None, *, backend: Backend | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.backend = backend if backend is not None else backend_from_url(self.settings)
        self.manager = ChannelManager(self.settings, self.backend)
        self.router = ActionRouter(self.manager)
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None
        install_redaction()
        #: The WebSocket endpoint alone, an ASGI app (see :meth:`routes`).
        self.websocket = endpoints.WebSocketEndpoint(self)
        self._app = Starlette(
            routes=[
                WebSocketRoute("/", self.websocket),
                Route("/conveyor/auth", endpoints.auth_endpoint, methods=["POST"]),
                Route("/conveyor/message", endpoints.message_endpoint, methods=["POST"]),
                Route("/conveyor/channels", endpoints.channels_endpoint, methods=["GET"]),
                Route(
                    "/conveyor/channels/{channel:path}",
                    endpoints.channel_endpoint,
                    methods=["GET"],
                ),
                Route("/conveyor/stats", endpoints.stats_endpoint, methods=["GET"]),
                Route("/health", endpoints.health, methods=["GET"]),
            ],
            lifespan=self.lifespan,
            exception_handlers={HTTPException: endpoints.http_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["conveyor"] = self
        # The WebSocket route writes frames with this send, not the one Starlette
        # hands down: that wrapper only watches for HTTP responses, and fanout
        # would pay a call through it for every frame to every recipient.
        scope["conveyor.send"] = send
        await self._app(scope, receive, send)

    def routes(self, prefix: str) -> list[BaseRoute]:
        """Routes that serve this server under ``prefix`` in a host application.

        ``Mount(prefix, app=conveyor)`` alone serves ``ws://host/prefix/`` and
        the HTTP endpoints, but a Mount never matches the bare prefix, and the
        browser client connects to ``ws://host/prefix?token=...`` (no slash):
        the extra WebSocket route accepts that form too::

            app = Starlette(routes=conveyor.routes("/realtime"), lifespan=conveyor.lifespan)
            fastapi_app.router.routes.extend(conveyor.routes("/realtime"))
        """
        path = "/" + prefix.strip("/")
        if path == "/":
            raise ValueError(
                "a prefix such as '/realtime' is required; serve the app itself at the root"
            )
        return [WebSocketRoute(path, self.websocket), Mount(path, app=self)]

    # -- life cycle -------------------------------------------------------

    async def startup(self) -> None:
        """Start the backend (idempotent; also done on first use)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            if self.settings.open:
                SERVER.warning(
                    "CONVEYOR_SERVER_TOKEN is not set: the server runs OPEN, "
                    "no token is checked on any connection or HTTP request"
                )
            await self.backend.start(self.manager)
            if self.settings.send_timeout > 0:
                self._watchdog = asyncio.get_running_loop().create_task(self._watch_sends())
            self._started = True
            SERVER.info("conveyor-asgi started (backend %s)", type(self.backend).__name__)

    async def shutdown(self) -> None:
        """Close every socket with a close frame telling clients to reconnect."""
        if not self._started:
            return
        self._started = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        await self.manager.close_all(CLOSE_SERVICE_RESTART)
        await self.backend.stop()
        SERVER.info("conveyor-asgi stopped")

    async def _watch_sends(self) -> None:
        # Pings cannot free a peer whose buffers are full (the close never
        # flushes), so sends that stop moving are watched for here.
        limit = self.settings.send_timeout
        while True:
            await asyncio.sleep(min(max(limit / 4, 0.05), 5.0))
            self.manager.evict_stalled(limit)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A lifespan context for a host application (``FastAPI(lifespan=...)``)."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # -- extending --------------------------------------------------------

    def add_action(self, name: str, handler: Handler) -> None:
        """Handle client frames whose ``action`` is ``name`` (may replace a built-in)."""
        self.router.add_action(name, handler)

    def action(self, name: str) -> Callable[[F], F]:
        """Decorator form of :meth:`add_action`: ``@conveyor.action("name")``."""
        if not isinstance(name, str):
            raise TypeError('use @conveyor.action("name"): the action name is required')

        def register(handler: F) -> F:
            self.add_action(name, handler)
            return handler

        return register

    def add_middleware(
        self, middleware: Middleware, actions: Iterable[str] | str | None = None
    ) -> None:
        """Run ``middleware(ctx, call_next)`` before the handlers of ``actions`` (all if None).

        A middleware rejects a frame by raising
        :class:`~conveyor_asgi.errors.ActionError` (the sender gets an error
        frame) or by returning without calling ``call_next``.
        """
        self.router.add_middleware(middleware, actions)

    @overload
    def middleware(self, actions: Middleware) -> Middleware: ...

    @overload
    def middleware(self, actions: Iterable[str] | str | None = None) -> Callable[[F], F]: ...

    def middleware(self, actions: Any = None) -> Any:
        """Decorator form of :meth:`add_middleware`.

        ``@conveyor.middleware`` (or ``@conveyor.middleware()``) runs for every
        action; ``@conveyor.middleware(["broadcast-action"])`` for those named.
        """
        if callable(actions):
            self.add_middleware(actions)
            return actions

        def register(fn: F) -> F:
            self.add_middleware(fn, actions)
            return fn

        return register

    def presence_payload(self, hook: PresenceHook) -> PresenceHook:
        """Shape presence payloads (usable as a decorator).

        ``hook(payload, channel)`` gets a copy of the standard payload (``fd``,
        ``event``, ``channel``, ``fds``, ``userIds``) and returns the dict to
        send, or None to send the copy as it modified it. It runs on every
        node for its local members, so it must be quick and must not block. If
        it raises, the standard payload is sent and the error is logged.
        """
        self.manager.presence_hook = hook
        return hook

    # -- driving from application code ---------------------------------------

    async def publish(self, channel: str, message: Any, action: str = "broadcast-action") -> None:
        """Send ``message`` to every member of ``channel``, as an HTTP publish does."""
        if not valid_channel_name(channel):
            raise ValueError("not a valid channel name")
        await self.startup()
        await self.manager.publish(channel, action, message)

    async def fanout(self, message: Any, action: str = "fanout-action") -> None:
        """Send ``message`` to every connection."""
        await self.startup()
        await self.manager.fanout(action, message, None)

    async def mint_token(
        self, channel: str | None = None, user_id: UserId | None = None, ttl: float | None = None
    ) -> str:
        """A temporary token, as ``POST /conveyor/auth`` returns."""
        if channel is not None and not valid_channel_name(channel):
            raise ValueError("not a valid channel name")
        if user_id is not None and not valid_user_id(user_id):
            raise ValueError("a user id is an integer or a non-empty string")
        lifetime = self.settings.token_ttl if ttl is None else ttl
        if not 1 <= lifetime <= self.settings.token_max_ttl:
            raise ValueError("ttl out of range")
        await self.startup()
        token = new_token()
        await self.backend.store_token(token, TokenGrant(channel, user_id), lifetime)
        return token

    async def channels(self) -> list[ChannelInfo]:
        await self.startup()
        return await self.manager.channels()

    async def members(self, channel: str) -> dict[int, UserId | None]:
        await self.startup()
        return await self.manager.channel_members(channel)


def create_app(settings: Settings | None = None, **overrides: Any) -> Conveyor:
    """Build the ASGI application.

    With no ``settings``, they are read from the environment (``CONVEYOR_*``),
    then ``overrides`` (``Settings`` field names) are applied.
    """
    if settings is None:
        settings = Settings.from_env(**overrides)
    elif overrides:
        raise TypeError("pass either settings or keyword overrides, not both")
    return Conveyor(settings)


#: Set by ``python -m conveyor_asgi`` for the processes it serves.
CLI_MARKER = "_CONVEYOR_SERVED_BY_CLI"
_UVICORN_OWNED = ("CONVEYOR_PING_INTERVAL", "CONVEYOR_PING_TIMEOUT")


def _app_from_environment() -> Conveyor:
    text = os.environ.get("CONVEYOR_LOG_LEVEL", "INFO")
    level = text.strip().upper()
    level = "DEBUG" if level == "TRACE" else level  # uvicorn's extra level
    if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
        raise SystemExit(
            f"conveyor-asgi: invalid configuration: CONVEYOR_LOG_LEVEL={text!r} is not valid: "
            "expected one of critical, error, warning, info, debug, trace"
        )
    configure_standalone_logging(level)
    try:
        conveyor = create_app()
    except ConfigurationError as exc:
        raise SystemExit(f"conveyor-asgi: invalid configuration: {exc}") from None
    # Keepalive pings are uvicorn's: only the CLI can hand it these settings.
    ignored = [name for name in _UVICORN_OWNED if name in os.environ]
    if ignored and os.environ.get(CLI_MARKER) != "1":
        SERVER.warning(
            "%s: keepalive settings have no effect outside `python -m conveyor_asgi`; "
            "under plain uvicorn use --ws-ping-interval and --ws-ping-timeout",
            " and ".join(ignored),
        )
    return conveyor


app: Conveyor  # built from the environment on first access, for ``uvicorn conveyor_asgi.app:app``


def __getattr__(name: str) -> Any:
    # Built on first access so that importing this module for create_app()
    # does not read (or fail on) the environment.
    if name == "app":
        global app
        app = _app_from_environment()
        return app
    raise AttributeError(name)
