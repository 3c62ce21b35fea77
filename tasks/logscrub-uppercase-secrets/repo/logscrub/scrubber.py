"""The scrubber itself."""

from __future__ import annotations

import re
from typing import Iterable, Pattern, Union

from .patterns import BEARER, DEFAULT_MASK, EMAIL, SECRET_KEYS, key_value_pattern


class Scrubber:
    """Replaces secrets in text with a mask."""

    def __init__(
        self,
        keys: Iterable[str] = SECRET_KEYS,
        mask: str = DEFAULT_MASK,
        emails: bool = True,
        patterns: Iterable[Union[str, Pattern[str]]] = (),
    ) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("Scrubber needs at least one secret key name")
        self.mask = mask
        self.emails = emails
        self.patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        self._key_value = key_value_pattern(self.keys)

    def scrub(self, text: str) -> str:
        """Return *text* with every secret replaced by the mask."""
        text = re.sub(self._key_value, self._keep_key, text, re.IGNORECASE)
        text = BEARER.sub(lambda m: m.group(1) + self.mask, text)
        if self.emails:
            text = EMAIL.sub(self.mask, text)
        for pattern in self.patterns:
            text = pattern.sub(self.mask, text)
        return text

    def scrub_mapping(self, data: dict) -> dict:
        """A copy of *data* (e.g. request headers or a JSON body) with secret values masked."""
        clean = {}
        for key, value in data.items():
            if isinstance(value, dict):
                clean[key] = self.scrub_mapping(value)
            elif isinstance(key, str) and key.lower() in self.keys:
                clean[key] = self.mask
            elif isinstance(value, str):
                clean[key] = self.scrub(value)
            else:
                clean[key] = value
        return clean

    def _keep_key(self, match: "re.Match[str]") -> str:
        return match.group(1) + self.mask
