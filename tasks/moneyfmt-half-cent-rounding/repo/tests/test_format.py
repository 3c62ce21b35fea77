from decimal import Decimal

import pytest

from moneyfmt import UnknownCurrency, format_money, to_minor_units


def test_dollars():
    assert format_money(1234.5) == "$1,234.50"
    assert format_money(0) == "$0.00"
    assert format_money(Decimal("19.99")) == "$19.99"


def test_negative():
    assert format_money(-5) == "-$5.00"
    assert format_money(-3, "EUR") == "-3.00 €"


def test_symbol_after():
    assert format_money(1234.5, "EUR") == "1,234.50 €"


def test_no_grouping():
    assert format_money(1234567.891, grouping=False) == "$1234567.89"


def test_currency_without_decimals():
    assert format_money(1500, "JPY") == "¥1,500"


def test_three_decimals():
    assert format_money(Decimal("1.5"), "KWD") == "1.500 KD"


def test_rounds_to_the_nearest_cent():
    assert format_money(10.006) == "$10.01"
    assert format_money(10.004) == "$10.00"


def test_lower_case_code():
    assert format_money(1, "gbp") == "£1.00"


def test_unknown_currency():
    with pytest.raises(UnknownCurrency, match="XYZ"):
        format_money(1, "XYZ")


def test_to_minor_units():
    assert to_minor_units(19.99) == 1999
    assert to_minor_units(Decimal("0.07")) == 7
    assert to_minor_units(12, "JPY") == 12


def test_rejects_strings():
    with pytest.raises(TypeError):
        to_minor_units("1.00")
