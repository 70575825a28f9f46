"""Backends: where shared state lives and how frames cross processes."""

from __future__ import annotations

from ..settings import Settings
from .base import Backend, Node
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend", "Node", "backend_from_url"]


def backend_from_url(settings: Settings) -> Backend:
    """The backend ``settings.backend_url`` names: ``memory://`` or ``redis://...``."""
    url = settings.backend_url
    if url.startswith("memory://"):
        return MemoryBackend()
    from .redis import RedisBackend  # redis-py is only needed for this backend

    return RedisBackend(url, prefix=settings.redis_prefix, node_timeout=settings.node_timeout)
