"""Percentiles with linear interpolation (the same method as NumPy's default)."""

from __future__ import annotations

import math
from typing import Iterable

from .summary import EmptyDataError, Number


def percentile(values: Iterable[Number], q: float) -> float:
    """The *q*-th percentile (0 <= q <= 100) of *values*."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    data = sorted(values)
    if not data:
        raise EmptyDataError("percentile() needs at least one value")
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(data[low])
    return data[low] + (data[high] - data[low]) * (position - low)


def median(values: Iterable[Number]) -> float:
    return percentile(values, 50)
