"""Opaque page tokens: the keyset position of the last item, bound to the query's filter.

A token is ``base64url(json)``; it is only meaningful to the query (and filter)
that produced it, and anything else is refused with INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from trinity_definition.application.ports import ListCursor
from trinity_definition.domain.errors import INVALID_PAGE_TOKEN
from trinity_platform.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument(
            f"{field} must not be negative", [FieldViolation(field, "must be >= 0")]
        )
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _scope(query: str, filters: tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join((query, *filters)).encode()).hexdigest()[:16]


def encode_token(query: str, filters: tuple[str, ...], cursor: ListCursor) -> str:
    body = json.dumps({"q": _scope(query, filters), "k": list(cursor.key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(
    token: str, query: str, filters: tuple[str, ...], arity: int, field: str = "page_token"
) -> ListCursor | None:
    """The cursor of ``token`` (None for an empty token); raises InvalidArgument."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        key = body["k"]
        if (
            not isinstance(body, dict)
            or body.get("q") != _scope(query, filters)
            or not isinstance(key, list)
            or len(key) != arity
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in key)
        ):
            raise ValueError("foreign token")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not a token of this query (or its filter changed)",
            [FieldViolation(field, "pass the next_page_token of the same query unchanged")],
            reason=INVALID_PAGE_TOKEN,
        ) from None
    return ListCursor(tuple(key))
