"""Logger names, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

#: Every logger the package uses; nothing logs under another name.
SERVER = logging.getLogger("conveyor_asgi.server")
CONNECTIONS = logging.getLogger("conveyor_asgi.connections")
ACTIONS = logging.getLogger("conveyor_asgi.actions")
BACKEND = logging.getLogger("conveyor_asgi.backend")

# Query parameters and headers that carry secrets.
_SECRET_PARAM = re.compile(r"(?i)\b((?:token|auth)=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"']+")
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


def redact(text: str) -> str:
    """``text`` with the values of ``token=``/``auth=`` and bearer tokens masked."""
    text = _SECRET_PARAM.sub(r"\1[redacted]", text)
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


def install_redaction() -> None:
    """Attach the redacting filter to our loggers and uvicorn's (idempotent).

    The handlers already configured on them (and on the root logger) get it
    too: a logger's own filter does not see records its children propagate.
    """
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
