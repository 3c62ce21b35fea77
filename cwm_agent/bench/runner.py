"""Batch runs over a task set: parallel episodes, graded, resumable, never losing a finished result.

Layout of an eval folder:
  results.jsonl            one line per finished attempt (appended; the source of truth for resuming)
  predictions.jsonl        official SWE-bench predictions for attempt 1 (predictions-K.jsonl for attempt K)
  instances/ID/attempt-K/  trajectory.json and log.txt of each attempt
  report.json              the final report, with the resolved configuration ("config": settings,
                           eval options, the --config file and its sha256)
Infrastructure failures (model unreachable, sandbox broken) are recorded but never counted as the
agent's failures; `--retry-errors` re-runs exactly those.

Scoring follows CWM's evaluation: only a finished episode (submitted, then summarised) is graded.
One that the turn, context or time limit ended failed whatever it submitted: it is not graded,
its prediction has an empty `model_patch` (the official harness counts it as an empty patch), and
it counts unresolved; results.jsonl keeps its last patch. `grade_unfinished` (`--grade-unfinished`)
grades it instead, as harnesses that submit on exit do. report.json names the rule.

An eval configuration (evals/NAME.toml, `cwm-agent eval --config`) holds Settings keys and the
eval's own keys, EVAL_KEYS; config.read_config_file reads it, config.load_settings layers it.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cwm_agent.agent import Exit
from cwm_agent.bench.attempts import AttemptResult, Choice, WrittenTest, choose_for, item_key, run_item
from cwm_agent.config import ConfigError, ConfigFile, Settings
from cwm_agent.paths import TASKS_DIR
from cwm_agent.bench.tasks import Task
from cwm_agent.trajectory import dumps
from cwm_agent.world.imagine import ImagineSpec, merge
from cwm_agent.world.imagine import build as build_imagination


# The eval's own keys in an eval configuration, beside any Settings key, and their types.
EVAL_KEYS: dict[str, str] = {
    "name": "str", "description": "str",  # free text, recorded
    "tasks": "str",  # a task folder, a .json/.jsonl of SWE-bench rows, or "bundled" (the bundled tasks)
    "split": "str",  # the split of a Hub dataset or a saved DatasetDict (bench/datasets.py)
    "attempts": "int", "workers": "int", "filter": "str", "slice": "str", "shuffle": "int",
    "imagine": "str", "imagine_tokens": "int", "grade": "bool",
    "test_attempts": "int", "select": "str",  # test-time scaling (selection.py)
    "pull": "str", "remove_images": "bool",  # task images on demand (sandbox/pull.py)
    "backend": "str", "address": "str",  # where attempts run: threads here, or a Ray cluster (ray_backend.py)
}
# `--select tests` without --attempts / --test-attempts: K = M = 8 (CWM used 40 and reported best@16).
SCALING_DEFAULT = 8
BUNDLED = "bundled"


def task_source(tasks: str | Path) -> Path:
    """Where a task set lies: "bundled" is the bundled tasks (in a checkout or an installed wheel);
    anything else is a path, relative to the current directory."""
    if str(tasks) == BUNDLED:
        return TASKS_DIR
    return Path(tasks).expanduser()


def check_option(key: str, value: Any, origin: str) -> None:
    """The values select() and the pool would choke on, refused before anything runs."""
    if value is None:
        return
    if key in ("attempts", "workers") and value < 1:
        raise ConfigError(f"{origin}: {key} must be at least 1, got {value}")
    if key == "test_attempts" and value < 0:
        raise ConfigError(f"{origin}: test_attempts must be 0 or more, got {value}")
    if key == "pull" and value not in ("never", "missing", "always"):
        raise ConfigError(f"{origin}: pull must be never, missing or always, got {value!r}")
    if key == "backend" and value not in ("threads", "ray"):
        raise ConfigError(f"{origin}: backend must be threads or ray, got {value!r}")
    if key == "select" and value not in ("tests", "majority", "first"):
        raise ConfigError(f"{origin}: select must be tests, majority or first, got {value!r}")
    if key == "slice" and not re.fullmatch(r"-?\d*:-?\d*", value):
        raise ConfigError(f"{origin}: slice must be START:STOP (e.g. 0:10 or 5:), got {value!r}")
    if key == "filter":
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{origin}: filter is not a valid regular expression ({exc}): {value!r}") from None


@dataclass
class EvalOptions:
    out: Path
    workers: int = 1
    attempts: int = 1
    filter: str | None = None  # regex on instance_id
    slice: str | None = None  # "START:STOP" over the (filtered) list
    shuffle: int | None = None  # seed
    retry_errors: bool = False
    rerun: bool = False  # run finished attempts again
    grade: bool = True
    imagine: ImagineSpec = field(default_factory=ImagineSpec)  # --imagine; dream: no sandbox, no grading
    test_attempts: int = 0  # test-generation episodes per task (CWM's test-time scaling)
    select: str | None = None  # tests | majority | first: choose one patch per task (selection.py)
    pull: str = "missing"  # task images: never | missing | always (sandbox/pull.py)
    backend: str = "threads"  # threads (here, `workers` at once) | ray (ray_backend.py)
    address: str | None = None  # the Ray cluster (None: RAY_ADDRESS, or a running local cluster)
    prefetch: bool = False  # pull every task image before the first attempt
    remove_images: bool = False  # remove each task image after its last attempt
    # recorded in report.json, not used by the run itself
    tasks: str | None = None  # as given ("bundled", a path)
    split: str | None = None
    name: str | None = None
    description: str | None = None

    def public(self) -> dict[str, Any]:
        """The options that decide what a run computes, as an eval configuration spells them."""
        imagine = self.imagine.mode + (f":{self.imagine.candidates}" if self.imagine.mode == "lookahead" else "")
        return {"name": self.name, "description": self.description, "tasks": self.tasks,
                "tasks_path": str(task_source(self.tasks).resolve())
                if self.tasks and task_source(self.tasks).exists() else None,
                "split": self.split, "attempts": self.attempts, "workers": self.workers, "filter": self.filter,
                "slice": self.slice, "shuffle": self.shuffle, "imagine": imagine,
                "imagine_tokens": self.imagine.max_tokens, "grade": self.grade,
                "test_attempts": self.test_attempts, "select": self.select, "pull": self.pull,
                "remove_images": self.remove_images, "backend": self.backend}


def run_config(settings: Settings, opts: EvalOptions, config_file: ConfigFile | None) -> dict[str, Any]:
    """report.json's "config": enough to run the same evaluation again (secrets masked)."""
    return {"file": str(config_file.path.resolve()) if config_file else None,
            "sha256": config_file.sha256 if config_file else None,
            "settings": settings.public(), "eval": opts.public()}


FINISHED_ONLY = ("only finished episodes (submitted, then summarised) are graded; one that a limit ended "
                 "counts unresolved with an empty model_patch (CWM's rule)")
GRADE_UNFINISHED = ("every episode's last submitted patch is graded, finished or not "
                    "(--grade-unfinished, as harnesses that submit on exit do)")


def select(tasks: list[Task], opts: EvalOptions) -> list[Task]:
    chosen = [t for t in tasks if not opts.filter or re.search(opts.filter, t.instance_id)]
    if opts.shuffle is not None:
        random.Random(opts.shuffle).shuffle(chosen)
    if opts.slice:
        start, _, stop = opts.slice.partition(":")
        chosen = chosen[int(start) if start else None:int(stop) if stop else None]
    return chosen


def _latest(path: Path, kind: type) -> dict[tuple[str, int], Any]:
    """The latest record of each (instance, attempt); a torn last line from a crash is ignored."""
    done: dict[tuple[str, int], Any] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = kind(**json.loads(line))
            except (ValueError, TypeError):
                continue
            done[(row.instance_id, row.attempt)] = row
    return done


def load_results(path: Path) -> dict[tuple[str, int], AttemptResult]:
    return _latest(path, AttemptResult)


def load_tests(path: Path) -> dict[tuple[str, int], WrittenTest]:
    return _latest(path, WrittenTest)


def plan(tasks: list[Task], done: dict[tuple[str, int], AttemptResult], opts: EvalOptions) -> list[tuple[Task, int]]:
    todo = []
    for task in tasks:
        for attempt in range(1, opts.attempts + 1):
            prior = done.get((task.instance_id, attempt))
            if prior is None or opts.rerun or (opts.retry_errors and prior.infrastructure):
                todo.append((task, attempt))
    return todo


class Recorder:
    """Appends results and predictions as each attempt finishes (one lock, one line per write)."""

    def __init__(self, out: Path, model_name: str):
        self.out, self.model_name = out, model_name
        self.lock = threading.Lock()

    def record_test(self, made: WrittenTest) -> None:
        with self.lock:
            with (self.out / "tests.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(dumps(asdict(made)) + "\n")

    def record(self, result: AttemptResult) -> None:
        with self.lock:
            with (self.out / "results.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(dumps(asdict(result)) + "\n")
            if not result.infrastructure:
                name = "predictions.jsonl" if result.attempt == 1 else f"predictions-{result.attempt}.jsonl"
                with (self.out / name).open("a", encoding="utf-8") as fh:
                    fh.write(dumps({"instance_id": result.instance_id, "model_patch": result.model_patch,
                                         "model_name_or_path": self.model_name}) + "\n")


class Progress:
    """What a progress display needs: totals and one row per running attempt."""

    def __init__(self, total: int):
        self.total, self.finished, self.resolved = total, 0, 0
        self.running: dict[str, int] = {}  # "id#attempt" -> turn
        self.pulling: dict[str, str] = {}  # image -> how far its pull is
        self.started = time.monotonic()
        self.lock = threading.Lock()


def run_eval(tasks: list[Task], opts: EvalOptions, settings: Settings, *, model,
             on_update: Callable[[Progress], None] = lambda _p: None) -> list[AttemptResult]:
    """Run every planned attempt: `opts.workers` threads here, or Ray tasks across a cluster
    (opts.backend "ray", ray_backend.py). Either way results are recorded here, as they arrive.
    Ctrl-C stops the attempts; interrupted ones are not recorded, so the next run picks them up."""
    build_imagination(model, opts.imagine)  # refuse a chat-format model once, before any attempt
    opts.out.mkdir(parents=True, exist_ok=True)
    done = load_results(opts.out / "results.jsonl")
    chosen_tasks = select(tasks, opts)
    todo: list[tuple[Task, int, str]] = [(t, a, "patch") for t, a in plan(chosen_tasks, done, opts)]
    tests_done = load_tests(opts.out / "tests.jsonl")
    for task in chosen_tasks:
        for attempt in range(1, opts.test_attempts + 1):
            prior = tests_done.get((task.instance_id, attempt))
            if prior is None or opts.rerun or (opts.retry_errors and prior.infrastructure):
                todo.append((task, attempt, "test"))
    recorder = Recorder(opts.out, model.name)
    progress = Progress(len(todo))
    results: list[AttemptResult] = []

    def deliver(record: AttemptResult | WrittenTest) -> None:
        """A finished work item: recorded at once (an interrupted one is left for the next run)."""
        if record.exit == Exit.INTERRUPTED.value:
            return
        if isinstance(record, WrittenTest):
            recorder.record_test(record)
        else:
            recorder.record(record)
            results.append(record)
        with progress.lock:
            progress.finished += 1
            progress.resolved += bool(getattr(record, "resolved", False))
        on_update(progress)

    if opts.backend == "ray":
        from cwm_agent.bench.ray_backend import RayBackend

        with RayBackend(opts, settings, progress, on_update) as backend:
            # Each node pulls what its items need; prefetch and removal reach the nodes.
            images = _Images(opts, [task for task, _, _ in todo], progress, on_update, on_nodes=backend)
            if opts.prefetch:
                images.prefetch()
            backend.run(todo, deliver, done=images.done)
            if opts.select:
                run_selection(chosen_tasks, opts, settings, images=images, remote=backend)
        return results
    _run_threads(todo, opts, settings, model, progress, on_update, deliver, chosen_tasks)
    return results


def _run_threads(todo: list[tuple[Task, int, str]], opts: EvalOptions, settings: Settings, model,
                 progress: Progress, on_update: Callable[[Progress], None],
                 deliver: Callable[[AttemptResult | WrittenTest], None], chosen_tasks: list[Task]) -> None:
    stop = threading.Event()
    images = _Images(opts, [task for task, _, _ in todo], progress, on_update)

    def work(task: Task, attempt: int, kind: str) -> None:
        key = item_key(task, attempt, kind)

        def on_turn(turn: int) -> None:
            with progress.lock:
                progress.running[key] = turn
            on_update(progress)

        on_turn(0)
        try:
            record = run_item(task, attempt, kind, settings=settings, model=model, out=opts.out, on_turn=on_turn,
                              should_stop=stop.is_set, ensure_image=images.ensure, grade=opts.grade,
                              imagine=opts.imagine)
        finally:
            with progress.lock:
                progress.running.pop(key, None)
            images.done(task)
        deliver(record)

    if opts.prefetch:
        images.prefetch()
    with ThreadPoolExecutor(max_workers=max(1, opts.workers), thread_name_prefix="eval") as pool:
        pending = {pool.submit(work, task, attempt, kind) for task, attempt, kind in todo}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
        except KeyboardInterrupt:
            stop.set()
            for future in pending:
                future.cancel()
            wait(pending)
            raise
        if opts.select:
            run_selection(chosen_tasks, opts, settings, mapper=pool.map, images=images)


class _Images:
    """Task images for one run: pulled before a task's first attempt (opts.pull), removed after
    its last one with opts.remove_images (after its selection, when there is one)."""

    def __init__(self, opts: EvalOptions, work: list[Task], progress: Progress,
                 on_update: Callable[[Progress], None], *, on_nodes: Any = None):
        """``on_nodes`` (the Ray backend): the nodes pull (prefetch_images) and remove (remove_image)."""
        self.opts, self.progress, self.on_update, self.on_nodes = opts, progress, on_update, on_nodes
        self.tasks = {t.instance_id: t for t in work if t.image}
        self.left = Counter(t.image for t in work if t.image)  # work items still to finish, per image
        if opts.select:
            self.left.update(t.image for t in self.tasks.values())  # its selection comes last
        self.lock = threading.Lock()
        self._puller = None

    @property
    def puller(self):
        if self._puller is None:
            from cwm_agent.sandbox.docker import docker_client
            from cwm_agent.sandbox.pull import Puller

            self._puller = Puller(docker_client(), self.opts.pull, on_progress=self._progress)
        return self._puller

    def _progress(self, image: str, text: str | None) -> None:
        with self.progress.lock:
            if text is None:
                self.progress.pulling.pop(image, None)
            else:
                self.progress.pulling[image] = text
        self.on_update(self.progress)

    def ensure(self, task: Task) -> None:
        if task.image and self.on_nodes is None:
            self.puller.ensure(task.image)

    def prefetch(self) -> None:
        """Every image first, one after another; one that fails is left to its attempts to report."""
        if self.on_nodes is not None:
            self.on_nodes.prefetch_images(sorted({t.image for t in self.tasks.values()}))
            return
        for image in sorted({t.image for t in self.tasks.values()}):
            try:
                self.puller.ensure(image)
            except Exception:
                pass

    def done(self, task: Task) -> None:
        """One work item of ``task`` finished; its image goes when nothing else needs it."""
        if not task.image or not self.opts.remove_images:
            return
        with self.lock:
            self.left[task.image] -= 1
            last = self.left[task.image] <= 0
        if last:
            self.remove(task.image)

    def remove(self, image: str) -> None:
        if self.on_nodes is not None:
            self.on_nodes.remove_image(image)
        else:
            self.puller.remove(image)


def run_selection(tasks: list[Task], opts: EvalOptions, settings: Settings, *,
                  mapper: Callable[..., Any] = map, run: bool = True, images: _Images | None = None,
                  remote: Any = None) -> list[dict[str, Any]]:
    """Choose one patch per task (opts.select) from the saved attempts; selection.jsonl and
    predictions-selected.jsonl hold the choices, instances/ID/selection.json the reasons.
    Here the selections run through ``mapper`` (map: one after another; a thread pool's map);
    ``remote`` (the Ray backend) runs each on a cluster node and brings its selection.json back."""
    results = load_results(opts.out / "results.jsonl")
    tests = load_tests(opts.out / "tests.jsonl")
    choices = [Choice(task, [r for (iid, _), r in results.items() if iid == task.instance_id],
                      [t for (iid, _), t in tests.items() if iid == task.instance_id]) for task in tasks]

    def one(choice: Choice) -> dict[str, Any]:
        try:
            return choose_for(choice, method=opts.select, settings=settings, out=opts.out, run=run,
                              reuse=not opts.rerun,
                              ensure_image=images.ensure if images is not None else lambda _task: None)
        finally:
            if images is not None:
                images.done(choice.task)

    if remote is not None:
        chosen = remote.select(choices, run=run, done=images.done if images is not None else lambda _task: None)
    else:
        chosen = list(mapper(one, choices))
    with (opts.out / "selection.jsonl").open("w", encoding="utf-8") as fh:
        for row in chosen:
            fh.write(dumps({k: v for k, v in row.items() if k != "patch"}) + "\n")
    with (opts.out / "predictions-selected.jsonl").open("w", encoding="utf-8") as fh:
        for row in chosen:
            fh.write(dumps({"instance_id": row["instance_id"], "model_patch": row["patch"],
                            "model_name_or_path": f"cwm-agent (select {opts.select})"}) + "\n")
    return chosen


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a rate; sound at 0% and 100% and for small n."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(successes: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, n)
    return {"resolved": successes, "of": n, "rate": successes / n if n else 0.0, "ci95": [low, high]}


def test_time_scaling(out: Path, rows: list[AttemptResult]) -> dict[str, Any] | None:
    """pass@1 (mean over attempts, CWM's way), pass@k (any attempt resolves), best@k (the selected
    one resolves), majority@k and first, each with its Wilson interval; and what each stage cost."""
    path = out / "selection.jsonl"
    if not path.is_file():
        return None
    chosen = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    scored = [r for r in rows if not r.infrastructure]
    tests = list(load_tests(out / "tests.jsonl").values())
    n = len(chosen)
    return {
        "method": chosen[0]["method"] if chosen else None,
        "k": max((r.attempt for r in rows), default=0),
        "test_attempts": max((t.attempt for t in tests), default=0),
        "pass@1": _rate(sum(bool(r.resolved) for r in scored), len(scored)),
        "pass@k": _rate(sum(bool(c.get("any_resolved")) for c in chosen), n),
        "best@k": _rate(sum(bool(c.get("resolved")) for c in chosen), n),
        "majority@k": _rate(sum(bool(c.get("majority_resolved")) for c in chosen), n),
        "first": _rate(sum(bool(c.get("first_resolved")) for c in chosen), n),
        "cost": {"candidates": {"tokens": sum(r.tokens for r in rows), "seconds": round(sum(r.seconds for r in rows), 1)},
                 "test_generation": {"tokens": sum(t.tokens for t in tests),
                                     "seconds": round(sum(t.seconds for t in tests), 1),
                                     "tests_submitted": sum(bool(t.test) for t in tests)},
                 "selection": {"container_seconds": round(sum(c.get("container_seconds", 0.0) for c in chosen), 1)}},
        "per_task": [{k: c.get(k) for k in ("instance_id", "winner", "resolved", "majority_winner", "candidates",
                                             "tests", "kept_tests", "reason")} for c in chosen],
    }


def report(out: Path, *, grade_unfinished: bool | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summarise results.jsonl: the resolved rate over attempts the agent was responsible for.

    grade_unfinished: the rule of this run (default: the rule the rows were scored under);
    rows scored under the other rule are listed in `rule_mismatch` (re-run them with --rerun).
    config: the resolved configuration of the run (run_config), recorded as "config"."""
    rows = list(load_results(out / "results.jsonl").values())
    scored = [r for r in rows if not r.infrastructure]
    if grade_unfinished is None:
        grade_unfinished = any(r.grade_unfinished for r in scored)
    unfinished = [r for r in scored if r.finished is False]
    resolved = sum(bool(r.resolved) for r in scored)
    low, high = wilson_interval(resolved, len(scored))

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "median": statistics.median(values)} if values else {}

    data = {
        "attempts": len(rows),
        "scored": len(scored),
        "infrastructure_errors": len(rows) - len(scored),
        "resolved": resolved,
        "resolved_rate": resolved / len(scored) if scored else 0.0,
        "resolved_rate_ci95": [low, high],
        "grade_unfinished": grade_unfinished,
        "scoring_rule": GRADE_UNFINISHED if grade_unfinished else FINISHED_ONLY,
        "unfinished": len(unfinished),
        "unfinished_with_patch": sum(bool(r.patch) for r in unfinished),
        "rule_mismatch": [f"{r.instance_id}#{r.attempt}" for r in scored if r.grade_unfinished != grade_unfinished
                          and r.finished is False],
        "exits": dict(Counter(r.exit for r in rows)),
        "turns": spread([r.turns for r in scored]),
        "tokens": spread([r.tokens for r in scored]),
        "seconds": spread([r.seconds for r in scored]),
        "warnings": {r.instance_id: r.warnings for r in rows if r.warnings},
        "instances": [{"instance_id": r.instance_id, "attempt": r.attempt, "exit": r.exit, "resolved": r.resolved,
                       "finished": r.finished, "graded": r.grade_status not in (None, "unfinished"),
                       "turns": r.turns, "tokens": r.tokens, "seconds": round(r.seconds, 2)} for r in rows],
    }
    if config is not None:
        data["config"] = config
    scaling = test_time_scaling(out, rows)
    if scaling:
        data["test_time_scaling"] = scaling
    imagined = [r for r in rows if r.imagination]
    if imagined:  # accuracy of the predicted observations, per task and over all of them
        per_task: dict[str, list[dict[str, Any]]] = {}
        for r in imagined:
            per_task.setdefault(r.instance_id, []).append(r.imagination)
        data["imagination"] = {"mode": imagined[0].imagination.get("mode"),
                               "overall": merge([r.imagination for r in imagined]),
                               "per_task": {k: merge(v) for k, v in sorted(per_task.items())}}
    (out / "report.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return data
