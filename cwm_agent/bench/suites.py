"""Running a project's pytest suite (`pytest -rA`, as the grader reads it) and reading the
result, on this host or inside a sandbox container.

`tasks generate` runs every mutant's suite; a mutant is code nobody has reviewed (a dropped
guard in a library that deletes files deletes the wrong ones), so when the Docker engine is
there it runs in a container: no network, its memory and processes capped, and only the
generator's scratch folder mounted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MEMORY_LIMIT = 4 << 30  # bytes of address space per test run: a mutant may allocate without end
# No third-party plugins and no bytecode (a restored file must never run from a stale .pyc).
TEST_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            "COLUMNS": "160"}


_RUNNER = ("import resource, runpy, sys; "
           "resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
           "runpy.run_module('pytest', run_name='__main__')")
_STATUS_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", re.M)
# pytest 9 reports unittest subtests as "SUBFAILED(x=Fraction(2, 3)) tests/t.py::T::test_a - ..."
# next to a PASSED line for the same test; pytest 7.2, the sandbox's, fails the whole test.
_SUBTEST_LINE = re.compile(r"^SUB(FAILED|PASSED)\b.*?\s(\S+::\S*)", re.M)
_FAILING = ("FAILED", "ERROR")


@dataclass
class SuiteRun:
    statuses: dict[str, str]  # node id -> PASSED / FAILED / ERROR / SKIPPED / XFAIL / XPASS
    output: str
    exit_code: int | None  # None: timed out
    seconds: float

    @property
    def collection_failed(self) -> bool:
        """A test file failed to import, or pytest itself failed (exit 2 to 4)."""
        return self.exit_code in (2, 3, 4) or any("::" not in test for test in self.statuses)  # "ERROR tests/x.py"


def parse_statuses(output: str) -> dict[str, str]:
    """node id -> status from pytest -rA lines; a failure of any part (a subtest) fails the test."""
    statuses: dict[str, str] = {}
    lines = [(m.start(), m.group(1), m.group(2)) for m in _STATUS_LINE.finditer(output)]
    lines += [(m.start(), m.group(1), m.group(2)) for m in _SUBTEST_LINE.finditer(output)]
    for _, status, test in sorted(lines):
        if test.startswith("["):  # "SKIPPED [2] tests/x.py:10: reason" counts skips, names no test
            continue
        if statuses.get(test) not in _FAILING:
            statuses[test] = status
    return statuses


def run_tests(root: Path, test_files: list[str], *, python: str, timeout: float,
              extra: tuple[str, ...] = ()) -> SuiteRun:
    """`pytest -rA --tb=short` on `test_files` in `root`, as the grader would, in a killable process group."""
    argv = [python, *_pytest_args(test_files, extra)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")} | TEST_ENV
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    text = out.decode("utf-8", "replace")
    return SuiteRun(parse_statuses(text), text, code, time.monotonic() - started)


def _pytest_args(test_files: list[str], extra: tuple[str, ...]) -> list[str]:
    return ["-c", _RUNNER.format(limit=MEMORY_LIMIT), "-rA", "--tb=short", "-p", "no:cacheprovider",
            *extra, *test_files]


class SuiteRunner(Protocol):
    def run(self, root: Path, test_files: list[str], *, timeout: float, extra: tuple[str, ...] = ()) -> SuiteRun:
        """Run the test files in the project folder `root`."""
        ...

    def close(self) -> None: ...


class HostRunner:
    """Runs suites with an interpreter of this machine (which needs pytest)."""

    def __init__(self, python: str):
        self.python = python

    def __str__(self) -> str:
        return self.python

    def run(self, root: Path, test_files: list[str], *, timeout: float, extra: tuple[str, ...] = ()) -> SuiteRun:
        return run_tests(root, test_files, python=self.python, timeout=timeout, extra=extra)

    def close(self) -> None:
        pass


class ContainerRunner:
    """Runs suites with the python3 of a sandbox image, in one long-lived container that sees
    only `scratch` (bound at the same path, so project folders keep their names) and no network.

    One `docker exec` per run (a few tens of ms against seconds of tests). The exec's process
    cannot be killed from here, so `timeout -s KILL` inside ends a run that overstays."""

    def __init__(self, client: Any, image: str, scratch: Path, *, memory: str = "4g", ttl: int = 6 * 3600):
        from cwm_agent.sandbox.docker import container_args, hold_lifeline, lifeline_spec

        self.client, self.image = client, image
        scratch = Path(scratch).resolve()
        # The lifeline as main process: the container goes with this process, even after SIGKILL.
        self.container = client.containers.create(
            image, **lifeline_spec(ttl),
            **container_args(f"suites-{uuid.uuid4().hex[:8]}", ttl, memory=memory, pids=1024, auto_remove=True,
                             volumes={str(scratch): {"bind": str(scratch), "mode": "rw"}}),
        )
        self._lifeline = hold_lifeline(client.api, self.container.id)
        self.container.start()

    def __str__(self) -> str:
        return f"python3 of {self.image} (in a container)"

    def run(self, root: Path, test_files: list[str], *, timeout: float, extra: tuple[str, ...] = ()) -> SuiteRun:
        from cwm_agent.sandbox.docker import exec_with_deadline

        argv = ["timeout", "-s", "KILL", str(max(1, round(timeout))), "python3", *_pytest_args(test_files, extra)]
        started = time.monotonic()
        # `timeout` inside ends an overstaying run; the extra 30 s only guard against a wedged engine.
        output, code = exec_with_deadline(self.client.api, self.container.id, argv, timeout=timeout + 30,
                                          workdir=str(Path(root).resolve()), environment=TEST_ENV)
        seconds = time.monotonic() - started
        if code == 137 and seconds >= timeout:  # killed by `timeout`, not by the memory limit
            code = None
        text = output.decode("utf-8", "replace")
        return SuiteRun(parse_statuses(text), text, code, seconds)

    def close(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:  # gone already; `cwm-agent cleanup` removes any leftover
            pass
        self._lifeline.close()
