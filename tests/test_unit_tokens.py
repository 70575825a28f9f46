"""Temporary tokens: minting, comparison and the memory backend's token store."""

from __future__ import annotations

import asyncio
import base64

import pytest

from conveyor_asgi import Conveyor, Settings
from conveyor_asgi.auth import bearer_token, new_token, same_token
from conveyor_asgi.backends.memory import MemoryBackend
from conveyor_asgi.types import TokenGrant

pytestmark = pytest.mark.anyio


def test_new_tokens_have_at_least_128_random_bits_and_differ() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128


@pytest.mark.parametrize(
    ("given", "expected", "same"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", "abcd", False),
        ("", "abc", False),
        (None, "abc", False),
        ("abc", None, False),
        (None, None, False),
        ("ü€", "ü€", True),
    ],
)
def test_same_token(given: str | None, expected: str | None, same: bool) -> None:
    assert same_token(given, expected) is same


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_token_is_single_use() -> None:
    store = MemoryBackend()
    await store.store_token("t", TokenGrant(), 60)
    assert await store.take_token("t") == TokenGrant()
    assert await store.take_token("t") is None


async def test_token_keeps_its_grant() -> None:
    store = MemoryBackend()
    grant = TokenGrant(channel="room", user_id=453728974839278943)
    await store.store_token("t", grant, 60)
    assert await store.take_token("t") == grant


async def test_token_expires() -> None:
    store = MemoryBackend()
    await store.store_token("short", TokenGrant(), 0.05)
    await store.store_token("long", TokenGrant(), 60)
    await asyncio.sleep(0.1)
    assert await store.take_token("short") is None
    assert await store.take_token("long") is not None


async def test_channel_take_consumes_only_a_token_bound_to_that_channel() -> None:
    store = MemoryBackend()
    await store.store_token("bound", TokenGrant(channel="room"), 60)
    await store.store_token("free", TokenGrant(), 60)
    assert await store.take_token("bound", "other") is None
    assert await store.take_token("free", "room") is None
    assert await store.take_token("bound", "room") == TokenGrant(channel="room")
    assert await store.take_token("bound", "room") is None
    assert await store.take_token("free") == TokenGrant()


async def test_unknown_tokens_are_none() -> None:
    store = MemoryBackend()
    assert await store.take_token("never") is None
    assert await store.take_token("never", "room") is None


async def test_conveyor_mints_tokens_within_the_configured_bounds() -> None:
    conveyor = Conveyor(Settings(server_token="s", token_max_ttl=60, token_ttl=30))
    token = await conveyor.mint_token(channel="room", user_id="u", ttl=60)
    assert await conveyor.backend.take_token(token) == TokenGrant("room", "u")
    for bad in ({"ttl": 61}, {"ttl": 0.5}, {"channel": ""}, {"user_id": ""}, {"user_id": True}):
        with pytest.raises(ValueError):
            await conveyor.mint_token(**bad)  # type: ignore[arg-type]
    await conveyor.shutdown()
