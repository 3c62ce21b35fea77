"""What every sandbox offers the agent: run a command, diff the repository, close.

The feedback strings are CWM's training-time texts (cwm-interface.md, section 7),
byte for byte: the model was trained to react to exactly these.
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

# CWM's restart notices live with the other protocol literals.
TIMEOUT_FEEDBACK = protocol.FEEDBACK["session_timeout"]
OVERFLOW_FEEDBACK = protocol.FEEDBACK["session_output_limit"]
DIED_FEEDBACK = protocol.FEEDBACK["session_died"]

Status = Literal["ok", "timeout", "overflow", "died"]

_FEEDBACK: dict[str, str] = {
    "timeout": TIMEOUT_FEEDBACK,
    "overflow": OVERFLOW_FEEDBACK,
    "died": DIED_FEEDBACK,
}


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
    def feedback(self) -> str:
        """What the model sees: the output, or the spec's restart notice."""
        return self.output if self.status == "ok" else _FEEDBACK[self.status]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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
