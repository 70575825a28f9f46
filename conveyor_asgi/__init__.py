"""conveyor-asgi: a real-time WebSocket server speaking the Conveyor protocol."""

from __future__ import annotations

from .actions import ActionContext
from .app import Conveyor, create_app
from .backends import Backend, MemoryBackend
from .errors import (
    ActionError,
    BackendUnavailable,
    ConfigurationError,
    ConveyorError,
    InvalidField,
    Unauthorized,
)
from .settings import Settings
from .types import ChannelInfo, UserId

__version__ = "0.1.0"

__all__ = [
    "ActionContext",
    "ActionError",
    "Backend",
    "BackendUnavailable",
    "ChannelInfo",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "InvalidField",
    "MemoryBackend",
    "Settings",
    "Unauthorized",
    "UserId",
    "__version__",
    "create_app",
]
