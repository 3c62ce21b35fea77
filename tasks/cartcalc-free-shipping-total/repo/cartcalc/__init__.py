"""cartcalc: shopping-cart arithmetic."""

from .cart import Cart, LineItem
from .coupons import Coupon, CouponError
from .money import money
from .regions import DEFAULT_REGION, Region

__all__ = ["Cart", "Coupon", "CouponError", "DEFAULT_REGION", "LineItem", "Region", "money"]
__version__ = "0.6.1"
