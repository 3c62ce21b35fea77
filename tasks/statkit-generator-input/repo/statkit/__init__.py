"""statkit: descriptive statistics for plain Python numbers."""

from .percentiles import median, percentile
from .running import RunningStats
from .summary import EmptyDataError, Summary, summarize

__all__ = ["EmptyDataError", "RunningStats", "Summary", "median", "percentile", "summarize"]
__version__ = "0.2.4"
