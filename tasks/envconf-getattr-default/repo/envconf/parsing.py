"""Turning environment strings into Python values."""

from __future__ import annotations

import os
from typing import Union

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_list(value: str, separator: str = ",") -> list[str]:
    """Split "a, b,,c" into ["a", "b", "c"]."""
    return [item.strip() for item in value.split(separator) if item.strip()]


def read_dotenv(path: Union[str, "os.PathLike[str]"]) -> dict[str, str]:
    """Read KEY=value lines; '#' starts a comment, quotes around a value are removed."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export ") :].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"{path}:{number}: expected KEY=value, got {line!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            else:
                value = value.split(" #", 1)[0].rstrip()
            values[key] = value
    return values
