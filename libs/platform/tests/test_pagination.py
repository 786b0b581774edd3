from __future__ import annotations

import pytest

from trinity_platform.errors import InvalidArgument
from trinity_platform.pagination import MAX_PAGE_SIZE, encode_page_token, page_request


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
