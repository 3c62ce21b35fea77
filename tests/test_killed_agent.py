"""An agent killed with SIGKILL leaves nothing behind (issue 19): whatever the model's command
was doing, whatever phase the agent was in, its containers are gone and its repository copy is
emptied within seconds, through the keeper (the container's main process) alone.

Real CLI processes (`cwm-agent solve` with the scripted model), real Docker. Each case prints
the time from the SIGKILL to the removal of the last container (pytest -s shows it); set
CWM_KILL_RUNS=20 to measure over 20 runs (median and max)."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwm_agent.bench.tasks import DEMO_TASK
from cwm_agent.sandbox.docker import OWNER_LABEL, _process_start, our_containers, stage_parents
from cwm_agent.testing.scripted_server import ScriptedServer, think

pytestmark = pytest.mark.docker
CLI = [sys.executable, "-m", "cwm_agent.cli"]
RUNS = int(os.environ.get("CWM_KILL_RUNS", "1"))
WITHIN = 3.0  # seconds from the SIGKILL to no container and no non-empty copy


def owner_of(pid: int) -> str:
    """The owner label a process gives its containers (and writes into its staging directories)."""
    for _ in range(100):
        started = _process_start(pid)
        if started:
            return f"{socket.gethostname()}:{pid}:{started}"
        time.sleep(0.01)
    raise AssertionError(f"no process {pid}")


def containers_of(client, owner: str) -> list:
    return our_containers(client, labels={OWNER_LABEL: owner})


def stages_of(owner: str) -> list[Path]:
    found = []
    for parent in stage_parents():
        for stage in parent.glob("*") if parent.is_dir() else ():
            try:
                if (stage / "owner").read_text() == owner:
                    found.append(stage)
            except OSError:
                pass
    return found


def copy_left(owner: str) -> list[str]:
    """Files still in the repository copies of `owner` (an empty folder does not count)."""
    left = []
    for stage in stages_of(owner):
        testbed = stage / "testbed"
        try:
            left += [str(p) for p in testbed.iterdir()]
        except OSError:
            pass
    return left


def busy_with(client, owner: str, program: str) -> int:
    """How many of `owner`'s containers run `program`."""
    busy = 0
    for container in containers_of(client, owner):
        try:
            rows = client.api.top(container.id, ps_args="-eo pid,args").get("Processes") or []
        except Exception:
            continue
        busy += any(program in row[-1] for row in rows)
    return busy


def running(client, owner: str, program: str) -> bool:
    return busy_with(client, owner, program) > 0


def kill_and_time(client, proc: subprocess.Popen, owner: str) -> float:
    """SIGKILL `proc`; seconds until none of its containers is left and its copies are empty."""
    assert containers_of(client, owner), "nothing to kill: no container yet"
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.wait()
    while time.monotonic() - killed < 60:
        if not containers_of(client, owner) and not copy_left(owner):
            return time.monotonic() - killed
        time.sleep(0.05)
    return float("inf")


def wait_for(condition, within: float = 120) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def solve(server: ScriptedServer, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "solve", "--base-url", server.base_url, "--out", str(out), "--json",
                             "--command-timeout", "3600", "--task", DEMO_TASK],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(case: str, times: list[float]) -> None:
    print(f"\n{case}: SIGKILL to no container and no copy over {len(times)} run(s): "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")


COMMANDS = {
    "sleep": "sleep 1000",
    "ignores SIGTERM and forks": "trap '' TERM; for i in 1 2 3; do (trap '' TERM; sleep 1000) & done; "
                                 "setsid bash -c \"trap '' TERM; sleep 1000\" & sleep 1000",
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_solve_killed_while_the_models_command_runs(tmp_path, docker_client, sandbox_image, case):
    times = []
    for run in range(RUNS):
        script = [think("wait", "bash", COMMANDS[case])]
        with ScriptedServer(script) as server:
            proc = solve(server, tmp_path / f"run{run}")
            try:
                owner = owner_of(proc.pid)
                assert wait_for(lambda: running(docker_client, owner, "sleep 1000")), "the command never ran"
                assert copy_left(owner) or os.environ.get("CWM_AGENT_SANDBOX_COPY") == "archive"
                times.append(kill_and_time(docker_client, proc, owner))
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert times[-1] < WITHIN, (case, times)
    report(f"solve killed during `{case}`", times)


def test_solve_killed_during_the_sandbox_start_up(tmp_path, docker_client, sandbox_image):
    times = []
    for run in range(RUNS):
        with ScriptedServer([think("wait", "bash", "sleep 1000")]) as server:
            proc = solve(server, tmp_path / f"run{run}")
            try:
                owner = owner_of(proc.pid)
                # As soon as its container runs: the keeper is starting, the copy is being made,
                # or the start-up script runs (the model has not been asked anything yet).
                assert wait_for(lambda: any(c.status == "running" for c in containers_of(docker_client, owner)))
                assert not server.generation_requests(), "too late: the start-up was over"
                times.append(kill_and_time(docker_client, proc, owner))
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert times[-1] < WITHIN, times
    report("solve killed during the sandbox's start-up", times)


GRADER = """
import sys
sys.path.insert(0, "tests")
from test_grade import TASKS, hang_patch
from cwm_agent.bench.grade import grade_task
task = TASKS["statkit-generator-input"]
grade_task(task, hang_patch(task), timeout=3600)
"""


def test_grader_killed_while_the_tests_run(docker_client, sandbox_image):
    from cwm_agent.paths import PROJECT_ROOT

    times = []
    for _ in range(RUNS):
        proc = subprocess.Popen([sys.executable, "-c", GRADER], cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            owner = owner_of(proc.pid)
            assert wait_for(lambda: running(docker_client, owner, "pytest")), "the tests never ran"
            times.append(kill_and_time(docker_client, proc, owner))
        finally:
            if proc.poll() is None:
                proc.kill()
        assert times[-1] < WITHIN, times
    report("grader killed while the tests run", times)


def test_eval_with_two_workers_killed_mid_run(tmp_path, docker_client, sandbox_image):
    """Both workers' sandboxes, each in the model's `sleep 1000`, go with the eval's process."""
    times = []
    for run in range(RUNS):
        with ScriptedServer([think("wait", "bash", "sleep 1000")] * 2) as server:
            proc = subprocess.Popen([*CLI, "eval", "bundled", "--workers", "2", "--base-url", server.base_url,
                                     "--filter", "^(demo-slugify-unicode|pagekit-exact-multiple-pages)$",
                                     "--command-timeout", "3600", "--out", str(tmp_path / f"eval{run}")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                owner = owner_of(proc.pid)
                assert wait_for(lambda: busy_with(docker_client, owner, "sleep 1000") == 2), "not both at once"
                times.append(kill_and_time(docker_client, proc, owner))
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert times[-1] < WITHIN, times
    report("eval --workers 2 killed while both commands run", times)

