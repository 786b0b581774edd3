"""Opaque page tokens for keyset pagination, shared by every List RPC.

A token encodes the sort key of the last item of a page (for example its
creation time and id) plus the filter it was issued for, so a token reused with
another filter is refused instead of returning a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trinity_platform.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: tuple[Any, ...] | None


def _filter_digest(filters: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(filters), default=str).encode()).hexdigest()[:16]


def encode_page_token(last_key: Sequence[Any], filters: Sequence[Any] = ()) -> str:
    raw = json.dumps({"k": list(last_key), "f": _filter_digest(filters)}, default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def page_request(page_size: int, page_token: str, filters: Sequence[Any] = ()) -> PageRequest:
    """Validate page_size and page_token (INVALID_ARGUMENT with field violations)."""
    violations = []
    if page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after: tuple[Any, ...] | None = None
    if page_token:
        try:
            padded = page_token + "=" * (-len(page_token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if decoded.get("f") != _filter_digest(filters):
                violations.append(FieldViolation("page_token", "was issued for a different filter"))
            else:
                after = tuple(decoded["k"])
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            violations.append(FieldViolation("page_token", "is not a token this service issued"))
    if violations:
        raise InvalidArgument("invalid page request", violations)
    return PageRequest(size=size, after=after)
