"""Text to bytes."""

from __future__ import annotations

import re

from .units import SI_BASE, SI_UNITS


class SizeError(ValueError):
    """Text that is not a size."""


_SIZE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([A-Za-z]*)\s*$")

# Lower-case unit -> multiplier. "k", "m", "g" alone are accepted as shorthands.
_MULTIPLIERS = {"": 1, "b": 1}
for _power, _unit in enumerate(SI_UNITS[1:], 1):
    _MULTIPLIERS[_unit.lower()] = SI_BASE**_power
    _MULTIPLIERS[_unit[0].lower()] = SI_BASE**_power


def parse_size(text: str) -> int:
    """Parse '1.5 MB', '200k' or '42' into a number of bytes (rounded down)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_size() expects a str, not {type(text).__name__}")
    match = _SIZE.match(text.replace("_", ""))
    if not match:
        raise SizeError(f"not a size: {text!r}")
    number, unit = match.groups()
    try:
        multiplier = _MULTIPLIERS[unit.lower()]
    except KeyError:
        raise SizeError(f"unknown unit {unit!r} in {text!r}") from None
    return int(float(number) * multiplier)
