"""Slugs that stay unique within one collection ("intro", "intro-2", ...)."""

from __future__ import annotations

from typing import Iterable, Optional

from .core import DEFAULT_SEPARATOR, slugify

FALLBACK = "n-a"  # for titles with no letters or digits at all


class UniqueSlugger:
    """Hands out slugs, adding a numeric suffix when one is already taken."""

    def __init__(
        self,
        separator: str = DEFAULT_SEPARATOR,
        max_length: Optional[int] = None,
        taken: Iterable[str] = (),
    ) -> None:
        self.separator = separator
        self.max_length = max_length
        self._taken = set(taken)

    def __call__(self, text: str) -> str:
        base = slugify(text, self.separator, self.max_length) or FALLBACK
        slug = base
        number = 2
        while slug in self._taken:
            suffix = f"{self.separator}{number}"
            stem = base
            if self.max_length is not None:
                # Keep the whole slug within max_length, suffix included.
                stem = base[: self.max_length - len(suffix)].rstrip(self.separator)
            slug = stem + suffix
            number += 1
        self._taken.add(slug)
        return slug

    def __contains__(self, slug: object) -> bool:
        return slug in self._taken

    def __len__(self) -> int:
        return len(self._taken)

    def release(self, slug: str) -> None:
        """Make *slug* available again (its page was deleted)."""
        self._taken.discard(slug)
