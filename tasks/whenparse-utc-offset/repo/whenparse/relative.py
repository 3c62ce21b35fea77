"""'3 minutes ago', 'in 2 days'."""

from __future__ import annotations

from typing import Optional

from .parse import When, parse_timestamp

_UNITS = (
    ("year", 365 * 24 * 3600),
    ("month", 30 * 24 * 3600),
    ("day", 24 * 3600),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)


def ago(value: When, now: Optional[When] = None) -> str:
    """How long before *now* (default: the current time) *value* was, in words."""
    from datetime import datetime, timezone

    moment = parse_timestamp(value)
    current = parse_timestamp(now) if now is not None else datetime.now(timezone.utc)
    seconds = int((current - moment).total_seconds())
    if abs(seconds) < 10:
        return "just now"
    for name, size in _UNITS:
        count = abs(seconds) // size
        if count:
            words = f"{count} {name}{'s' if count != 1 else ''}"
            return f"{words} ago" if seconds > 0 else f"in {words}"
    raise AssertionError("unreachable")
