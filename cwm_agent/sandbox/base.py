"""What every sandbox offers the agent: run a command, diff the repository, close.

A sandbox reports what happened to a command (its output, or that the session timed out,
overflowed or died and was restarted); what the model reads of it is the tools' business
(tools.py holds CWM's restart notices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

from cwm_agent import protocol

DEFAULT_REPO_ROOT = "/testbed"
DEFAULT_COMMAND_TIMEOUT = float(protocol.SESSION_TIMEOUT_SECONDS)
OUTPUT_LIMIT = 480 * 1024  # bytes of merged stdout+stderr per command

Status = Literal["ok", "timeout", "overflow", "died"]


@dataclass
class CommandResult:
    """One command's outcome. `output` is stdout and stderr merged, decoded as UTF-8
    with invalid bytes replaced; it is empty unless `status` is "ok" (the spec drops
    the partial output of a killed session)."""

    output: str
    exit_code: int | None
    status: Status
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def brief(self) -> str:
        """For error messages: the output, or what became of the session."""
        return self.output.strip() or f"status {self.status}, exit code {self.exit_code}"


class SandboxError(Exception):
    """The sandbox itself failed (not the model's command). The message says how to fix it."""


class DockerUnavailable(SandboxError):
    """The Docker engine does not answer."""


@runtime_checkable
class Sandbox(Protocol):
    """What the agent, the tools and the front ends may rely on, for every backend."""

    repo_root: str  # where the repository is inside the sandbox (the session starts there)
    command_timeout: float  # seconds one command may run before the session restarts
    base_commit: str | None  # the commit the copy starts from (None: no repository, as in a dream)
    image: str | None  # what the sandbox runs: a Docker image, a bubblewrap root filesystem

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run one command in the persistent session (cwd and environment persist)."""
        ...

    def diff(self, *, exclude: Sequence[str] = ()) -> str:
        """`git diff --binary` of the working tree against the base commit, new and
        deleted files included, leaving out the given paths."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
