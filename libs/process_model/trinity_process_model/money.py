"""Exact money as authors write it ("12.50 USD") and as the contract carries it (units + nanos).

Amounts are `Decimal` end to end; a float never touches them.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

from trinity_process_model.model import Money

__all__ = [
    "ISO_4217_CODES",
    "MAX_UNITS",
    "amount_from_units_nanos",
    "format_money",
    "money_problems",
    "parse_amount",
    "parse_money",
    "units_nanos",
]

ISO_4217_CODES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER
    ZAR ZMW ZWG ZWL
    """.split()  # noqa: SIM905 - a block of codes reads better than a list literal
)
"""ISO 4217 alphabetic codes in use (currencies, funds and precious metals; not XTS or XXX)."""

MAX_UNITS = 2**63 - 1
"""Largest whole-unit part the contract carries (int64)."""

_NANOS_PER_UNIT = 1_000_000_000
_EXACT = Context(prec=60)
_TEXT = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s+([A-Za-z]{3})\s*")
_HINT = 'write money as "<amount> <ISO 4217 code>", for example "12.50 USD"'


def parse_money(text: str) -> Money:
    """ "12.50 USD" → Money; ValueError with a readable reason otherwise."""
    match = _TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"bad money {text!r}; {_HINT}")
    currency = match.group(2)
    if currency != currency.upper():
        raise ValueError(f"bad money {text!r}: currency codes are upper case ({currency.upper()})")
    return Money(Decimal(match.group(1)), currency)


def parse_amount(value: str | int) -> Decimal:
    """An amount given on its own (a string or an integer, never a float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"bad amount {value!r}: write a decimal number like '12.50'") from None
        if amount.is_finite():
            return amount
    raise ValueError(f"bad amount {value!r}: write a decimal number like '12.50'")


_NO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_NO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
    **dict.fromkeys(_FOUR_DECIMALS.split(), 4),
}
"""Decimal places of the currencies whose minor unit is not a hundredth."""


def format_money(money: Money) -> str:
    """Money → "12.50 USD": the currency's usual decimal places (more when the amount has
    them), never exponent notation. Canonical: equal amounts read the same."""
    if not money.amount.is_finite():
        return f"{money.amount} {money.currency}"
    whole, _, fraction = f"{money.amount:f}".partition(".")
    fraction = fraction.rstrip("0").ljust(_MINOR_UNITS.get(money.currency, 2), "0")
    return f"{whole}.{fraction} {money.currency}" if fraction else f"{whole} {money.currency}"


def units_nanos(amount: Decimal) -> tuple[int, int]:
    """Exact (units, nanos) of `amount`, both with its sign; ValueError if not representable."""
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not a finite number")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    shift = exponent + 9
    coefficient = int("".join(map(str, digits)) or "0")
    if shift >= 0:
        if coefficient and shift > 30:
            raise ValueError(f"amount {amount} is too large")
        total = coefficient * 10**shift
    else:
        total, remainder = divmod(coefficient, 10**-shift)
        if remainder:
            raise ValueError(f"amount {amount:f} has more than 9 decimal places")
    units, nanos = divmod(total, _NANOS_PER_UNIT)
    if units > MAX_UNITS:
        raise ValueError(f"amount {amount:f} is too large")
    return (-units, -nanos) if sign else (units, nanos)


def amount_from_units_nanos(units: int, nanos: int) -> Decimal:
    """The exact amount of (units, nanos); ValueError on a malformed pair."""
    if not -_NANOS_PER_UNIT < nanos < _NANOS_PER_UNIT:
        raise ValueError(f"nanos {nanos} outside -999999999..999999999")
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise ValueError(f"units {units} and nanos {nanos} have different signs")
    total = units * _NANOS_PER_UNIT + nanos
    return Decimal(total).scaleb(-9, _EXACT).normalize(_EXACT) if total else Decimal(0)


def money_problems(money: Money) -> list[tuple[str, str]]:
    """What is wrong with an amount of a process definition: (field, description) pairs.

    The field is "amount" or "currency". Amounts are non-negative, at most 9 decimal
    places and int64 whole units (what the contract carries); currencies are ISO 4217.
    """
    problems: list[tuple[str, str]] = []
    amount = money.amount
    if not isinstance(amount, Decimal):
        problems.append(("amount", f"amount must be a Decimal, not {type(amount).__name__}"))
    elif not amount.is_finite():
        problems.append(("amount", f"amount {amount} is not a finite number"))
    else:
        if amount < 0:
            problems.append(("amount", f"amount {amount:f} is negative"))
        try:
            units_nanos(amount)
        except ValueError as exc:
            problems.append(("amount", str(exc)))
    if money.currency not in ISO_4217_CODES:
        problems.append(
            ("currency", f"unknown currency {money.currency!r}: use an ISO 4217 code like 'USD'")
        )
    return problems
