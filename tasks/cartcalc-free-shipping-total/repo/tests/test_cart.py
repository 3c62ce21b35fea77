from decimal import Decimal

import pytest

from cartcalc import Cart, Coupon, CouponError, Region


def D(text):
    return Decimal(text)


@pytest.fixture
def cart():
    cart = Cart()
    cart.add("mug", D("12.50"), quantity=2)
    return cart


def test_subtotal(cart):
    cart.add("spoon", D("1.25"), quantity=3)
    assert cart.subtotal == D("28.75")


def test_adding_the_same_sku_increases_quantity(cart):
    cart.add("mug", D("12.50"))
    assert [(item.sku, item.quantity) for item in cart.items] == [("mug", 3)]


def test_same_sku_with_a_different_price_is_refused(cart):
    with pytest.raises(ValueError):
        cart.add("mug", D("9.99"))


def test_remove(cart):
    cart.remove("mug", 1)
    assert cart.subtotal == D("12.50")
    cart.remove("mug")
    assert cart.items == []


def test_small_order_pays_shipping(cart):
    assert cart.shipping == D("4.99")
    assert cart.total == D("29.99")


def test_large_order_ships_free():
    cart = Cart()
    cart.add("kettle", D("60.00"))
    assert cart.shipping == D("0.00")


def test_empty_cart():
    cart = Cart()
    assert (cart.subtotal, cart.shipping, cart.total) == (D("0.00"), D("0.00"), D("0.00"))


def test_tax_is_charged_after_the_discount():
    cart = Cart(region=Region("US-CA", tax_rate=D("0.0725")))
    cart.add("lamp", D("40.00"))
    cart.apply(Coupon.percent("WELCOME10", 10))
    assert cart.discount == D("4.00")
    assert cart.tax == D("2.61")
    assert cart.total == D("43.60")


def test_fixed_coupon_with_minimum(cart):
    coupon = Coupon.fixed("FIVE", "5.00", min_subtotal="20")
    cart.apply(coupon)
    assert cart.discount == D("5.00")
    assert cart.total == D("24.99")


def test_coupon_below_minimum_is_refused(cart):
    with pytest.raises(CouponError):
        cart.apply(Coupon.fixed("BIG", "10.00", min_subtotal="100"))
    assert cart.coupon is None


def test_coupon_stops_counting_when_items_are_removed(cart):
    cart.apply(Coupon.fixed("FIVE", "5.00", min_subtotal="20"))
    cart.remove("mug", 1)
    assert cart.discount == D("0.00")


def test_discount_can_lose_free_shipping():
    cart = Cart()
    cart.add("kettle", D("52.00"))
    cart.apply(Coupon.percent("TEN", 10))
    assert cart.shipping == D("4.99")
    assert cart.total == D("51.79")


def test_summary(cart):
    assert cart.summary().splitlines() == [
        "2 x mug @ 12.50: 25.00",
        "subtotal: 25.00",
        "tax: 0.00",
        "shipping: 4.99",
        "total: 29.99",
    ]
