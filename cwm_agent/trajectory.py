"""The record of an episode: everything sent, received and run, saved atomically after every turn.

The file is JSON. Each step is serialised once, when it is added, and the file is
re-assembled from those cached strings, so saving turn 100 costs what writing the
bytes costs, not re-encoding 99 earlier turns.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cwm_agent import __version__

FORMAT_VERSION = 1


@dataclass
class Step:
    index: int  # 1-based turn number
    prompt_delta: str  # text appended to the prompt since the previous request (whole prompt on turn 1)
    completion: str  # the raw completion text, verbatim
    finish_reason: str | None = None
    cut_off: bool = False
    stop: str | None = None  # the stop token the reply ended with (None: cut off)
    action: dict[str, str] | None = None  # {"tool": ..., "body": ...}
    format_error: str | None = None
    observation: str | None = None  # the tool's feedback, raw (the message is capped as CWM capped it)
    command_status: str | None = None  # ok | timeout | overflow | died
    exit_code: int | None = None
    submitted: bool = False
    imagined: dict[str, Any] | None = None  # imagination: predicted observation and its scores
    # chat: what the person did (rejected: their message; replaced_with: the action that ran
    # instead; interrupted: "model" or "command", then message; typed: a command they ran)
    human: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # model, command, overhead (seconds)
    tokens: dict[str, int | None] = field(default_factory=dict)  # prompt, completion, context_used


def versions() -> dict[str, str]:
    found = {"cwm_agent": __version__, "python": platform.python_version()}
    import importlib.metadata

    for name in ("httpx", "docker", "transformers", "torch"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def dumps(value: Any, **kw: Any) -> str:
    """JSON that can be written as UTF-8. A patch's bytes that are not UTF-8 (a Latin-1 file)
    travel as surrogate escapes; those are written \\u-escaped, so they load back exactly."""
    text = json.dumps(value, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, **kw)
    return text


class Trajectory:
    def __init__(self, path: Path | None, *, config: dict[str, Any], task: dict[str, Any],
                 model: dict[str, Any] | None = None):
        self.path = path
        self.header: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
            "config": config,
            "model": model or {},
            "task": task,
        }
        self.steps: list[Step] = []
        self._step_json: list[str] = []
        self.result: dict[str, Any] = {"exit": None}

    def add(self, step: Step) -> None:
        self.steps.append(step)
        self._step_json.append(dumps(asdict(step)))
        self.save()

    def update(self, step: Step) -> None:
        """Re-record a step already added (chat adds the person's message to an interrupted one)."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.steps[i] is step:
                self._step_json[i] = dumps(asdict(step))
                self.save()
                return

    def carry_over(self, previous: dict[str, Any]) -> None:
        """Continue a saved trajectory (chat --resume): its steps come first, and the header says
        when the earlier part was created."""
        known = {f.name for f in fields(Step)}
        for data in previous.get("steps", []):
            step = Step(**{k: v for k, v in data.items() if k in known})
            self.steps.append(step)
            self._step_json.append(dumps(asdict(step)))
        self.header["resumed"] = [*previous.get("resumed", []), previous.get("created")]
        self.save()

    def finish(self, **result: Any) -> None:
        self.result.update(result)
        self.save()

    def to_json(self) -> str:
        head = dumps(self.header)[:-1]
        tail = dumps(self.result)[1:]  # never empty: result always has "exit"
        return f'{head}, "steps": [{", ".join(self._step_json)}], {tail}'

    def save(self) -> None:
        """Write to a temporary file, then rename: a crash leaves the previous complete file."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, self.path)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: trajectory format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
    return data
