"""Logger names, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

#: Every logger the package uses; nothing logs under another name.
SERVER = logging.getLogger("conveyor_asgi.server")
CONNECTIONS = logging.getLogger("conveyor_asgi.connections")
ACTIONS = logging.getLogger("conveyor_asgi.actions")
BACKEND = logging.getLogger("conveyor_asgi.backend")

# Query parameters and headers that carry secrets.
_SECRET_PARAM = re.compile(r"(?i)\b((?:token|auth)=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"']+")
# Any query parameter whose key, once percent-decoded (twice, for doubly
# encoded text), names a token or auth value: the server decodes keys too, and
# a client that encodes its query wrongly (``token%3D...``, ``access_token=``)
# must not see its secret logged either.
_ANY_PARAM = re.compile(r"""(?<![^\s?&;'"(])([^\s&?;'"#()]+)""")
_SECRET_KEY_NAME = re.compile(r"(?i)token|auth")
# The same keys inside JSON text or a repr, as in debug logs of frames and scopes.
_SECRET_KEY = re.compile(r"""(?i)(["'](?:token|auth)["']\s*:\s*b?["'])[^"']*""")

#: Loggers (ours and the server's) whose records pass through the filter.
_REDACTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "websockets",
    "websockets.server",
    "conveyor_asgi",
    "conveyor_asgi.server",
    "conveyor_asgi.connections",
    "conveyor_asgi.actions",
    "conveyor_asgi.backend",
)


def _mask_param(match: re.Match[str]) -> str:
    segment = match.group(1)
    key, eq, _ = segment.partition("=")
    decoded = unquote_plus(unquote_plus(segment))
    name, has_value, _ = decoded.partition("=")
    if not has_value or not _SECRET_KEY_NAME.search(name):
        return segment  # plain words ("no token") and other parameters stay
    if eq:
        return f"{key}=[redacted]"
    return "[redacted]"


def redact(text: str) -> str:
    """``text`` with ``token=``/``auth=`` values (however encoded) and bearer tokens masked."""
    text = _SECRET_PARAM.sub(r"\1[redacted]", text)
    if _SECRET_KEY_NAME.search(unquote_plus(unquote_plus(text))):
        text = _ANY_PARAM.sub(_mask_param, text)
    text = _SECRET_KEY.sub(r"\1[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and arguments so no token survives formatting.

    Arguments are redacted one by one and keep their shape: uvicorn's access
    formatter unpacks them (client, method, path, version, status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to break further
            return True
        cleaned = redact(message)
        if cleaned != message:
            # The secret only shows once formatted (split over arguments, or in
            # an object's str()): keep the cleaned text alone.
            record.msg = cleaned
            record.args = None
        return True


def _redact_arg(value: object) -> object:
    if value is None or isinstance(value, (int, float)):
        return value  # keeps %d and %f working
    text = value if isinstance(value, str) else str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


_FILTER = RedactingFilter()

# What uvicorn logs at ERROR, with a traceback, when a client sends a text frame
# that is not UTF-8: the client's fault, already answered by closing its socket
# with 1007; at ERROR any client could flood the log with tracebacks.
_CLIENT_FAULTS = ("Invalid UTF-8 sequence received from client",)


class _ClientFaultFilter(logging.Filter):
    """Logs the server's reports of client protocol errors at INFO, without traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if record.levelno >= logging.ERROR and str(message).startswith(_CLIENT_FAULTS):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = None
            record.exc_text = None
        return True


_CLIENT_FAULT_FILTER = _ClientFaultFilter()


def install_redaction() -> None:
    """Attach the redacting filter to our loggers and uvicorn's (idempotent).

    The handlers already configured on them (and on the root logger) get it
    too: a logger's own filter does not see records its children propagate.
    """
    server_errors = logging.getLogger("uvicorn.error")
    if _CLIENT_FAULT_FILTER not in server_errors.filters:
        server_errors.addFilter(_CLIENT_FAULT_FILTER)
    loggers = [logging.getLogger(name) for name in _REDACTED_LOGGERS]
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for logger in [*loggers, logging.getLogger()]:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def configure_standalone_logging(level: str = "INFO") -> None:
    """Give our loggers a stderr handler when nobody configured one.

    Used when the server runs on its own (``uvicorn conveyor_asgi.app:app``);
    an application that mounts the server keeps its own logging setup.
    """
    root = logging.getLogger("conveyor_asgi")
    if root.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     [%(name)s] %(message)s"))
    handler.addFilter(_FILTER)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
