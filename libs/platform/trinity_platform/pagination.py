"""Opaque, signed page tokens for keyset pagination, shared by every List RPC.

A token encodes the sort key of the last item of a page (for example its creation
time and id) plus a digest of the filter it was issued for, so a token reused with
another filter is refused instead of returning a silently wrong page. It is signed
(HMAC-SHA256, 128 bits) with the deployment's key, so a token the service did not
issue (edited, forged, truncated) is refused with INVALID_ARGUMENT and never reaches
a query.

The key comes from ``TRINITY_PAGE_TOKEN_KEY`` (comma-separated: the first signs,
every one is accepted, which lets a deployment rotate keys). Unset, the runtime
derives one from the service's database URL, stable across restarts and shared by
replicas, and warns: anyone who knows that URL can forge tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trinity_platform.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_PAGE_TOKEN_LENGTH = 2048
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"

_MAC_BYTES = 16
_KEY_CONTEXT = b"trinity page tokens v1\0"

# Sign with the first; accept all. Until the runtime configures the deployment's key,
# a random key of this process (tokens then do not survive a restart).
_keys: list[bytes] = [secrets.token_bytes(32)]


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: tuple[Any, ...] | None


def derive_page_token_keys(secrets_setting: str, fallback: str) -> list[bytes]:
    """Keys from ``TRINITY_PAGE_TOKEN_KEY`` (comma-separated), or one derived from
    ``fallback`` (the database URL) when the setting is empty."""
    sources = [s.strip() for s in secrets_setting.split(",") if s.strip()] or [fallback]
    return [hashlib.sha256(_KEY_CONTEXT + source.encode()).digest() for source in sources]


def configure_page_tokens(keys: Sequence[bytes]) -> None:
    """Sign with ``keys[0]`` from now on; accept every key of ``keys`` (and, when several
    services share one process, as tests do, the keys configured before)."""
    if not keys:
        raise ValueError("at least one page token key is needed")
    earlier = [k for k in _keys if k not in keys]
    _keys[:] = [*keys, *earlier]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _filter_digest(filters: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(filters), default=str).encode()).hexdigest()[:16]


def encode_page_token(last_key: Sequence[Any], filters: Sequence[Any] = ()) -> str:
    payload = json.dumps(
        {"k": list(last_key), "f": _filter_digest(filters)}, default=str, separators=(",", ":")
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(_keys[0], payload))}"


def _verified_payload(token: str) -> bytes | None:
    """The payload of a token this deployment signed, or None."""
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        return None
    body, dot, signature = token.partition(".")
    if not dot:
        return None
    try:
        payload, mac = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    if not any(hmac.compare_digest(mac, _mac(key, payload)) for key in _keys):
        return None
    return payload


def page_request(
    page_size: int,
    page_token: str,
    filters: Sequence[Any] = (),
    *,
    key_length: int | None = None,
) -> PageRequest:
    """Validate page_size and page_token (INVALID_ARGUMENT with field violations; reason
    INVALID_PAGE_TOKEN when the token is refused). ``key_length``: the number of values
    the token's sort key must have."""
    violations = []
    if page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after: tuple[Any, ...] | None = None
    token_problem = None
    if page_token:
        payload = _verified_payload(page_token)
        if payload is None:
            token_problem = "is not a token this service issued (pass next_page_token unchanged)"
        else:
            decoded = json.loads(payload)
            key = decoded.get("k")
            if decoded.get("f") != _filter_digest(filters):
                token_problem = "was issued for a different filter"
            elif not isinstance(key, list) or (key_length is not None and len(key) != key_length):
                token_problem = "is not a token of this query"
            else:
                after = tuple(key)
    if token_problem:
        violations.append(FieldViolation("page_token", token_problem))
    if violations:
        reason = INVALID_PAGE_TOKEN if token_problem else None
        raise InvalidArgument("invalid page request", violations, reason=reason)
    return PageRequest(size=size, after=after)


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "INVALID_PAGE_TOKEN",
    "MAX_PAGE_SIZE",
    "PageRequest",
    "configure_page_tokens",
    "derive_page_token_keys",
    "encode_page_token",
    "page_request",
]
