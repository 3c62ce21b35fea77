"""whenparse: timestamps from logs and APIs, as UTC datetimes."""

from .parse import TimestampError, parse_timestamp, to_epoch
from .relative import ago

__all__ = ["TimestampError", "ago", "parse_timestamp", "to_epoch"]
__version__ = "0.5.0"
