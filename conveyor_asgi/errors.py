"""The exception hierarchy and the WebSocket close codes the server uses."""

from __future__ import annotations

# Close codes. 1000-range codes are RFC 6455's; 4000-range ones are ours.
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008  # refused before acceptance (HTTP 403 at the handshake)
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012  # server shutting down or restarting: reconnect
CLOSE_TRY_AGAIN_LATER = 1013  # evicted: the client did not read fast enough
CLOSE_RATE_LIMITED = 4029  # kept sending far past the rate limit

# Error-frame codes (PROTOCOL.md section 6).
MISSING_ACTION = "missing-action"
UNKNOWN_ACTION = "unknown-action"
INVALID_FIELD = "invalid-field"
UNAUTHORIZED = "unauthorized"
RATE_LIMITED = "rate-limited"
CHANNEL_FULL = "channel-full"  # CONVEYOR_MAX_CHANNEL_MEMBERS reached


class ConveyorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(ConveyorError, ValueError):
    """A setting has a value the server cannot run with."""


class BackendUnavailable(ConveyorError):
    """The shared backend (Redis) cannot be reached right now."""


class ActionError(ConveyorError):
    """Raised by an action or middleware to answer the sender with an error frame.

    ``code`` is one of the error-frame codes; ``message`` is the
    human-readable text sent as the frame's ``data``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidField(ActionError):
    def __init__(self, message: str) -> None:
        super().__init__(INVALID_FIELD, message)


class Unauthorized(ActionError):
    def __init__(self, message: str) -> None:
        super().__init__(UNAUTHORIZED, message)
