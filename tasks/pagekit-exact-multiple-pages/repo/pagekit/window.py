"""Which page numbers a navigation bar shows."""

from __future__ import annotations


def page_window(current: int, num_pages: int, size: int = 5) -> list[int]:
    """Up to *size* consecutive page numbers around *current*, within 1..num_pages.

    The window is centred on *current* where it can be and slides to stay
    inside the range near either end: page 1 of 10 shows 1-5, page 10 shows 6-10.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    if not 1 <= current <= max(num_pages, 1):
        raise ValueError(f"page {current} is outside 1..{num_pages}")
    if num_pages <= size:
        return list(range(1, num_pages + 1))
    start = current - (size - 1) // 2
    start = max(1, min(start, num_pages - size + 1))
    return list(range(start, start + size))
