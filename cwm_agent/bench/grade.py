"""The grader: apply a patch in a fresh container, run the task's tests, judge as SWE-bench does.

One grading run is one throw-away container of the task's image (a local task:
the base sandbox image with its source copied to /testbed at the base commit):

1. the model patch goes to /tmp/patch.diff and is applied with the official
   harness's chain: `git apply --verbose`, `--3way`, `--reject`, then
   `patch --batch --forward --fuzz=5 -p1` (the tree is reset between tries, and
   a patch the chain leaves fully applied counts, as SWE-bench 5 does). The chain
   is `sandbox.patch.apply_chain`, the one `solve`'s check and `--apply` run too;
2. the eval script runs: it resets the test files, applies the test patch and
   runs the tests between the markers `: '>>>>> Start Test Output'` and
   `: '>>>>> End Test Output'`, which reach the log through `set -x`. The script
   of a local task is `eval_script(task)`; the SWE-bench export ships the same
   text, and both harnesses run it through the same rewrite (`prepare_eval_script`),
   so both run identical commands;
3. the log between the markers is parsed (pytest `-rA` lines) and the task is
   resolved only when every FAIL_TO_PASS and PASS_TO_PASS test passes.

The verdict follows `swebench.harness.grading` (5.0.2): F2P passes on PASSED or
XFAIL, P2P also on SKIPPED; a test missing from the log fails; a log holding
one of the harness's error markers, no markers, or no results is invalid, and
so is a test command that exited non-zero while the log records no failure
(a patch printing fake PASSED lines). XPASS lines are kept in the report but
graded as SWE-bench's parser sees them: not there, so failing. Statuses map to
the official report's buckets (`GradeResult.swebench_bucket`): an empty patch
("" or null) is not run, as there; a patch no command takes and a test run past
the timeout are errors; an invalid log is unresolved.

Two deliberate narrowings: results are read only between the markers (SWE-bench
falls back to the whole log when the markers hold none; outside them our
scripts print only git's words, so no verdict changes), and only pytest logs
(`log_parser` "parse_log_pytest", `eval_type` "pass_and_fail") are graded.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cwm_agent.sandbox.base import DockerUnavailable, SandboxError
from cwm_agent.sandbox.docker import container_args, exec_with_deadline, hold_lifeline, lifeline_spec
# The official patch chain lives with the patches, so solve's check and --apply run it too.
from cwm_agent.sandbox.patch import APPLY_COMMANDS, apply_chain, dataless_binary_files  # noqa: F401 (re-exported)
from cwm_agent.sandbox.patch import changed_files, file_path, patched_files
from cwm_agent.bench.tasks import Task, TaskError, load_tasks

START_MARKER = ">>>>> Start Test Output"
END_MARKER = ">>>>> End Test Output"
EXIT_CODE_MARKER = ">>>>> Test Exit Code"
EXIT_CODE_VAR = "SWEBENCH_TEST_EXIT_CODE"
# Words the official harness writes into a log that make it worthless; a log
# holding one is invalid whatever else it says.
BAD_LOG_MARKERS = (
    ">>>>> Patch Apply Failed",
    ">>>>> Reset Failed",
    ">>>>> Tests Errored",
    ">>>>> Tests Timed Out",
)
PATCH_FILE = "/tmp/patch.diff"
EVAL_FILE = "/eval.sh"
REPO_ROOT = "/testbed"
SCRIPT_HEADER = ("#!/bin/bash", "set -uxo pipefail")
LOG_PARSER = "parse_log_pytest"  # the name in swebench's PARSER_REGISTRY
EVAL_TYPE = "pass_and_fail"
DEFAULT_TIMEOUT = 1800.0  # seconds for the eval script, the official default
CONTAINER_LABEL = "cwm-agent"  # every container we start carries it (cwm-agent cleanup)
CONTAINER_GRACE = 600  # seconds a grading container may live beyond the test timeout
# A runaway mutant or model patch can make pytest grow without bound (15.6 GB was
# seen while generating tasks): it fails its tests instead of starving the host.
GRADE_MEMORY = "8g"

TEST_STATUSES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")
SWEBENCH_STATUSES = TEST_STATUSES[:-1]  # what swebench's TestStatus knows: no XPASS
F2P_OK = frozenset({"PASSED", "XFAIL"})
P2P_OK = frozenset({"PASSED", "XFAIL", "SKIPPED"})
_SKIP_SUMMARY = re.compile(r"^\[\d+\]$")  # "SKIPPED [2] path:line: reason": not a test id
_EXIT_CODE = re.compile(rf"{re.escape(EXIT_CODE_MARKER)}:\s*(-?\d+)")
_TEST_PATH = re.compile(r"(^|/)(tests?|testing)/|(^|/)(test_[^/]*|[^/]*_test\.py|conftest\.py)$")

Status = Literal["resolved", "unresolved", "patch_failed", "invalid", "error"]
# Our status -> the bucket of the official report (resolved_ids, unresolved_ids,
# error_ids, empty_patch_ids) the same prediction lands in.
SWEBENCH_BUCKET: dict[str, str] = {
    "resolved": "resolved",
    "unresolved": "unresolved",
    "invalid": "unresolved",  # it writes a report with resolved false
    "patch_failed": "error",  # it raises before writing a report
    "error": "error",
}


class GradeError(Exception):
    """Grading cannot start (bad predictions file, unknown instances); the message says why."""


# ---------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class Prediction:
    instance_id: str
    model_patch: str | None
    model_name_or_path: str = "cwm-agent"

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def read_predictions(path: str | Path) -> list[Prediction]:
    """Predictions in SWE-bench's format: a .jsonl of rows (or a .json list, or a dict by id)."""
    path = Path(path)
    if not path.is_file():
        raise GradeError(f"{path}: no such predictions file")
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[str, Any]] = []
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GradeError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict):  # SWE-agent's layout: {instance_id: prediction}
            data = list(data.values())
        if not isinstance(data, list):
            raise GradeError(f"{path}: expected a list of predictions")
        rows = [(f"{path}: row {i}", row) for i, row in enumerate(data, 1)]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise GradeError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    predictions: list[Prediction] = []
    seen: set[str] = set()
    for where, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise GradeError(f"{where}: a prediction is an object with a string instance_id")
        patch = row.get("model_patch")
        if patch is not None and not isinstance(patch, str):
            raise GradeError(f"{where}: model_patch must be a string (a git diff) or null")
        if row["instance_id"] in seen:
            raise GradeError(f"{where}: instance_id {row['instance_id']!r} appears twice")
        seen.add(row["instance_id"])
        name = row.get("model_name_or_path") or "cwm-agent"
        predictions.append(Prediction(row["instance_id"], patch, str(name)))
    if not predictions:
        raise GradeError(f"{path}: no predictions")
    return predictions


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> Path:
    """Write predictions as the official .jsonl."""
    path = Path(path)
    path.write_text("".join(json.dumps(p.to_row()) + "\n" for p in predictions), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# The eval script


def heredoc_delimiter(text: str) -> str:
    """A here-document terminator that does not occur in `text`, the same for the same text
    (so the script a grader runs and the one an export ships are the same bytes)."""
    salt = b""
    while True:
        delimiter = "EOF_" + hashlib.sha256(text.encode("utf-8", "surrogateescape") + salt).hexdigest()[:12]
        if delimiter not in text:
            return delimiter
        salt += b"+"


def _test_patch_files(task: Task) -> tuple[list[str], list[str]]:
    """(files the test patch changes that exist at the base commit, files it creates)."""
    new = {file_path(f) for f in changed_files(task.test_patch) if f.is_added_file}
    files = task.test_files or patched_files(task.test_patch)
    return [f for f in files if f not in new], [f for f in files if f in new]


def eval_script(task: Task, *, repo_root: str = REPO_ROOT) -> str:
    """The SWE-bench-style script that grades a local task inside its container.

    It resets the test files to the base commit (so a patch's edits to them do
    not count), applies the test patch, runs `task.test_invocation` between the
    markers, and resets the test files again, as SWE-bench's scripts do. The
    exported dataset ships exactly this text as the row's `eval_script`.
    """
    invocation = task.test_invocation
    if "\n" in invocation:
        raise TaskError(f"task {task.instance_id}: test_command must be one line")
    if not task.test_patch.strip():
        raise TaskError(f"task {task.instance_id} has no test_patch: there is nothing to grade with")
    existing, created = _test_patch_files(task)
    reset = []
    if existing:
        reset.append(f"git checkout {shlex.quote(task.base_commit)} -- {_quote_all(existing)}")
    if created:
        reset.append(f"rm -f -- {_quote_all(created)}")
    test_patch = task.test_patch if task.test_patch.endswith("\n") else task.test_patch + "\n"
    delimiter = heredoc_delimiter(test_patch)
    lines = [
        *SCRIPT_HEADER,
        f"cd {shlex.quote(repo_root)}",
        *reset,
        f"git apply --verbose - <<'{delimiter}'",
        test_patch + delimiter,
        f": '{START_MARKER}'",
        invocation,
        f": '{END_MARKER}'",
        *reset,
    ]
    return "\n".join(lines) + "\n"


def _quote_all(paths: Iterable[str]) -> str:
    return " ".join(shlex.quote(p) for p in paths)


def prepare_eval_script(script: str) -> str:
    """The script as the official harness runs it (swebench 5.0.2's TestSpec.eval_script).

    It drops the shebang and `set -uxo pipefail` lines and puts them back on top,
    and records the test command's exit status: `SWEBENCH_TEST_EXIT_CODE=$?` right
    before the end-marker line and an echo of it after, outside the parsed region.
    """
    lines = [line for line in script.strip().split("\n") if line not in SCRIPT_HEADER]
    for i, line in enumerate(lines):
        if END_MARKER in line:
            lines[i:i + 1] = [f"{EXIT_CODE_VAR}=$?", line, f'echo "{EXIT_CODE_MARKER}: ${EXIT_CODE_VAR}"']
            break
    return "\n".join([*SCRIPT_HEADER, *lines]) + "\n"


# ---------------------------------------------------------------------------
# Reading the log


def parse_pytest_log(log: str, statuses: Sequence[str] = TEST_STATUSES) -> dict[str, str]:
    """test id -> status from pytest `-rA` lines between the start and end markers.

    Only the first start marker and the first end marker after it count (as in
    SWE-bench); no markers, no results. Lines starting with one of `statuses`
    (default PASSED FAILED SKIPPED ERROR XFAIL XPASS) are read; the last line
    about a test wins.
    """
    if START_MARKER not in log:
        return {}
    region = log.split(START_MARKER, 1)[1]
    if END_MARKER not in region:
        return {}
    region = region.split(END_MARKER, 1)[0]
    results: dict[str, str] = {}
    for line in region.split("\n"):
        status = next((s for s in statuses if line.startswith(s)), None)
        if status is None:
            continue
        if status == "FAILED":  # "FAILED id - message"
            line = line.replace(" - ", " ")
        words = line.split()
        if len(words) < 2 or (words[0] == "SKIPPED" and _SKIP_SUMMARY.match(words[1])):
            continue
        results[words[1]] = words[0]
    return results


def recorded_exit_code(log: str) -> int | None:
    """The test command's exit status, recorded after the end marker, or None."""
    match = _EXIT_CODE.search(log)
    return int(match.group(1)) if match else None


def _lookup(test: str, results: dict[str, str], passing: frozenset[str]) -> str | None:
    # SWE-bench's fallback for ids cut off inside their parameters ("test_x[a(b"):
    # a prefix match, when every candidate agrees on pass or fail.
    if test in results:
        return test
    if test.count("[") > test.count("]"):
        matches = [key for key in results if key.startswith(test)]
        if matches and len({results[key] in passing for key in matches}) == 1:
            return matches[0]
    return None


def _passes(test: str, results: dict[str, str], ok: frozenset[str]) -> bool:
    key = _lookup(test, results, F2P_OK)
    return key is not None and results[key] in ok


@dataclass
class Breakdown:
    """Which expected tests passed (`success`) and which did not (`failure`)."""

    success: list[str] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> str:
        """Passing over expected, e.g. "2/3"."""
        return f"{len(self.success)}/{len(self.success) + len(self.failure)}"


@dataclass
class LogVerdict:
    status: Status
    tests: dict[str, str]
    fail_to_pass: Breakdown
    pass_to_pass: Breakdown
    detail: str
    exit_code: int | None


def judge_log(log: str, fail_to_pass: Sequence[str], pass_to_pass: Sequence[str]) -> LogVerdict:
    """The verdict on one eval-script log: resolved, unresolved or invalid."""
    tests = parse_pytest_log(log)
    exit_code = recorded_exit_code(log)
    f2p, p2p = Breakdown(), Breakdown()

    def verdict(status: Status, detail: str) -> LogVerdict:
        return LogVerdict(status, tests, f2p, p2p, detail, exit_code)

    bad = [marker for marker in BAD_LOG_MARKERS if marker in log]
    if bad:
        return verdict("invalid", f"the log contains {bad[0]!r}")
    if START_MARKER not in log or END_MARKER not in log.split(START_MARKER, 1)[1]:
        return verdict("invalid", "the test output markers are missing: the tests did not run")
    # SWE-bench's parser skips XPASS lines: such a test counts as missing, or keeps
    # what an earlier line said about it.
    graded = parse_pytest_log(log, SWEBENCH_STATUSES)
    if not graded:
        return verdict("invalid", "no test results between the markers (did the test command run?)")
    if exit_code not in (None, 0) and not any(s in ("FAILED", "ERROR") for s in graded.values()):
        return verdict("invalid", f"the tests exited {exit_code} but the log records no failure: "
                                  "the log does not describe the run")
    for test in fail_to_pass:
        (f2p.success if _passes(test, graded, F2P_OK) else f2p.failure).append(test)
    for test in pass_to_pass:
        (p2p.success if _passes(test, graded, P2P_OK) else p2p.failure).append(test)
    if not f2p.failure and not p2p.failure:
        return verdict("resolved", "")
    parts = []
    if f2p.failure:
        parts.append(f"{len(f2p.failure)}/{len(fail_to_pass)} FAIL_TO_PASS not passing")
    if p2p.failure:
        parts.append(f"{len(p2p.failure)}/{len(pass_to_pass)} PASS_TO_PASS broken")
    return verdict("unresolved", ", ".join(parts))


# ---------------------------------------------------------------------------
# Grading one task


@dataclass
class GradeResult:
    instance_id: str
    resolved: bool
    status: Status
    patch_applied_with: str | None = None  # the command of the chain that took the patch
    tests: dict[str, str] = field(default_factory=dict)  # every test id in the log -> status
    fail_to_pass: Breakdown = field(default_factory=Breakdown)
    pass_to_pass: Breakdown = field(default_factory=Breakdown)
    warnings: list[str] = field(default_factory=list)
    detail: str = ""  # why it is not resolved, in a line
    log: str = ""  # the eval script's output (the raw test output)
    apply_log: str = ""  # what the patch commands said
    test_exit_code: int | None = None
    seconds: float = 0.0
    model_name_or_path: str | None = None

    @property
    def swebench_bucket(self) -> str:
        """Where the official report puts this prediction: resolved, unresolved, error, empty_patch."""
        if self.status == "unresolved" and self.patch_applied_with is None:  # only an empty patch
            return "empty_patch"
        return SWEBENCH_BUCKET[self.status]

    def to_dict(self, *, with_logs: bool = False) -> dict[str, Any]:
        row = asdict(self)
        if not with_logs:
            row.pop("log")
            row.pop("apply_log")
        return row


def edited_test_files(task: Task, patch: str) -> list[str]:
    """The files a patch touches that are tests: the task's test files, or named like tests."""
    known = set(task.test_files) | set(patched_files(task.test_patch))
    return [path for path in patched_files(patch) if path in known or _TEST_PATH.search(path)]


def grade_task(task: Task, model_patch: str | None, *, client=None, image: str | None = None,
               timeout: float = DEFAULT_TIMEOUT, model_name_or_path: str | None = None) -> GradeResult:
    """Grade one patch for one task in a fresh container; never raises for the task's own failures.

    image: the container's image. Default: the task's `image`, else (a local task)
    the base sandbox image, with the task's source copied to /testbed.
    """
    started = time.monotonic()
    result = GradeResult(task.instance_id, False, "error", model_name_or_path=model_name_or_path)
    patch = model_patch or ""
    edits = edited_test_files(task, patch)
    if edits:
        result.warnings.append(f"patch edits test files: {', '.join(edits)} "
                               "(graded as it is; the eval script resets the test patch's files)")
    dataless = dataless_binary_files(patch)
    if dataless:
        result.warnings.append(f"binary files with no data, which no command can apply: {', '.join(dataless)} "
                               "(graded as it is: the chain's `patch` passes over new ones)")
    if not patch:
        # SWE-bench does not run an empty prediction ("" or null): it counts it
        # unresolved. Whitespace is not empty to it: that fails to apply.
        result.status, result.detail = "unresolved", "empty patch"
        result.warnings.append("empty patch: nothing to grade, counted unresolved without running the tests")
        result.seconds = time.monotonic() - started
        return result
    own_client = client is None
    try:
        script = prepare_eval_script(_task_eval_script(task, result.warnings))
        client = client or _docker_client()
        _grade_in_container(task, patch, script, result, client=client, image=image, timeout=timeout)
    except (TaskError, GradeError, SandboxError) as exc:
        result.status, result.detail = "error", str(exc)
    except Exception as exc:  # the engine failed us: report it on the row, grade the others
        result.status, result.detail = "error", f"{type(exc).__name__}: {exc}"
    finally:
        if own_client and client is not None:
            client.close()
    result.resolved = result.status == "resolved"
    result.seconds = time.monotonic() - started
    return result


def _task_eval_script(task: Task, warnings: list[str]) -> str:
    parser = task.extra.get("log_parser") or LOG_PARSER
    if parser != LOG_PARSER:
        raise GradeError(f"task {task.instance_id} uses the log parser {parser!r}; cwm-agent reads "
                         f"only pytest logs ({LOG_PARSER}): grade it with the official harness")
    if (task.extra.get("eval_type") or EVAL_TYPE) != EVAL_TYPE:
        raise GradeError(f"task {task.instance_id}: eval_type {task.extra['eval_type']!r} is not "
                         f"supported ({EVAL_TYPE} is): grade it with the official harness")
    if task.eval_script:
        return task.eval_script
    if task.image and task.source is None:
        warnings.append("the row has an image but no eval_script: ran its test_command "
                        f"({task.test_invocation}) after applying its test_patch")
    return eval_script(task)


def _docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        raise DockerUnavailable(f"the Docker engine does not answer ({exc}); "
                                "start it with: bash scripts/install-docker.sh") from None
    return client


def _container_name(instance_id: str) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", instance_id)[:80]
    return f"cwm-agent-grade-{safe}-{secrets.token_hex(3)}"


def _put_file(container, path: str, data: bytes, mode: int = 0o644) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.rsplit("/", 1)[1])
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    container.put_archive(path.rsplit("/", 1)[0] or "/", buffer.getvalue())


def repo_archive(src: Path, arcname: str) -> bytes:
    """A tar of `src` (its .git included) under `arcname`, owned by root.

    Owned by root because git refuses a repository owned by another user
    ("dubious ownership") and the grader runs as root.
    """
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(src, arcname=arcname, filter=as_root)
    return buffer.getvalue()


def checkout_archive(task: Task) -> bytes:
    """The task's source committed at its base commit, as a tar rooted at `testbed/`."""
    with tempfile.TemporaryDirectory(prefix="cwm-grade-") as tmp:
        repo = Path(tmp) / "testbed"
        commit = task.checkout(repo)
        if task.base_commit and commit != task.base_commit:
            raise TaskError(
                f"task {task.instance_id}: its source commits to {commit}, not its row's base_commit "
                f"{task.base_commit}; the source changed without the row being rebuilt "
                "(python tasks/make_row.py build ...)"
            )
        return repo_archive(repo, "testbed")


def _grade_in_container(task: Task, patch: str, script: str, result: GradeResult, *,
                        client, image: str | None, timeout: float) -> None:
    import docker.errors

    local = task.source is not None and not task.image
    if image is None:
        if task.image:
            image = task.image
        elif local:
            from cwm_agent.sandbox.image import default_image

            image = default_image()
        else:
            raise GradeError(f"task {task.instance_id} has neither an image nor a local source: "
                             "give its SWE-bench image (the row's `image`)")
    archive = checkout_archive(task) if local else None
    # Its main process is the lifeline: the container goes (auto_remove) the moment this
    # process does, even by SIGKILL, with the tests it was running; else after its time to live.
    ttl = int(timeout) + CONTAINER_GRACE
    try:
        container = client.containers.create(
            image, **lifeline_spec(ttl),
            **container_args("grade", ttl, memory=GRADE_MEMORY, pids=4096,
                             labels={f"{CONTAINER_LABEL}.instance": task.instance_id}, auto_remove=True,
                             name=_container_name(task.instance_id), working_dir=REPO_ROOT, user="root"),
        )
    except docker.errors.ImageNotFound:
        fix = "build it with: cwm-agent sandbox build" if local else "pull or build it first"
        raise GradeError(f"the image {image} is missing; {fix}") from None
    lifeline = None
    try:
        lifeline = hold_lifeline(client.api, container.id)
        if archive is not None:
            container.put_archive("/", archive)
        container.start()
        _put_file(container, PATCH_FILE, patch.encode("utf-8", "surrogateescape"))
        if not _apply_patch(container, result):
            result.status = "patch_failed"
            result.detail = "the patch does not apply: " + _last_lines(result.apply_log, 3)
            return
        _put_file(container, EVAL_FILE, script.encode("utf-8", "surrogateescape"), 0o755)
        output, code = exec_with_deadline(container.client.api, container.id, ["/bin/bash", EVAL_FILE],
                                          timeout=timeout, on_deadline=container.kill,
                                          workdir=REPO_ROOT, user="root")
        log = result.log = output.decode("utf-8", "replace")
        if code is None:
            result.status, result.detail = "error", f"the tests timed out after {timeout:g} s"
            return
        verdict = judge_log(log, task.FAIL_TO_PASS, task.PASS_TO_PASS)
        result.status, result.detail = verdict.status, verdict.detail
        result.tests, result.test_exit_code = verdict.tests, verdict.exit_code
        result.fail_to_pass, result.pass_to_pass = verdict.fail_to_pass, verdict.pass_to_pass
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # auto_remove is at it (the container was killed): wait for it
            if "in progress" not in str(exc):
                raise
            try:
                client.api.wait(container.id, timeout=30, condition="removed")
            except Exception:  # gone meanwhile
                pass
        if lifeline is not None:
            lifeline.close()


def _apply_patch(container, result: GradeResult) -> bool:
    """The official chain (sandbox.patch.apply_chain); True when it took the patch (recorded in the result)."""
    def run(command: str) -> tuple[int, str]:
        done = container.exec_run(["/bin/bash", "-c", command], workdir=REPO_ROOT, user="root")
        return done.exit_code, done.output.decode("utf-8", "replace")

    chain = apply_chain(run, PATCH_FILE)
    result.patch_applied_with, result.apply_log = chain.applied_with, chain.output
    return chain.ok


def _last_lines(text: str, count: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "(no output)"


# ---------------------------------------------------------------------------
# Many predictions, and the report


def grade_predictions(predictions_path: str | Path | Sequence[Prediction],
                      tasks: Sequence[Task] | str | Path, *, workers: int = 1,
                      on_result: Callable[[GradeResult], None] | None = None,
                      client=None, timeout: float = DEFAULT_TIMEOUT) -> list[GradeResult]:
    """Grade every prediction (in the file's order) against its task, `workers` at a time.

    `on_result` is called in the calling thread as each grade finishes.
    """
    predictions = (read_predictions(predictions_path)
                   if isinstance(predictions_path, (str, Path)) else list(predictions_path))
    task_list = load_tasks(tasks) if isinstance(tasks, (str, Path)) else list(tasks)
    by_id = {task.instance_id: task for task in task_list}
    unknown = [p.instance_id for p in predictions if p.instance_id not in by_id]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise GradeError(f"{len(unknown)} prediction(s) name no task in the task set: {shown}; "
                         "grade them against the tasks they were made for")
    own_client = client is None and any(p.model_patch for p in predictions)
    if own_client:
        client = _docker_client()  # fail once, up front, when Docker is down
    results: list[GradeResult | None] = [None] * len(predictions)

    def one(index: int) -> tuple[int, GradeResult]:
        p = predictions[index]
        return index, grade_task(by_id[p.instance_id], p.model_patch, client=client, timeout=timeout,
                                 model_name_or_path=p.model_name_or_path)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in as_completed([pool.submit(one, i) for i in range(len(predictions))]):
                index, result = future.result()
                results[index] = result
                if on_result is not None:
                    on_result(result)
    finally:
        if own_client:
            client.close()
    return [r for r in results if r is not None]


@dataclass
class GradeReport:
    """What `cwm-agent grade` prints and writes: counts, rate, one row per prediction."""

    results: list[GradeResult]
    total_tasks: int

    @property
    def submitted(self) -> int:
        return len(self.results)

    @property
    def resolved(self) -> int:
        return sum(r.resolved for r in self.results)

    @property
    def rate(self) -> float:
        """Resolved over predictions graded (SWE-bench reports it over the task set too)."""
        return self.resolved / self.submitted if self.submitted else 0.0

    @property
    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in SWEBENCH_BUCKET}
        for r in self.results:
            counts[r.status] += 1
        return counts

    @property
    def warnings(self) -> list[str]:
        return [f"{r.instance_id}: {w}" for r in self.results for w in r.warnings]

    def rows(self) -> list[dict[str, Any]]:
        return [{
            "instance_id": r.instance_id,
            "resolved": r.resolved,
            "status": r.status,
            "patch_applied_with": r.patch_applied_with,
            "fail_to_pass": r.fail_to_pass.ratio,
            "pass_to_pass": r.pass_to_pass.ratio,
            "detail": r.detail,
            "warnings": r.warnings,
            "seconds": round(r.seconds, 2),
        } for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_tasks": self.total_tasks,
            "submitted": self.submitted,
            "resolved": self.resolved,
            "rate": round(self.rate, 4),
            "counts": self.counts,
            "resolved_ids": sorted(r.instance_id for r in self.results if r.resolved),
            "rows": self.rows(),
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
        }

    def write(self, path: str | Path, *, logs_dir: str | Path | None = None) -> Path:
        """The report as JSON; with `logs_dir`, each eval log as `<instance_id>.log` there."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        if logs_dir is not None:
            folder = Path(logs_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for r in self.results:
                (folder / f"{r.instance_id}.log").write_text(r.apply_log + "\n" + r.log, encoding="utf-8")
        return path


def grade_report(predictions_path: str | Path, tasks: Sequence[Task] | str | Path, *, workers: int = 1,
                 on_result: Callable[[GradeResult], None] | None = None, client=None,
                 timeout: float = DEFAULT_TIMEOUT) -> GradeReport:
    """`cwm-agent grade PREDICTIONS TASKS`: grade the file, return the report."""
    task_list = load_tasks(tasks) if isinstance(tasks, (str, Path)) else list(tasks)
    results = grade_predictions(predictions_path, task_list, workers=workers, on_result=on_result,
                                client=client, timeout=timeout)
    return GradeReport(results, len(task_list))
