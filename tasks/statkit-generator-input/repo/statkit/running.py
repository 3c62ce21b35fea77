"""Statistics of a stream in constant memory (Welford's algorithm)."""

from __future__ import annotations

import math
from typing import Iterable, Optional

from .summary import EmptyDataError, Number, Summary


class RunningStats:
    def __init__(self, values: Iterable[Number] = ()) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared distances from the mean
        self.minimum: Optional[Number] = None
        self.maximum: Optional[Number] = None
        for value in values:
            self.push(value)

    def push(self, value: Number) -> None:
        self.count += 1
        delta = value - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (value - self._mean)
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        self.maximum = value if self.maximum is None else max(self.maximum, value)

    @property
    def mean(self) -> float:
        if not self.count:
            raise EmptyDataError("no values yet")
        return self._mean

    @property
    def stdev(self) -> float:
        if not self.count:
            raise EmptyDataError("no values yet")
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 0.0

    def summary(self) -> Summary:
        return Summary(self.count, self.mean, self.minimum, self.maximum, self.stdev)
