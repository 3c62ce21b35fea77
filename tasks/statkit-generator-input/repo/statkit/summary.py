"""One-call summaries of a data set."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Union

Number = Union[int, float]


class EmptyDataError(ValueError):
    """Statistics of no data."""


@dataclass(frozen=True)
class Summary:
    count: int
    mean: float
    minimum: Number
    maximum: Number
    stdev: float  # sample standard deviation; 0.0 for a single value

    @property
    def range(self) -> Number:
        return self.maximum - self.minimum


def summarize(values: Iterable[Number]) -> Summary:
    """Count, mean, minimum, maximum and sample standard deviation of *values*."""
    count = 0
    total = 0.0
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"not a number: {value!r}")
        count += 1
        total += value
    if count == 0:
        raise EmptyDataError("summarize() needs at least one value")
    mean = total / count
    # Second pass over the data: the two-pass formula is more accurate than
    # accumulating sums of squares.
    squares = math.fsum((value - mean) ** 2 for value in values)
    stdev = math.sqrt(squares / (count - 1)) if count > 1 else 0.0
    return Summary(count, mean, min(values), max(values), stdev)
