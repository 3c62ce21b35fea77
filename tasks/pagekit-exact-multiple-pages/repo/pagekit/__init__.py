"""pagekit: pagination for lists, querysets and API responses."""

from .paginator import Page, PageOutOfRange, Paginator
from .window import page_window

__all__ = ["Page", "PageOutOfRange", "Paginator", "page_window"]
__version__ = "1.2.0"
