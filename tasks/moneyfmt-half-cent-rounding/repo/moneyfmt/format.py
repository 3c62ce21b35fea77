"""Amounts to text."""

from __future__ import annotations

from decimal import Decimal
from typing import Union

from .currencies import get_currency

Amount = Union[int, float, Decimal]


def to_minor_units(amount: Amount, currency: str = "USD") -> int:
    """*amount* in the currency's smallest unit (cents for USD): 19.99 -> 1999."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
        raise TypeError(f"amount must be a number, not {type(amount).__name__}")
    scale = 10 ** get_currency(currency).decimals
    return int(round(amount * scale))


def format_money(amount: Amount, currency: str = "USD", *, grouping: bool = True) -> str:
    """'$1,234.50', '-3.00 €', '¥1,500': symbol, thousands separators, fixed decimals."""
    info = get_currency(currency)
    minor = to_minor_units(amount, currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**info.decimals)
    number = f"{whole:,}" if grouping else str(whole)
    if info.decimals:
        number += "." + str(fraction).zfill(info.decimals)
    if info.symbol_first:
        return f"{sign}{info.symbol}{number}"
    return f"{sign}{number} {info.symbol}"
