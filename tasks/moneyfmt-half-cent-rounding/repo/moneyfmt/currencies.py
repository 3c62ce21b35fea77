"""The currencies moneyfmt knows."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownCurrency(KeyError):
    pass


@dataclass(frozen=True)
class Currency:
    code: str
    symbol: str
    decimals: int = 2
    symbol_first: bool = True  # "$5.00" rather than "5.00 €"


CURRENCIES = {
    c.code: c
    for c in (
        Currency("USD", "$"),
        Currency("CAD", "CA$"),
        Currency("GBP", "£"),
        Currency("EUR", "€", symbol_first=False),
        Currency("CHF", "CHF", symbol_first=False),
        Currency("JPY", "¥", decimals=0),
        Currency("KWD", "KD", decimals=3, symbol_first=False),
    )
}


def get_currency(code: str) -> Currency:
    try:
        return CURRENCIES[code.upper()]
    except KeyError:
        raise UnknownCurrency(f"unknown currency {code!r}; known: {', '.join(sorted(CURRENCIES))}") from None
