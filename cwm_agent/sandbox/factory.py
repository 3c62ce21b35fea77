"""open_sandbox: pick the sandbox backend. Docker when its engine answers, else bubblewrap."""

from __future__ import annotations

from typing import Any, Literal

from cwm_agent.sandbox.base import Sandbox, SandboxError

Kind = Literal["auto", "docker", "bwrap"]


def open_sandbox(kind: Kind | str | None = "auto", **kw: Any) -> Sandbox:
    """Start a sandbox. `kw` goes to the backend (image, repo, memory, pids, cpus,
    command_timeout, run_id, ...). "auto" uses Docker when the engine answers a ping,
    else bubblewrap. Raises SandboxError (DockerUnavailable for Docker) with the fix."""
    kind = kind or "auto"
    if kind not in ("auto", "docker", "bwrap"):
        raise SandboxError(f"unknown sandbox kind {kind!r}; choose auto, docker or bwrap")
    if kind == "auto":
        from cwm_agent.sandbox.docker import engine_answers

        kind = "docker" if engine_answers() else "bwrap"
    if kind == "docker":
        from cwm_agent.sandbox.docker import DockerSandbox

        return DockerSandbox(**kw)
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    return BwrapSandbox(**kw)
