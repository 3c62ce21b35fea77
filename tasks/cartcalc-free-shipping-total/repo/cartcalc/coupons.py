"""Discount coupons."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import money


class CouponError(ValueError):
    """A coupon that cannot be applied to this cart."""


@dataclass(frozen=True)
class Coupon:
    code: str
    percent_off: Decimal = Decimal("0")
    amount_off: Decimal = Decimal("0")
    min_subtotal: Decimal = Decimal("0")

    @classmethod
    def percent(cls, code: str, percent: int, min_subtotal: str = "0") -> "Coupon":
        if not 0 < percent <= 100:
            raise ValueError("percent must be in 1..100")
        return cls(code, percent_off=Decimal(percent), min_subtotal=Decimal(min_subtotal))

    @classmethod
    def fixed(cls, code: str, amount: str, min_subtotal: str = "0") -> "Coupon":
        return cls(code, amount_off=Decimal(amount), min_subtotal=Decimal(min_subtotal))

    def discount_for(self, subtotal: Decimal) -> Decimal:
        """How much this coupon takes off *subtotal* (never more than the subtotal)."""
        if subtotal < self.min_subtotal:
            raise CouponError(f"{self.code} needs a subtotal of at least {self.min_subtotal}")
        off = subtotal * self.percent_off / 100 + self.amount_off
        return money(min(off, subtotal))
