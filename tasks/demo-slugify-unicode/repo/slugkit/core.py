"""Turn titles into URL slugs."""

from __future__ import annotations

import re
from typing import Iterable, Optional

DEFAULT_SEPARATOR = "-"

# Apostrophes vanish instead of splitting words: "don't" -> "dont".
_APOSTROPHES = re.compile(r"['\u2019]")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(
    text: str,
    separator: str = DEFAULT_SEPARATOR,
    max_length: Optional[int] = None,
    stopwords: Iterable[str] = (),
) -> str:
    """Return a lowercase ASCII slug for *text*.

    Runs of anything that is not a letter or a digit become one *separator*.
    *stopwords* are dropped unless that would leave nothing. With *max_length*
    the slug is cut at a word boundary where possible.
    """
    if not isinstance(text, str):
        raise TypeError(f"slugify() expects a str, got {type(text).__name__}")
    if max_length is not None and max_length < 1:
        raise ValueError("max_length must be positive")

    text = _APOSTROPHES.sub("", text).lower()
    words = [word for word in _NON_ALNUM.split(text) if word]

    stop = {word.lower() for word in stopwords}
    if stop:
        words = [word for word in words if word not in stop] or words

    slug = separator.join(words)
    if max_length is not None:
        slug = _truncate(slug, separator, max_length)
    return slug


def _truncate(slug: str, separator: str, max_length: int) -> str:
    """Cut *slug* to *max_length*, preferring not to end mid-word."""
    if len(slug) <= max_length:
        return slug
    head, sep, _ = slug[: max_length + 1].rpartition(separator)
    if sep and head:
        return head
    # A single word longer than the limit: cut it.
    return slug[:max_length].rstrip(separator)
