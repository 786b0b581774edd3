"""Exact money: the written form, units + nanos, and what validation says about it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity_process_model.model import Money
from trinity_process_model.money import (
    ISO_4217_CODES,
    amount_from_units_nanos,
    format_money,
    money_problems,
    parse_amount,
    parse_money,
    units_nanos,
)


@pytest.mark.parametrize(
    ("text", "money"),
    [
        ("12.50 USD", Money(Decimal("12.50"), "USD")),
        ("5 EUR", Money(Decimal(5), "EUR")),
        ("  0.000000001   CHF ", Money(Decimal("0.000000001"), "CHF")),
        ("-1.5 USD", Money(Decimal("-1.5"), "USD")),
        ("+.5 GBP", Money(Decimal("0.5"), "GBP")),
        ("7. JPY", Money(Decimal(7), "JPY")),
        ("1 XYZ", Money(Decimal(1), "XYZ")),  # well-formed; validation knows the codes
    ],
)
def test_parse_money(text: str, money: Money) -> None:
    assert parse_money(text) == money


@pytest.mark.parametrize(
    "text",
    [
        "",
        "USD",
        "12.50",
        "USD 12.50",
        "12,50 EUR",
        "1e3 USD",
        "12.50 usd",
        "12.50 US",
        "NaN USD",
        "1 USDX",
    ],
)
def test_parse_money_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_money(text)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(Decimal("12.5"), "USD"), "12.50 USD"),
        (Money(Decimal("12.500"), "USD"), "12.50 USD"),
        (Money(Decimal("1E+3"), "USD"), "1000.00 USD"),
        (Money(Decimal("0.123"), "USD"), "0.123 USD"),
        (Money(Decimal(300), "JPY"), "300 JPY"),
        (Money(Decimal("1.5"), "JPY"), "1.5 JPY"),
        (Money(Decimal("1.5"), "KWD"), "1.500 KWD"),
        (Money(Decimal("-0.5"), "EUR"), "-0.50 EUR"),
    ],
)
def test_format_money(money: Money, text: str) -> None:
    assert format_money(money) == text
    assert parse_money(text) == money


def test_parse_amount_takes_text_and_integers_only() -> None:
    assert parse_amount("1.10") == Decimal("1.10")
    assert parse_amount(3) == Decimal(3)
    for bad in (1.1, True, "abc", "NaN", "Infinity", None):
        with pytest.raises(ValueError):
            parse_amount(bad)  # type: ignore[arg-type]


def test_units_and_nanos_carry_the_sign() -> None:
    assert units_nanos(Decimal("-3.25")) == (-3, -250_000_000)
    assert amount_from_units_nanos(-3, -250_000_000) == Decimal("-3.25")
    assert amount_from_units_nanos(0, 0) == Decimal(0)


def test_money_problems() -> None:
    assert money_problems(Money(Decimal("1.00"), "USD")) == []
    assert money_problems(Money(Decimal("-1"), "ABC")) == [
        ("amount", "amount -1 is negative"),
        ("currency", "unknown currency 'ABC': use an ISO 4217 code like 'USD'"),
    ]
    assert money_problems(Money(1.5, "USD"))[0][1].startswith("amount must be a Decimal")  # type: ignore[arg-type]


def test_the_currency_list_is_iso_4217() -> None:
    assert {"USD", "EUR", "JPY", "CHF", "GBP", "CNY", "INR", "BRL", "KWD", "XAU"} <= ISO_4217_CODES
    assert not {"XTS", "XXX", "BTC", "usd", "EURO"} & ISO_4217_CODES
    assert all(len(code) == 3 and code.isupper() for code in ISO_4217_CODES)


@settings(max_examples=300)
@given(
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.integers(0, 999_999_999),
    st.sampled_from(sorted(ISO_4217_CODES)),
)
def test_units_nanos_round_trip(units: int, nanos: int, currency: str) -> None:
    nanos = -nanos if units < 0 else nanos
    amount = amount_from_units_nanos(units, nanos)
    assert units_nanos(amount) == (units, nanos)
    assert parse_money(format_money(Money(amount, currency))) == Money(amount, currency)
