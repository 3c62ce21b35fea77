"""What a secret looks like."""

from __future__ import annotations

import re

# Keys whose values are secrets, in key=value or key: value form.
SECRET_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "client_secret",
)

DEFAULT_MASK = "***"

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
BEARER = re.compile(r"\b(Bearer\s+)[\w.~+/=-]+", re.IGNORECASE)


def key_value_pattern(keys) -> str:
    """A regex for `key=value`, `key: value` or `"key": "value"` with one of *keys*.

    Group 1 is everything up to the value, group 2 the value.
    """
    names = "|".join(sorted((re.escape(key) for key in keys), key=len, reverse=True))
    return rf"""(\b(?:{names})["']?\s*[=:]\s*["']?)([^\s"'&,;]+)"""
