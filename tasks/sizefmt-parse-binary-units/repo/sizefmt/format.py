"""Bytes to text."""

from __future__ import annotations

from .units import IEC_BASE, IEC_UNITS, SI_BASE, SI_UNITS


def format_size(size: int, binary: bool = False, precision: int = 1) -> str:
    """Format *size* bytes: 1500 -> '1.5 kB'; with binary=True, 1536 -> '1.5 KiB'.

    Trailing zeros are dropped ('2 MB', not '2.0 MB'); sizes under one kilobyte
    are whole bytes ('512 B'). Negative sizes keep their sign.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if precision < 0:
        raise ValueError("precision cannot be negative")
    base, units = (IEC_BASE, IEC_UNITS) if binary else (SI_BASE, SI_UNITS)
    sign = "-" if size < 0 else ""
    value = float(abs(size))
    unit = units[0]
    for unit in units:
        # Move up a unit only when the rounded number would reach the next one.
        if round(value, precision) < base or unit == units[-1]:
            break
        value /= base
    if unit == units[0]:
        return f"{sign}{int(value)} {unit}"
    text = f"{value:.{precision}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text} {unit}"
