from decimal import Decimal

import pytest

from moneyfmt import split


def test_even_split():
    assert split(9, 3) == [Decimal("3.00")] * 3


def test_leftover_cents_go_first():
    assert split(10, 3) == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]


def test_parts_add_up():
    shares = split(Decimal("100.00"), 7)
    assert sum(shares) == Decimal("100.00")


def test_weights():
    assert split(100, 3, weights=[2, 1, 1]) == [Decimal("50.00"), Decimal("25.00"), Decimal("25.00")]


def test_negative_amount():
    assert split(-10, 3) == [Decimal("-3.34"), Decimal("-3.33"), Decimal("-3.33")]


def test_currency_without_decimals():
    assert split(1000, 3, currency="JPY") == [Decimal("334"), Decimal("333"), Decimal("333")]


def test_bad_arguments():
    with pytest.raises(ValueError):
        split(10, 0)
    with pytest.raises(ValueError):
        split(10, 2, weights=[1])
