"""Split a known number of items into numbered pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


class PageOutOfRange(LookupError):
    """A page number below 1 or past the last page."""


class Paginator:
    """Pages of *per_page* items over *total* items; page numbers start at 1."""

    def __init__(self, total: int, per_page: int = 20, orphans: int = 0) -> None:
        if per_page < 1:
            raise ValueError("per_page must be at least 1")
        if total < 0:
            raise ValueError("total cannot be negative")
        if orphans < 0:
            raise ValueError("orphans cannot be negative")
        self.total = total
        self.per_page = per_page
        # A last page with this many items or fewer is folded into the one before.
        self.orphans = orphans

    @property
    def num_pages(self) -> int:
        # An empty list still has one (empty) page, so "page 1 of 1" renders.
        hits = max(0, self.total - self.orphans)
        return hits // self.per_page + 1

    @property
    def page_range(self) -> range:
        return range(1, self.num_pages + 1)

    def validate(self, number: int) -> int:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"page number must be an int, not {type(number).__name__}")
        if number < 1:
            raise PageOutOfRange(f"page {number} is before the first page")
        if number > self.num_pages:
            raise PageOutOfRange(f"page {number} is past the last page ({self.num_pages})")
        return number

    def page(self, number: int) -> Page:
        return Page(self.validate(number), self)

    def __iter__(self):
        return (Page(number, self) for number in self.page_range)


@dataclass(frozen=True)
class Page:
    number: int
    paginator: Paginator

    @property
    def offset(self) -> int:
        """Zero-based index of the first item, for SQL OFFSET or list slicing."""
        return (self.number - 1) * self.paginator.per_page

    @property
    def limit(self) -> int:
        if self.is_last:
            return self.paginator.total - self.offset
        return self.paginator.per_page

    @property
    def is_last(self) -> bool:
        return self.number == self.paginator.num_pages

    @property
    def has_next(self) -> bool:
        return self.number < self.paginator.num_pages

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_number(self) -> int:
        if not self.has_next:
            raise PageOutOfRange("this is the last page")
        return self.number + 1

    @property
    def previous_number(self) -> int:
        if not self.has_previous:
            raise PageOutOfRange("this is the first page")
        return self.number - 1

    @property
    def start_index(self) -> int:
        """One-based index of the first item on this page (0 on an empty list)."""
        if self.paginator.total == 0:
            return 0
        return self.offset + 1

    @property
    def end_index(self) -> int:
        """One-based index of the last item on this page."""
        return self.offset + self.limit

    def slice(self, items: Sequence[T]) -> Sequence[T]:
        return items[self.offset : self.offset + self.limit]

    def __len__(self) -> int:
        return self.limit
