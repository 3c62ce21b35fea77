"""Options whose value may be left out (`show RUN --html` or `show RUN --html out.html`).

The parser typer vendors knows no such option, so the command rewrites its arguments first: a
named option followed by nothing, or by another option, becomes ``--name=`` (an empty value),
which the command reads as "the default". As in click's optional values, a word that follows
the option is its value: `show --html RUN` takes RUN as the file, so the option goes last.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand


def with_empty_values(args: list[str], options: tuple[str, ...]) -> list[str]:
    """``args`` with each of ``options`` that has no value given an empty one."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        following = args[i + 1] if i + 1 < len(args) else None
        if arg in options and (following is None or (following.startswith("-") and following != "-")):
            arg += "="
        out.append(arg)
    return out


def optional_value_command(*options: str) -> type[TyperCommand]:
    """A command class (``@app.command(cls=...)``) in which ``options`` may be given without a value."""

    class OptionalValueCommand(TyperCommand):
        def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
            return super().parse_args(ctx, with_empty_values(list(args), options))

    return OptionalValueCommand
