"""Logger names, and the filter that keeps tokens out of every log line."""

from __future__ import annotations

import logging
import re

#: Every logger the package uses; nothing logs under another name.
SERVER = logging.getLogger("conveyor_asgi.server")
CONNECTIONS = logging.getLogger("conveyor_asgi.connections")
ACTIONS = logging.getLogger("conveyor_asgi.actions")
BACKEND = logging.getLogger("conveyor_asgi.backend")

# Query parameters and headers that carry secrets.
_SECRET_PARAM = re.compile(r"(?i)\b((?:token|auth)=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"']+")

#: Loggers (ours and the server's) whose records pass through the filter.
_REDACTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
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
    return _BEARER.sub(r"\1[redacted]", _SECRET_PARAM.sub(r"\1[redacted]", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message so no token survives formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are redacted in place, not merged into the message:
        # uvicorn's access formatter unpacks ``record.args`` itself.
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to break further
            return True
        cleaned = redact(message)
        if cleaned != message:
            # A secret outside the string arguments: flatten the record.
            record.msg = cleaned
            record.args = None
        return True


_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Attach the redacting filter to our loggers and uvicorn's (idempotent)."""
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


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
