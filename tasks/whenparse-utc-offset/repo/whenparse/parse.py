"""Text, numbers and datetimes to aware UTC datetimes."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Union

When = Union[str, int, float, datetime, date]


class TimestampError(ValueError):
    """Something that is not a timestamp."""


_DATE_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})"  # date
    r"(?:[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?"  # time, fraction
    r"(Z|[+-]\d{2}:?\d{2})?$",  # offset
    re.IGNORECASE,
)


def parse_timestamp(value: When) -> datetime:
    """*value* as an aware datetime in UTC. Naive input is taken to be UTC."""
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if not isinstance(value, str):
        raise TypeError(f"cannot parse a timestamp from {type(value).__name__}")

    text = value.strip()
    match = _DATE_TIME.match(text)
    if not match:
        raise TimestampError(f"not a timestamp: {value!r}")
    day, clock, fraction, _offset = match.groups()
    clock = clock or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    try:
        parsed = datetime.strptime(f"{day}T{clock}", "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise TimestampError(f"not a timestamp: {value!r} ({exc})") from None
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[1:7].ljust(6, "0")))
    return parsed.replace(tzinfo=timezone.utc)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def to_epoch(value: When) -> int:
    """Whole seconds since 1970-01-01T00:00:00Z."""
    return int(parse_timestamp(value).timestamp())
