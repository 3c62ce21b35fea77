"""Where the order ships: tax rate and shipping rules."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Region:
    code: str
    tax_rate: Decimal = Decimal("0")
    shipping_fee: Decimal = Decimal("4.99")
    free_shipping_over: Decimal = Decimal("50.00")


DEFAULT_REGION = Region("US")
