"""Split an amount into parts that add up exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import List, Optional, Sequence

from .currencies import get_currency
from .format import Amount, to_minor_units


def split(
    amount: Amount,
    parts: int,
    currency: str = "USD",
    weights: Optional[Sequence[int]] = None,
) -> List[Decimal]:
    """Split *amount* into *parts* (or by *weights*) whose sum is exactly *amount*.

    Leftover minor units go to the first parts: split(10, 3) -> [3.34, 3.33, 3.33].
    """
    if weights is None:
        if parts < 1:
            raise ValueError("parts must be at least 1")
        weights = [1] * parts
    elif len(weights) != parts or any(w < 0 for w in weights) or not any(weights):
        raise ValueError("weights must be one non-negative number per part, not all zero")
    info = get_currency(currency)
    total = to_minor_units(amount, currency)
    sign = -1 if total < 0 else 1
    total = abs(total)
    weight_sum = sum(weights)
    shares = [total * w // weight_sum for w in weights]
    for i in range(total - sum(shares)):
        shares[i % parts] += 1
    exponent = Decimal(1).scaleb(-info.decimals)
    return [(Decimal(sign * share) * exponent).quantize(exponent) for share in shares]
