"""Server-token checks and temporary-token minting."""

from __future__ import annotations

import hmac
import secrets

#: 32 random bytes: 256 bits, URL-safe text of 43 characters.
_TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh temporary token with 256 random bits."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either side is missing."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
