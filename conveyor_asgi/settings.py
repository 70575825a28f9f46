"""Server settings: defaults, environment parsing and validation."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def _parse_int(text: str) -> int:
    return int(text.strip())


def _parse_float(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_token(text: str) -> str:
    if not text:
        # A blank line in an env file must not turn every check off.
        raise ValueError("it is empty; unset the variable to run without a token")
    return text


def _parse_origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _valid_origin(origin: object) -> bool:
    """``*``, or ``scheme://host[:port]`` with nothing after it (a trailing slash is allowed)."""
    if origin == "*":
        return True
    if not isinstance(origin, str):
        return False
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        bool(parts.scheme and parts.hostname)
        and parts.path in ("", "/")
        and not (parts.query or parts.fragment or parts.username or parts.password)
    )


def _parse_str(text: str) -> str:
    return text.strip()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server can be configured with.

    Each field can be passed here or given through the environment variable
    named in its metadata (see :meth:`from_env`). Invalid values raise
    :class:`~conveyor_asgi.errors.ConfigurationError` naming the setting.
    """

    # repr=False: settings end up in logs, tracebacks and test output.
    server_token: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={"env": "CONVEYOR_SERVER_TOKEN", "parse": _parse_token},
    )
    use_presence: bool = dataclasses.field(
        default=False, metadata={"env": "CONVEYOR_USE_PRESENCE", "parse": _parse_bool}
    )
    use_acknowledgment: bool = dataclasses.field(
        default=False, metadata={"env": "CONVEYOR_USE_ACKNOWLEDGMENT", "parse": _parse_bool}
    )
    acknowledgment_attempts: int = dataclasses.field(
        default=3, metadata={"env": "CONVEYOR_ACKNOWLEDGMENT_ATTEMPTS", "parse": _parse_int}
    )
    acknowledgment_timeout: float = dataclasses.field(
        default=0.5, metadata={"env": "CONVEYOR_ACKNOWLEDGMENT_TIMEOUT", "parse": _parse_float}
    )
    backend_url: str = dataclasses.field(
        default="memory://", metadata={"env": "CONVEYOR_BACKEND_URL", "parse": _parse_str}
    )
    max_message_bytes: int = dataclasses.field(
        default=65536, metadata={"env": "CONVEYOR_MAX_MESSAGE_BYTES", "parse": _parse_int}
    )
    token_ttl: float = dataclasses.field(
        default=300.0, metadata={"env": "CONVEYOR_TOKEN_TTL", "parse": _parse_float}
    )
    token_max_ttl: float = dataclasses.field(
        default=3600.0, metadata={"env": "CONVEYOR_TOKEN_MAX_TTL", "parse": _parse_float}
    )
    send_queue_size: int = dataclasses.field(
        default=1024, metadata={"env": "CONVEYOR_SEND_QUEUE_SIZE", "parse": _parse_int}
    )
    presence_window: float = dataclasses.field(
        default=0.0, metadata={"env": "CONVEYOR_PRESENCE_WINDOW", "parse": _parse_float}
    )
    allowed_origins: tuple[str, ...] = dataclasses.field(
        default=("*",), metadata={"env": "CONVEYOR_ALLOWED_ORIGINS", "parse": _parse_origins}
    )
    rate_limit: float = dataclasses.field(
        default=0.0, metadata={"env": "CONVEYOR_RATE_LIMIT", "parse": _parse_float}
    )
    rate_burst: int = dataclasses.field(
        default=50, metadata={"env": "CONVEYOR_RATE_BURST", "parse": _parse_int}
    )
    max_connections: int = dataclasses.field(
        default=0, metadata={"env": "CONVEYOR_MAX_CONNECTIONS", "parse": _parse_int}
    )
    max_connections_per_ip: int = dataclasses.field(
        default=0, metadata={"env": "CONVEYOR_MAX_CONNECTIONS_PER_IP", "parse": _parse_int}
    )
    max_channel_members: int = dataclasses.field(
        default=0, metadata={"env": "CONVEYOR_MAX_CHANNEL_MEMBERS", "parse": _parse_int}
    )
    max_http_body_bytes: int = dataclasses.field(
        default=1048576, metadata={"env": "CONVEYOR_MAX_HTTP_BODY_BYTES", "parse": _parse_int}
    )
    redis_prefix: str = dataclasses.field(
        default="conveyor", metadata={"env": "CONVEYOR_REDIS_PREFIX", "parse": _parse_str}
    )
    node_timeout: float = dataclasses.field(
        default=10.0, metadata={"env": "CONVEYOR_NODE_TIMEOUT", "parse": _parse_float}
    )
    ping_interval: float = dataclasses.field(
        default=20.0, metadata={"env": "CONVEYOR_PING_INTERVAL", "parse": _parse_float}
    )
    ping_timeout: float = dataclasses.field(
        default=20.0, metadata={"env": "CONVEYOR_PING_TIMEOUT", "parse": _parse_float}
    )
    send_timeout: float = dataclasses.field(
        default=30.0, metadata={"env": "CONVEYOR_SEND_TIMEOUT", "parse": _parse_float}
    )

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then ``overrides``.

        Raises :class:`ConfigurationError` naming the variable when a value
        cannot be parsed or is out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.metadata["env"]
            if name not in env:
                continue
            parse: Callable[[str], Any] = field.metadata["parse"]
            try:
                values[field.name] = parse(env[name])
            except ValueError as exc:
                raise ConfigurationError(f"{name}={env[name]!r} is not valid: {exc}") from None
        values.update(overrides)
        return cls(**values)

    @property
    def open(self) -> bool:
        """True when no server token is configured: no token is checked anywhere."""
        return self.server_token is None


def _env_name(field_name: str) -> str:
    for field in dataclasses.fields(Settings):
        if field.name == field_name:
            return str(field.metadata["env"])
    return field_name


def _require(condition: bool, field_name: str, rule: str, value: object) -> None:
    if not condition:
        raise ConfigurationError(
            f"{_env_name(field_name)} (Settings.{field_name}) must be {rule}, got {value!r}"
        )


def _validate(s: Settings) -> None:
    def number(name: str, value: object, integer: bool) -> None:
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool)
        if ok and isinstance(value, float):
            ok = math.isfinite(value)
        _require(ok, name, "an integer" if integer else "a number", value)

    for name in ("use_presence", "use_acknowledgment"):
        _require(isinstance(getattr(s, name), bool), name, "a boolean", getattr(s, name))
    for name in (
        "acknowledgment_attempts",
        "max_message_bytes",
        "send_queue_size",
        "rate_burst",
        "max_connections",
        "max_connections_per_ip",
        "max_channel_members",
        "max_http_body_bytes",
    ):
        number(name, getattr(s, name), integer=True)
    for name in (
        "acknowledgment_timeout",
        "token_ttl",
        "token_max_ttl",
        "presence_window",
        "rate_limit",
        "node_timeout",
        "ping_interval",
        "ping_timeout",
        "send_timeout",
    ):
        number(name, getattr(s, name), integer=False)

    _require(
        s.server_token is None
        or (isinstance(s.server_token, str) and s.server_token.strip() == s.server_token != ""),
        "server_token",
        "a non-empty string without surrounding white space, or unset",
        "<hidden>",
    )
    _require(
        s.acknowledgment_attempts >= 0, "acknowledgment_attempts", ">= 0", s.acknowledgment_attempts
    )
    _require(
        s.acknowledgment_timeout > 0, "acknowledgment_timeout", "> 0", s.acknowledgment_timeout
    )
    _require(s.max_message_bytes >= 1, "max_message_bytes", ">= 1", s.max_message_bytes)
    _require(s.token_max_ttl >= 1, "token_max_ttl", ">= 1", s.token_max_ttl)
    _require(
        1 <= s.token_ttl <= s.token_max_ttl,
        "token_ttl",
        f"between 1 and CONVEYOR_TOKEN_MAX_TTL ({s.token_max_ttl})",
        s.token_ttl,
    )
    _require(s.send_queue_size >= 1, "send_queue_size", ">= 1", s.send_queue_size)
    _require(s.presence_window >= 0, "presence_window", ">= 0", s.presence_window)
    _require(s.rate_limit >= 0, "rate_limit", ">= 0 (0 turns it off)", s.rate_limit)
    _require(s.rate_burst >= 1, "rate_burst", ">= 1", s.rate_burst)
    for name in ("max_connections", "max_connections_per_ip", "max_channel_members"):
        _require(getattr(s, name) >= 0, name, ">= 0 (0 means unlimited)", getattr(s, name))
    _require(s.max_http_body_bytes >= 1, "max_http_body_bytes", ">= 1", s.max_http_body_bytes)
    _require(s.node_timeout > 0, "node_timeout", "> 0", s.node_timeout)
    _require(s.ping_interval >= 0, "ping_interval", ">= 0 (0 turns pings off)", s.ping_interval)
    _require(s.ping_timeout > 0, "ping_timeout", "> 0", s.ping_timeout)
    _require(s.send_timeout >= 0, "send_timeout", ">= 0 (0 turns it off)", s.send_timeout)
    _require(
        isinstance(s.allowed_origins, tuple)
        and len(s.allowed_origins) > 0
        and all(_valid_origin(origin) for origin in s.allowed_origins),
        "allowed_origins",
        "'*' or comma-separated origins of the form scheme://host[:port]",
        s.allowed_origins,
    )
    _require(
        isinstance(s.backend_url, str)
        and (
            s.backend_url.startswith("memory://")
            or s.backend_url.startswith(("redis://", "rediss://", "unix://"))
        ),
        "backend_url",
        "memory:// or redis://host:port/db",
        s.backend_url,
    )
    _require(
        isinstance(s.redis_prefix, str) and s.redis_prefix != "",
        "redis_prefix",
        "a non-empty string",
        s.redis_prefix,
    )
