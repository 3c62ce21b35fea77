"""One work item of an eval, wherever it runs (a thread here, a Ray task on a node): a patch
attempt (run_attempt: the episode, then grading), a test-generation episode (run_test_attempt),
a task's selection among its attempts (select_task), and their records, AttemptResult and
WrittenTest. run_item and choose_for never raise: what infrastructure broke is a record.
runner.py runs many of them as a batch; ray_backend.py runs them across a cluster.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwm_agent.agent import Events, Exit
from cwm_agent.bench.tasks import Task
from cwm_agent.config import Settings
from cwm_agent.episode import open_episode
from cwm_agent.github.issues import issue_statement
from cwm_agent.world.imagine import ImagineSpec


@dataclass
class AttemptResult:
    instance_id: str
    attempt: int
    exit: str
    detail: str
    infrastructure: bool
    patch: str
    resolved: bool | None  # None: not graded
    grade_status: str | None
    warnings: list[str]
    turns: int
    tokens: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    imagination: dict[str, Any] | None = None  # world.imagine.Imagination.summary() when --imagine was on
    finished: bool | None = None  # submitted, then summarised (Exit.finished); None: a row from before the rule
    grade_unfinished: bool = False  # the rule this attempt was scored under

    @property
    def counted(self) -> bool:
        """Is `patch` the attempt's answer? Only a finished episode's is, unless grade_unfinished."""
        return self.grade_unfinished or self.finished is not False

    @property
    def model_patch(self) -> str:
        """What predictions.jsonl holds: the patch, or "" for an episode that did not finish."""
        return self.patch if self.counted else ""


class _TaskEvents(Events):
    def __init__(self, on_turn: Callable[[int], None]):
        self.on_turn = on_turn

    def on_turn_start(self, turn: int, remaining_tokens: int) -> None:
        self.on_turn(turn)


def run_attempt(task: Task, attempt: int, *, settings: Settings, model, out: Path,
                on_turn: Callable[[int], None], should_stop: Callable[[], bool], grade: bool,
                imagine: ImagineSpec | None = None) -> AttemptResult:
    folder = out / "instances" / task.instance_id / f"attempt-{attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    imagine = imagine or ImagineSpec()
    statement = issue_statement(task.problem_statement)  # a row may name a GitHub issue by its URL
    with tempfile.TemporaryDirectory(prefix="cwm-eval-") as tmp:
        repo = None if imagine.dream else _checkout_for(task, tmp)
        with open_episode(model, settings, repo=repo, run_id=f"eval-{task.instance_id}-{attempt}",
                          trajectory_path=folder / "trajectory.json", image=task.image,
                          task={"label": task.instance_id, "attempt": attempt, "issue": statement,
                                "base_commit": task.base_commit, "image": task.image},
                          imagine=imagine, events=_TaskEvents(on_turn), should_stop=should_stop) as ep:
            episode = ep.agent.run(statement)
            imagination = ep.agent.imagination
    patch = episode.submission or ""
    resolved = status = None
    warnings: list[str] = []
    timings = dict(episode.timings)
    scored = not episode.exit.infrastructure and episode.exit is not Exit.INTERRUPTED
    counted = episode.exit.finished or settings.grade_unfinished
    if scored and not counted:  # failed whatever it submitted: not graded, counted unresolved
        resolved, status = False, "unfinished"
    elif grade and scored and not imagine.dream:
        from cwm_agent.bench.grade import grade_task

        verdict = grade_task(task, patch)
        resolved, status, warnings = verdict.resolved, verdict.status, list(verdict.warnings)
        if verdict.status == "error":  # why, on the row (the log may be empty)
            warnings.append(f"grading failed: {verdict.detail}")
        (folder / "log.txt").write_text(verdict.log, encoding="utf-8")
        timings["grade"] = verdict.seconds
    return AttemptResult(task.instance_id, attempt, episode.exit.value, episode.detail, episode.exit.infrastructure,
                         patch, resolved, status, warnings, episode.turns, episode.tokens,
                         time.monotonic() - started, timings,
                         imagination.summary() if imagination else None,
                         finished=episode.exit.finished, grade_unfinished=settings.grade_unfinished)


@dataclass
class WrittenTest:
    """One test-generation episode (CWM's USER_TESTGEN): its submitted test_issue.py."""

    instance_id: str
    attempt: int
    exit: str
    detail: str
    infrastructure: bool
    test: str  # the submitted file ("" when none)
    finished: bool
    turns: int
    tokens: int
    seconds: float


def _checkout_for(task: Task, tmp: str) -> Path | None:
    """The repository a sandbox copies for ``task`` (None: its image holds it)."""
    if task.image:
        return None
    repo = Path(tmp) / "repo"
    task.checkout(repo)
    return repo


def run_test_attempt(task: Task, attempt: int, *, settings: Settings, model, out: Path,
                     on_turn: Callable[[int], None], should_stop: Callable[[], bool]) -> WrittenTest:
    """A test-generation episode on the task's issue; its test lands in test-attempt-N/test_issue.py."""
    folder = out / "instances" / task.instance_id / f"test-attempt-{attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    statement = issue_statement(task.problem_statement)
    with tempfile.TemporaryDirectory(prefix="cwm-testgen-") as tmp:
        with open_episode(model, settings, repo=_checkout_for(task, tmp), run_id=f"testgen-{task.instance_id}-{attempt}",
                          trajectory_path=folder / "trajectory.json", image=task.image, kind="test",
                          task={"label": task.instance_id, "attempt": attempt, "issue": statement, "kind": "test"},
                          events=_TaskEvents(on_turn), should_stop=should_stop) as ep:
            episode = ep.agent.run(statement)
    test = episode.submission or ""
    if test:
        (folder / "test_issue.py").write_bytes(test.encode("utf-8", "surrogateescape"))
    return WrittenTest(task.instance_id, attempt, episode.exit.value, episode.detail, episode.exit.infrastructure,
                       test, episode.exit.finished, episode.turns, episode.tokens, time.monotonic() - started)


def select_task(task: Task, results: list[AttemptResult], tests: list[WrittenTest], *, method: str,
                settings: Settings, out: Path, run: bool = True, reuse: bool = True) -> dict[str, Any]:
    """Choose one of the task's patches (selection.py) and save why in instances/ID/selection.json.
    The task is blinded first: selection never sees the hidden tests. ``run`` False: only the
    saved executions are used (re-selection); ``reuse`` False: saved executions are dropped (the
    attempts were run again)."""
    from cwm_agent.bench import selection
    from cwm_agent.episode import open_sandbox

    seen = selection.blinded(task)
    folder = out / "instances" / task.instance_id
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "selection.json"
    candidates = [selection.Candidate(r.attempt, r.patch, r.tokens) for r in sorted(results, key=lambda r: r.attempt)
                  if not r.infrastructure and r.counted and r.patch.strip()]
    generated = [selection.GeneratedTest(t.attempt, t.test) for t in sorted(tests, key=lambda t: t.attempt)
                 if t.finished and t.test.strip()]
    saved = selection.load_executions(record) if reuse else {}
    with tempfile.TemporaryDirectory(prefix="cwm-select-") as tmp:
        repo = _checkout_for(seen, tmp) if run and method == "tests" and candidates else None

        def fresh(subject: str):
            return lambda: open_sandbox(settings, repo, f"select-{task.instance_id}-{subject}", image=seen.image)

        chosen, executions = selection.run_and_choose(method, candidates, generated, fresh, run=run,
                                                      test_command=selection.suite_command(seen), executions=saved)
    selection.save(record, chosen, executions)
    by_attempt = {r.attempt: r for r in results}
    winner = by_attempt.get(chosen.winner) if chosen.winner is not None else None
    majority = selection.choose("majority", candidates)
    first = selection.choose("first", candidates)
    return {"instance_id": task.instance_id, "method": method, "winner": chosen.winner,
            "resolved": bool(winner and winner.resolved), "reason": chosen.reason,
            "majority_winner": majority.winner,
            "majority_resolved": bool(majority.winner and by_attempt[majority.winner].resolved),
            "first_resolved": bool(first.winner and by_attempt[first.winner].resolved),
            "any_resolved": any(bool(r.resolved) for r in results if not r.infrastructure),
            "candidates": len(candidates), "tests": len(generated), "kept_tests": len(chosen.kept_tests),
            "container_seconds": round(chosen.container_seconds, 3),
            "patch": winner.patch if winner else ""}


def failed(instance_id: str, attempt: int, kind: str, detail: str) -> AttemptResult | WrittenTest:
    """The record of a work item that infrastructure broke (never counted against the agent)."""
    if kind == "test":
        return WrittenTest(instance_id, attempt, Exit.SANDBOX_ERROR.value, detail, True, "", False, 0, 0, 0.0)
    return AttemptResult(instance_id, attempt, Exit.SANDBOX_ERROR.value, detail, True, "", None, None, [], 0, 0, 0.0)


def run_item(task: Task, attempt: int, kind: str, *, settings: Settings, model, out: Path,
             on_turn: Callable[[int], None], should_stop: Callable[[], bool],
             ensure_image: Callable[[Task], None], grade: bool = True,
             imagine: ImagineSpec | None = None) -> AttemptResult | WrittenTest:
    """One work item (a patch attempt, or a test-generation episode when ``kind`` is "test"),
    its files written under ``out``. Never raises: a broken task, image or sandbox is an
    infrastructure record, so one item cannot stop a batch (on any backend)."""
    try:
        ensure_image(task)
        if kind == "test":
            return run_test_attempt(task, attempt, settings=settings, model=model, out=out, on_turn=on_turn,
                                    should_stop=should_stop)
        return run_attempt(task, attempt, settings=settings, model=model, out=out, on_turn=on_turn,
                           should_stop=should_stop, grade=grade, imagine=imagine)
    except Exception as exc:
        return failed(task.instance_id, attempt, kind, f"{type(exc).__name__}: {exc}")


def item_key(task: Task, attempt: int, kind: str) -> str:
    """How the progress display names a work item."""
    return f"{task.instance_id}#{attempt}" + (" (test)" if kind == "test" else "")


@dataclass
class Choice:
    """One task's selection to make: the task, its saved attempts and its written tests."""

    task: Task
    results: list[AttemptResult]
    tests: list[WrittenTest]


def choose_for(choice: Choice, *, method: str, settings: Settings, out: Path, run: bool, reuse: bool,
               ensure_image: Callable[[Task], None] = lambda _task: None) -> dict[str, Any]:
    """select_task for one Choice, never raising: one task's broken selection must not stop the others."""
    task = choice.task
    try:
        if run and method == "tests":
            ensure_image(task)
        return select_task(task, choice.results, choice.tests, method=method, settings=settings, out=out,
                           run=run, reuse=reuse)
    except Exception as exc:
        return {"instance_id": task.instance_id, "method": method, "winner": None, "resolved": False,
                "reason": f"selection failed: {type(exc).__name__}: {exc}", "error": True, "patch": ""}
