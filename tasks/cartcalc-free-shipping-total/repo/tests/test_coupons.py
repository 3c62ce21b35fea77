from decimal import Decimal

import pytest

from cartcalc import Coupon, CouponError


def test_percent_coupon():
    assert Coupon.percent("TEN", 10).discount_for(Decimal("80.00")) == Decimal("8.00")


def test_percent_coupon_rounds_to_cents():
    assert Coupon.percent("THIRD", 33).discount_for(Decimal("10.00")) == Decimal("3.30")
    assert Coupon.percent("FIFTEEN", 15).discount_for(Decimal("0.99")) == Decimal("0.15")


def test_fixed_coupon_never_exceeds_subtotal():
    assert Coupon.fixed("TWENTY", "20.00").discount_for(Decimal("12.00")) == Decimal("12.00")


def test_minimum_subtotal():
    coupon = Coupon.fixed("FIVE", "5.00", min_subtotal="30")
    with pytest.raises(CouponError, match="FIVE"):
        coupon.discount_for(Decimal("29.99"))


def test_percent_must_be_sensible():
    with pytest.raises(ValueError):
        Coupon.percent("ZERO", 0)
    with pytest.raises(ValueError):
        Coupon.percent("TOO_MUCH", 150)
