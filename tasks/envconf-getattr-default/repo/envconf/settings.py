"""Settings: a read-only view of configuration variables."""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Optional, TypeVar

from .parsing import parse_bool, parse_list, read_dotenv

T = TypeVar("T")
_UNSET = object()


class MissingSetting(KeyError):
    """A required setting is not set."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; a plain message reads better.
        return str(self.args[0]) if self.args else ""


class Settings(Mapping[str, str]):
    """Configuration values by case-insensitive name, as items or attributes."""

    def __init__(self, values: Mapping[str, str], prefix: str = "") -> None:
        self._prefix = prefix.upper()
        self._values = {key.upper(): value for key, value in values.items()}

    @classmethod
    def from_env(
        cls,
        prefix: str = "",
        dotenv: Optional[str] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> "Settings":
        """Variables starting with *prefix*; the environment wins over the .env file."""
        values: dict[str, str] = {}
        if dotenv is not None and os.path.exists(dotenv):
            values.update(read_dotenv(dotenv))
        values.update(os.environ if environ is None else environ)
        prefix = prefix.upper()
        return cls(
            {key.upper()[len(prefix) :]: value for key, value in values.items() if key.upper().startswith(prefix)},
            prefix=prefix,
        )

    def _key(self, name: str) -> str:
        return name.upper()

    def __getitem__(self, name: str) -> str:
        key = self._key(name)
        try:
            return self._values[key]
        except KeyError:
            raise MissingSetting(f"setting {self._prefix}{key} is not set") from None

    def __getattr__(self, name: str) -> str:
        # Only reached for names that are not real attributes. Private names are
        # never settings (and copy/pickle probe them before __init__ has run).
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Settings({len(self)} values, prefix={self._prefix!r})"

    def get_int(self, name: str, default: object = _UNSET) -> int:
        return self._typed(name, default, int)

    def get_bool(self, name: str, default: object = _UNSET) -> bool:
        return self._typed(name, default, parse_bool)

    def get_list(self, name: str, default: object = _UNSET) -> list[str]:
        return self._typed(name, default, parse_list)

    def _typed(self, name: str, default: object, convert) -> T:
        try:
            raw = self[name]
        except MissingSetting:
            if default is _UNSET:
                raise
            return default  # type: ignore[return-value]
        try:
            return convert(raw)
        except ValueError as exc:
            raise ValueError(f"setting {self._prefix}{self._key(name)}: {exc}") from None
