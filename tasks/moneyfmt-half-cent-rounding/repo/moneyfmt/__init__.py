"""moneyfmt: format and split money amounts."""

from .currencies import CURRENCIES, Currency, UnknownCurrency, get_currency
from .format import format_money, to_minor_units
from .split import split

__all__ = [
    "CURRENCIES",
    "Currency",
    "UnknownCurrency",
    "format_money",
    "get_currency",
    "split",
    "to_minor_units",
]
__version__ = "3.0.0"
