"""sizefmt: human-readable byte sizes, both ways."""

from .format import format_size
from .parse import SizeError, parse_size

__all__ = ["SizeError", "format_size", "parse_size"]
__version__ = "1.0.3"
