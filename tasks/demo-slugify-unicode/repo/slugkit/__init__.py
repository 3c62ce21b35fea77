"""slugkit: URL slugs from arbitrary titles."""

from .core import DEFAULT_SEPARATOR, slugify
from .unique import UniqueSlugger

__all__ = ["DEFAULT_SEPARATOR", "UniqueSlugger", "slugify"]
__version__ = "0.3.1"
