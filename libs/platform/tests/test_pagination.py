from __future__ import annotations

import base64
import json

import pytest

from trinity_platform import pagination
from trinity_platform.errors import InvalidArgument
from trinity_platform.pagination import (
    MAX_PAGE_SIZE,
    configure_page_tokens,
    derive_page_token_keys,
    encode_page_token,
    page_request,
)


def test_token_round_trips_the_last_key_for_the_same_filter() -> None:
    token = encode_page_token(["2026-11-22T05:00:00+00:00", "exec-7"], filters=["orders"])
    request = page_request(10, token, filters=["orders"])
    assert request.after == ("2026-11-22T05:00:00+00:00", "exec-7")
    assert request.size == 10


def test_defaults_and_caps_the_page_size() -> None:
    assert page_request(0, "").size == 50
    assert page_request(10_000, "").size == MAX_PAGE_SIZE
    assert page_request(0, "").after is None


@pytest.mark.parametrize("token", ["not-a-token", "e30", "!!!!"])
def test_garbage_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        page_request(10, token)
    assert [v.field for v in raised.value.violations] == ["page_token"]


def test_a_token_of_another_filter_is_refused() -> None:
    token = encode_page_token(["k"], filters=["orders"])
    with pytest.raises(InvalidArgument) as raised:
        page_request(10, token, filters=["invoices"])
    assert "different filter" in raised.value.violations[0].description


def test_negative_page_size_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        page_request(-1, "")
    assert raised.value.violations[0].field == "page_size"


def _forge(token: str, **changes: object) -> str:
    """``token`` with its payload edited and the signature kept."""
    body, _, signature = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{edited}.{signature}"


def test_an_edited_token_is_refused() -> None:
    token = encode_page_token(["2026-11-22T05:00:00+00:00", "exec-7"], filters=["orders"])
    for forged in (
        _forge(token, k=["9999-01-01T00:00:00+00:00", "exec-7"]),
        _forge(token, k=[{"$gt": 1}, "x"]),
        token.rsplit(".", 1)[0],  # signature dropped
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature altered
        "x" * 5000,
    ):
        with pytest.raises(InvalidArgument) as raised:
            page_request(10, forged, filters=["orders"])
        assert raised.value.reason == "INVALID_PAGE_TOKEN"
        assert [v.field for v in raised.value.violations] == ["page_token"]


def test_a_token_signed_with_another_deployments_key_is_refused() -> None:
    theirs = derive_page_token_keys("their-secret", "")
    ours = derive_page_token_keys("our-secret", "")
    configure_page_tokens(theirs)
    token = encode_page_token(["k"])
    configure_page_tokens(ours)
    pagination._keys[:] = ours  # as a process that only ever knew our key
    with pytest.raises(InvalidArgument):
        page_request(10, token)
    assert page_request(10, encode_page_token(["k"])).after == ("k",)


def test_keys_rotate_the_first_signs_and_every_one_is_accepted() -> None:
    old = derive_page_token_keys("old", "")
    configure_page_tokens(old)
    issued_before = encode_page_token(["k"])
    configure_page_tokens(derive_page_token_keys("new,old", ""))
    assert page_request(10, issued_before).after == ("k",)
    assert encode_page_token(["k"]) != issued_before


def test_the_default_key_is_derived_from_the_database_url() -> None:
    first = derive_page_token_keys("", "postgresql://u:p@db/definition")
    assert first == derive_page_token_keys("", "postgresql://u:p@db/definition")
    assert first != derive_page_token_keys("", "postgresql://u:p@db/execution")
    assert first != derive_page_token_keys("postgresql://u:p@db/definition-x", "")


def test_a_token_of_the_wrong_shape_for_the_query_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        page_request(10, encode_page_token(["a", "b", "c"]), key_length=2)
