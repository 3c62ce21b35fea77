"""One episode, built the same way for every front end: the model, the sandbox, the agent, its trajectory.

`solve`, `eval` and the front ends to come (the interactive session, the GitHub Action) call
these instead of wiring the parts themselves:

    model = connect_model(settings)
    with open_episode(model, settings, repo=repo, run_id=run_id, trajectory_path=out / "trajectory.json",
                      task={"label": label, "issue": issue}) as episode:
        result = episode.agent.run(issue)
        ...  # episode.sandbox is still open here: check the patch, take the diff

Nothing here draws on a screen: progress goes through the agent's Events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cwm_agent import protocol
from cwm_agent.agent import Agent, Events, Human, Limits
from cwm_agent.config import Settings
from cwm_agent.models.client import Model
from cwm_agent.sandbox.base import Sandbox
from cwm_agent.trajectory import Trajectory
from cwm_agent.world.imagine import DreamSandbox, ImagineSpec
from cwm_agent.world.imagine import build as build_imagination


def connect_model(settings: Settings) -> Model:
    """The model the settings name: a server at base_url, or the embedded CPU model."""
    from cwm_agent.models.connect import connect

    return connect(base_url=settings.base_url, model=settings.model, api_key=settings.api_key,
                   format=settings.format, retries=settings.retries, temperature=settings.temperature,
                   top_p=settings.top_p)


def tools_for(settings: Settings) -> tuple[str, ...]:
    return protocol.BASH_ONLY_TOOLS if settings.tools == "bash-only" else protocol.ALL_TOOLS


def open_sandbox(settings: Settings, repo: Path | None, run_id: str, *,
                 image: str | None = None) -> AbstractContextManager[Sandbox]:
    """A sandbox with a private copy of ``repo`` (None: the image holds the repository)."""
    from cwm_agent.sandbox.factory import open_sandbox as factory

    return factory(settings.sandbox, image=image or settings.image, repo=repo, memory=settings.memory,
                   pids=settings.pids, cpus=settings.cpus, command_timeout=settings.command_timeout,
                   run_id=run_id)


@dataclass
class Episode:
    agent: Agent
    sandbox: Sandbox
    trajectory: Trajectory


@contextmanager
def open_episode(model: Model, settings: Settings, *, repo: Path | None, run_id: str,
                 trajectory_path: Path | None, task: dict[str, Any], image: str | None = None,
                 imagine: ImagineSpec | None = None, events: Events | None = None,
                 should_stop: Callable[[], bool] | None = None, human: Human | None = None,
                 kind: str = "patch") -> Iterator[Episode]:
    """Open the sandbox, record the configuration, build the agent; close the sandbox on exit.

    ``task`` goes into the trajectory's header (label, issue, ...); the sandbox's base commit and
    image are added when it does not name them. With ``imagine.dream`` no sandbox runs at all.
    ``kind`` "test" makes it CWM's test-generation episode (the submission is test_issue.py).
    """
    imagine = imagine or ImagineSpec()
    imagination = build_imagination(model, imagine)  # a chat-format model is refused here
    sandbox_cm: AbstractContextManager[Sandbox] = (
        DreamSandbox(command_timeout=settings.command_timeout) if imagine.dream
        else open_sandbox(settings, repo, run_id, image=image))
    with sandbox_cm as sandbox:
        info = {"run_id": run_id, **task}
        info.setdefault("base_commit", sandbox.base_commit)
        info.setdefault("image", sandbox.image)
        trajectory = Trajectory(trajectory_path, config=settings.public(), task=info,
                                model={"name": model.name, "format": model.format, "max_context": model.max_context})
        if imagination:
            trajectory.header["imagination"] = imagine.describe()
        agent = Agent(model, sandbox, limits=Limits.from_settings(settings), tools=tools_for(settings),
                      reasoning=settings.reasoning, trajectory=trajectory, events=events,
                      should_stop=should_stop or (lambda: False), imagination=imagination, human=human,
                      task=kind)
        yield Episode(agent, sandbox, trajectory)
