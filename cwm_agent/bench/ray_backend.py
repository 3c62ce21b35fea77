"""Eval across machines on Ray: `cwm-agent eval --backend ray [--address ADDRESS]`.

Each work item (a patch attempt, a test-generation episode, a task's selection) is a Ray task
that asks for one unit of the custom resource `docker`, which only Docker hosts announce
(`ray start --resources '{"docker": N}'`: N sandboxes at once on that host). The task builds its
sandbox on the node that runs it, in a scratch folder, and returns its record with the files it
wrote (trajectory.json, log.txt, test_issue.py, selection.json); the driver writes them under
--out and records the result at once, as the thread backend does (runner.run_eval). So
results.jsonl, resume, --retry-errors and the progress display stay what they were, and the
driver never holds a trajectory longer than it takes to write it.

- The model server stays outside Ray: its URL travels with the settings; each worker process
  connects once.
- A local task's source travels through the object store (one tar per task, put once).
- Images are pulled on the node that needs them (--pull), --prefetch pulls on every Docker
  node, --remove-images removes an image from the nodes that used it after its last item.
- A node lost mid-item: Ray runs the item again elsewhere (RETRIES times); after that it is an
  infrastructure error, never a score. Files of a lost try never reach --out.
- Ctrl-C cancels the remote tasks (each one's sandbox is closed as it stops); nothing already
  recorded is lost, and the next run picks up what was cancelled.
- A small actor on the driver's node (the board) carries each item's turn and each pull's
  progress to the display.

Ray is an optional extra (`pip install 'cwm-agent[ray]'`); the thread backend is the default.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cwm_agent.bench.attempts import AttemptResult, Choice, WrittenTest, choose_for, failed, item_key, run_item
from cwm_agent.bench.tasks import Task
from cwm_agent.config import Settings

DOCKER = "docker"  # the custom resource a Docker host announces
RETRIES = 2  # tries after the first when a node (or its worker process) dies mid-item
INSTALL = "pip install 'cwm-agent[ray]'"


class ClusterError(RuntimeError):
    """Ray is missing, or the cluster cannot be reached or has no Docker host; the message says what to do."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--backend ray needs Ray on this machine and on every node: {INSTALL}") from None
    return ray


def start_hint(address: str | None) -> str:
    join = address or "HEAD:6379"
    return (f"start one with `ray start --head --resources '{{\"{DOCKER}\": 4}}'` on a Docker host (4 sandboxes at "
            f"once there), add hosts with `ray start --address {join} --resources '{{\"{DOCKER}\": 4}}'`, then pass "
            "--address (or set RAY_ADDRESS)")


# --- on a node ------------------------------------------------------------------------------

class _Node:
    """What a job needs on the node running it: the model, the image puller, the board."""

    _models: dict[str, Any] = {}  # one connection per worker process and endpoint
    _pullers: dict[str, Any] = {}

    def __init__(self, board: Any, key: str, pull: str):
        self.board, self.key, self.pull = board, key, pull

    def model(self, settings: Settings):
        from cwm_agent.episode import connect_model

        name = repr((settings.base_url, settings.model, settings.format, settings.temperature, settings.top_p))
        if name not in self._models:
            self._models[name] = connect_model(settings)
        return self._models[name]

    def on_turn(self, turn: int) -> None:
        self._tell("turn", self.key, turn)

    def ensure(self, task: Task) -> None:
        if not task.image:
            return
        if self.pull not in self._pullers:
            from cwm_agent.sandbox.docker import docker_client
            from cwm_agent.sandbox.pull import Puller

            self._pullers[self.pull] = Puller(docker_client(), self.pull,
                                              on_progress=lambda image, text: self._tell("pulling", image, text))
        self._pullers[self.pull].ensure(task.image)

    def _tell(self, what: str, *args: Any) -> None:
        if self.board is not None:
            try:
                getattr(self.board, what).remote(*args)  # not awaited: the display may lag, the work never waits
            except Exception:
                pass


def _node_call(job: Callable[[Path, Task, _Node], Any], task: Task, source: bytes | None, inputs: dict[str, bytes],
               board: Any, key: str, pull: str) -> tuple[Any, dict[str, bytes], str]:
    """Run ``job`` in a scratch folder on this node: (its value, the files it wrote there, the node's id)."""
    import ray

    node = _Node(board, key, pull)
    try:
        with tempfile.TemporaryDirectory(prefix="cwm-ray-") as tmp:
            if source is not None:
                task = _unpacked(task, source, Path(tmp) / "source")
            out = Path(tmp) / "out"
            for rel, data in inputs.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
            node.on_turn(0)
            value = job(out, task, node)
            files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    finally:
        node._tell("drop", key)
    return value, files, ray.get_runtime_context().get_node_id()


def _attempt_job(out: Path, task: Task, node: _Node, *, attempt: int, kind: str, settings: Settings,
                 grade: bool, imagine: Any) -> AttemptResult | WrittenTest:
    try:
        model = node.model(settings)
    except Exception as exc:  # the endpoint is unreachable from this node
        return failed(task.instance_id, attempt, kind, f"{type(exc).__name__}: {exc}")
    return run_item(task, attempt, kind, settings=settings, model=model, out=out, on_turn=node.on_turn,
                    should_stop=lambda: False, ensure_image=node.ensure, grade=grade, imagine=imagine)


def _select_job(out: Path, task: Task, node: _Node, *, choice: Choice, method: str, settings: Settings,
                run: bool, reuse: bool) -> dict[str, Any]:
    return choose_for(replace(choice, task=task), method=method, settings=settings, out=out, run=run, reuse=reuse,
                      ensure_image=node.ensure)


def _images_job(images: list[str], pull: str, remove: bool) -> list[str]:
    """Pull (or remove) images on this node; the ones that failed, with why."""
    from cwm_agent.sandbox.docker import docker_client
    from cwm_agent.sandbox.pull import Puller

    puller, problems = Puller(docker_client(), pull), []
    for image in images:
        try:
            puller.remove(image) if remove else puller.ensure(image)
        except Exception as exc:
            problems.append(f"{image}: {exc}")
    return problems


class _Board:
    """The driver-side actor that hears each item's turn and each pull's progress."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.pulls: dict[str, str] = {}

    def turn(self, key: str, turn: int) -> None:
        self.running[key] = turn

    def drop(self, key: str) -> None:
        self.running.pop(key, None)

    def pulling(self, image: str, text: str | None) -> None:
        if text is None:
            self.pulls.pop(image, None)
        else:
            self.pulls[image] = text

    def read(self) -> tuple[dict[str, int], dict[str, str]]:
        return dict(self.running), dict(self.pulls)


def _packed(task: Task) -> bytes:
    """A local task's source tree as a tar, to travel through the object store."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="cwm-pack-") as tmp, tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(task.source_dir(Path(tmp)), arcname=".")
    return buffer.getvalue()


def _unpacked(task: Task, data: bytes, where: Path) -> Task:
    where.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(where, filter="data")
    return replace(task, source=str(where), path=None)


# --- on the driver --------------------------------------------------------------------------

class RayBackend:
    """The driver's side: connects, submits, gathers, writes files, cancels on Ctrl-C."""

    def __init__(self, opts: Any, settings: Settings, progress: Any, on_update: Callable[[Any], None]):
        """``opts``: runner.EvalOptions; ``progress``: runner.Progress, updated as the board hears."""
        self.opts, self.settings, self.progress, self.on_update = opts, settings, progress, on_update
        self.ray = _ray()
        self.board = None
        self._sources: dict[str, Any] = {}  # instance id -> object ref of its packed source
        self._used: dict[str, set[str]] = {}  # image -> the nodes that ran items needing it

    def __enter__(self) -> RayBackend:
        ray = self.ray
        address = self.opts.address or os.environ.get("RAY_ADDRESS") or "auto"
        _probe(address)
        try:
            ray.init(address=address, namespace="cwm-agent", logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=True)
        except Exception as exc:
            raise ClusterError(f"cannot reach a Ray cluster at {address}: {exc}; {start_hint(self.opts.address)}") from None
        slots = int(ray.cluster_resources().get(DOCKER, 0))
        if slots == 0:
            ray.shutdown()
            raise ClusterError(f"no node of the Ray cluster at {address} announces a `{DOCKER}` resource, so none "
                               f"would take work; {start_hint(self.opts.address)}")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        self._check_endpoint(here)
        self.board = ray.remote(num_cpus=0)(_Board).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote()
        self._call = ray.remote(_node_call)
        return self

    def _check_endpoint(self, here: str) -> None:
        """The model's URL travels to every node: a loopback one only works on this machine."""
        from urllib.parse import urlparse

        host = urlparse(self.settings.base_url or "").hostname or ""
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            return
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(DOCKER)]
        mine = next((n["NodeManagerAddress"] for n in self.ray.nodes() if n["NodeID"] == here), None)
        elsewhere = sorted({n["NodeManagerAddress"] for n in nodes} - {mine})
        if elsewhere:
            self.ray.shutdown()
            raise ClusterError(f"--base-url {self.settings.base_url} is this machine's loopback, which the Docker "
                               f"hosts at {', '.join(elsewhere)} cannot reach: pass an address they can (the GPU "
                               "box's name or IP; `cwm-agent serve --host 0.0.0.0` serves beyond loopback)")

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.board is not None:
                self.ray.kill(self.board)
        finally:
            self.ray.shutdown()

    # -- work items ---------------------------------------------------------------------------
    def run(self, todo: list[tuple[Task, int, str]], deliver: Callable[[AttemptResult | WrittenTest], None], *,
            done: Callable[[Task], None]) -> None:
        """Every work item on the cluster; ``deliver`` hears each record, ``done`` each finished item's task."""
        def submit(item: tuple[Task, int, str]):
            task, attempt, kind = item
            job = functools.partial(_attempt_job, attempt=attempt, kind=kind, settings=self.settings,
                                    grade=self.opts.grade, imagine=self.opts.imagine)
            return self._submit(job, task, {}, item_key(task, attempt, kind))

        def gathered(item: tuple[Task, int, str], outcome: tuple[Any, dict[str, bytes], str] | BaseException | None):
            task, attempt, kind = item
            if outcome is None:  # cancelled: the next run picks it up
                return
            if isinstance(outcome, BaseException):
                deliver(failed(task.instance_id, attempt, kind, _lost(outcome)))
            else:
                record, files, node = outcome
                self._write(files)
                self._used.setdefault(task.image or "", set()).add(node)
                deliver(record)
            done(task)

        self._gather(list(todo), submit, gathered)

    def select(self, choices: list[Choice], *, run: bool, done: Callable[[Task], None]) -> list[dict[str, Any]]:
        """runner.run_selection's per-task selections, each on a node; selection.json comes back."""
        rows: dict[str, dict[str, Any]] = {}

        def submit(choice: Choice):
            rel = f"instances/{choice.task.instance_id}/selection.json"
            saved = self.opts.out / rel
            inputs = {rel: saved.read_bytes()} if saved.exists() else {}
            job = functools.partial(_select_job, choice=choice, method=self.opts.select, settings=self.settings,
                                    run=run, reuse=not self.opts.rerun)
            return self._submit(job, choice.task, inputs, f"{choice.task.instance_id} (select)")

        def gathered(choice: Choice, outcome: tuple[Any, dict[str, bytes], str] | BaseException | None):
            iid = choice.task.instance_id
            if isinstance(outcome, tuple):
                row, files, _node = outcome
                self._write(files)
                rows[iid] = row
            else:
                why = "cancelled" if outcome is None else _lost(outcome)
                rows[iid] = {"instance_id": iid, "method": self.opts.select, "winner": None, "resolved": False,
                             "reason": f"selection failed: {why}", "error": True, "patch": ""}
            done(choice.task)

        self._gather(list(choices), submit, gathered)
        return [rows[c.task.instance_id] for c in choices]

    def _submit(self, job: Callable, task: Task, inputs: dict[str, bytes], key: str):
        source = None
        if task.source is not None and not task.image:
            if task.instance_id not in self._sources:
                self._sources[task.instance_id] = self.ray.put(_packed(task))
            source = self._sources[task.instance_id]
        portable = replace(task, problem_statement=_statement(task))
        return self._call.options(num_cpus=0, resources={DOCKER: 1}, max_retries=RETRIES, retry_exceptions=False,
                                  name=key).remote(job, portable, source, inputs, self.board, key, self.opts.pull)

    def _gather(self, items: list, submit: Callable, gathered: Callable) -> None:
        """Keep at most `cap` items in flight; hand each outcome to ``gathered`` as it comes
        (a tuple, the exception of a lost item, or None for a cancelled one)."""
        ray = self.ray
        pending: dict[Any, Any] = {}
        queue = list(reversed(items))
        last_view = 0.0
        try:
            while queue or pending:
                while queue and len(pending) < self._cap():
                    item = queue.pop()
                    pending[submit(item)] = item
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    gathered(pending.pop(ref), self._outcome(ref))
                if time.monotonic() - last_view > 0.5:
                    self._show()
                    last_view = time.monotonic()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in each: its sandbox closes as it unwinds
            ray.wait(list(pending), num_returns=len(pending), timeout=60)
            raise

    def _outcome(self, ref: Any) -> tuple[Any, dict[str, bytes], str] | BaseException | None:
        from ray.exceptions import RayError, TaskCancelledError

        try:
            return self.ray.get(ref)
        except TaskCancelledError:
            return None
        except RayError as exc:
            return exc

    def _cap(self) -> int:
        """Items in flight: --workers when given, else every `docker` slot the cluster has now."""
        if self.opts.workers > 0:
            return self.opts.workers
        return max(1, int(self.ray.cluster_resources().get(DOCKER, 0)))

    def _write(self, files: dict[str, bytes]) -> None:
        root = self.opts.out.resolve()
        for rel, data in files.items():
            path = (root / rel).resolve()
            if not path.is_relative_to(root):
                continue  # never outside --out, whatever a node sends
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def _show(self) -> None:
        try:
            running, pulls = self.ray.get(self.board.read.remote(), timeout=5)
        except Exception:  # the display lags; the run goes on
            return
        with self.progress.lock:
            self.progress.running = running
            self.progress.pulling = pulls
        self.on_update(self.progress)

    def prefetch_images(self, images: list[str]) -> None:
        """--prefetch: every image on every Docker node; what fails is left to the items to report."""
        if images:
            self.on_nodes(self.docker_nodes(), images, remove=False)

    def remove_image(self, image: str) -> None:
        """--remove-images: from the nodes that ran items needing it, after its last item."""
        nodes = sorted(self._used.get(image, set()))
        if nodes:
            self.on_nodes(nodes, [image], remove=True)

    def docker_nodes(self) -> list[str]:
        return [n["NodeID"] for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(DOCKER)]

    def on_nodes(self, nodes: list[str], images: list[str], *, remove: bool) -> list[str]:
        """Pull or remove ``images`` on each of ``nodes``; what failed, per node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        work = self.ray.remote(_images_job)
        refs = {work.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(images, self.opts.pull, remove): node for node in nodes}
        problems = []
        for ref, node in refs.items():
            outcome = self._outcome(ref)
            if isinstance(outcome, list):
                problems += [f"node {node[:8]}: {p}" for p in outcome]
            else:
                problems.append(f"node {node[:8]}: {_lost(outcome) if outcome else 'cancelled'}")
        return problems


def _probe(address: str) -> None:
    """Refuse an address where nothing listens at once: ray.init would retry it for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc}); {start_hint(address)}") from None


def _statement(task: Task) -> str:
    """The issue text, fetched on the driver when the row names a GitHub issue (nodes need no token)."""
    from cwm_agent.github.issues import issue_statement

    return issue_statement(task.problem_statement)


def _lost(exc: BaseException) -> str:
    from ray.exceptions import RayTaskError

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, RayTaskError):  # raised on the node (not retried): a bug or a broken node
        return f"failed on its Ray node ({first[:300]}); `--retry-errors` runs it again"
    return (f"lost on the Ray cluster after {RETRIES + 1} tries ({type(exc).__name__}: {first[:300]}); "
            "`--retry-errors` runs it again")
