"""The cart."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Dict, List, Optional

from .coupons import Coupon, CouponError
from .money import money
from .regions import DEFAULT_REGION, Region


@dataclass
class LineItem:
    sku: str
    unit_price: Decimal
    quantity: int = 1

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


class Cart:
    def __init__(self, region: Region = DEFAULT_REGION) -> None:
        self.region = region
        self._items: Dict[str, LineItem] = {}
        self.coupon: Optional[Coupon] = None

    @property
    def items(self) -> List[LineItem]:
        return list(self._items.values())

    def add(self, sku: str, unit_price: Decimal, quantity: int = 1) -> LineItem:
        if quantity < 1:
            raise ValueError("quantity must be at least 1")
        if unit_price < 0:
            raise ValueError("unit_price cannot be negative")
        item = self._items.get(sku)
        if item is None:
            item = self._items[sku] = LineItem(sku, Decimal(unit_price), 0)
        elif item.unit_price != unit_price:
            raise ValueError(f"{sku} is already in the cart at {item.unit_price}")
        item.quantity += quantity
        return item

    def remove(self, sku: str, quantity: Optional[int] = None) -> None:
        """Remove *quantity* of *sku*, or all of it."""
        item = self._items[sku]
        if quantity is None or quantity >= item.quantity:
            del self._items[sku]
        else:
            item.quantity -= quantity

    def apply(self, coupon: Coupon) -> None:
        coupon.discount_for(self.subtotal)  # raises CouponError when it does not apply
        self.coupon = coupon

    @property
    def subtotal(self) -> Decimal:
        return money(sum((item.amount for item in self._items.values()), Decimal("0")))

    @property
    def discount(self) -> Decimal:
        if self.coupon is None:
            return money(0)
        try:
            return self.coupon.discount_for(self.subtotal)
        except CouponError:
            # Items were removed after the coupon was applied: it no longer counts.
            return money(0)

    @property
    def tax(self) -> Decimal:
        return money((self.subtotal - self.discount) * self.region.tax_rate)

    @property
    def shipping(self) -> Decimal:
        if not self._items or self.subtotal - self.discount >= self.region.free_shipping_over:
            return money(0)
        return money(self.region.shipping_fee)

    @property
    def total(self) -> Decimal:
        if not self._items:
            return money(0)
        net = self.subtotal - self.discount
        # Shipping is free once the discounted subtotal reaches the threshold.
        return money(net + self.tax + self.region.shipping_fee if net < self.region.free_shipping_over else 0)

    def summary(self) -> str:
        lines = [f"{item.quantity} x {item.sku} @ {item.unit_price}: {money(item.amount)}" for item in self.items]
        lines.append(f"subtotal: {self.subtotal}")
        if self.coupon is not None:
            lines.append(f"discount ({self.coupon.code}): -{self.discount}")
        lines += [f"tax: {self.tax}", f"shipping: {self.shipping}", f"total: {self.total}"]
        return "\n".join(lines)
