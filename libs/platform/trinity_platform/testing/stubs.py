"""Test clients that act as several principals: a stub whose calls carry a default
bearer token unless a call passes metadata of its own.

(Production channels attach their token with ``channels.open_channel(token=…)``,
which deliberately overrides what a caller passes.)
"""

from __future__ import annotations

from typing import Any


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (none for an empty token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class DefaultToken:
    """``stub`` with ``token`` on every call that passes no ``metadata`` itself."""

    def __init__(self, stub: Any, token: str) -> None:
        self._stub = stub
        self._metadata = bearer(token)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
            chosen = metadata if metadata is not None else (self._metadata or None)
            return method(request, *args, metadata=chosen, **kwargs)

        return call


__all__ = ["DefaultToken", "bearer"]
