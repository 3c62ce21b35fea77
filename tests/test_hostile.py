"""Hostile commands in real containers. Each case must end with the right observation,
a session that works afterwards (in the repo root after a restart), the host untouched,
and no container left behind."""

from __future__ import annotations

import hashlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from cwm_agent.paths import PROJECT_ROOT
from cwm_agent.tools import RESTART_FEEDBACK, command_feedback
from cwm_agent.sandbox.docker import LABEL, DockerSandbox

pytestmark = pytest.mark.docker

TIMEOUT_FEEDBACK, OVERFLOW_FEEDBACK, DIED_FEEDBACK = (RESTART_FEEDBACK[k] for k in ("timeout", "overflow", "died"))
TIMEOUT = 3  # seconds per command: short, to keep the suite fast


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        digest.update(str(file.relative_to(path)).encode())
        if file.is_file() and not file.is_symlink():
            digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def host_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "keep.txt").write_text("the host's file\n")
    return repo


@pytest.fixture(scope="module")
def run_id() -> str:
    return f"test-hostile-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def sandbox(docker_client, sandbox_image, host_repo, run_id):
    digest = tree_digest(host_repo)
    box = DockerSandbox(sandbox_image, repo=host_repo, command_timeout=TIMEOUT, memory="256m", pids=256,
                        run_id=run_id, client=docker_client)
    yield box
    box.close()
    assert tree_digest(host_repo) == digest, "the host repository changed"
    assert not docker_client.containers.list(all=True, ignore_removed=True, filters={"label": f"{LABEL}={run_id}"})


def healthy(box: DockerSandbox, *, restarted: bool = False) -> None:
    assert box.run("echo ok").output == "ok\n"
    if restarted:
        assert box.run("pwd").output == "/testbed\n"
    assert box.run("cat keep.txt").output == "the host's file\n"


def test_endless_loop_times_out(sandbox):
    result = sandbox.run("cd /tmp; while :; do :; done")
    assert result.status == "timeout" and command_feedback(result) == TIMEOUT_FEEDBACK
    healthy(sandbox, restarted=True)


def test_yes_overflows(sandbox):
    result = sandbox.run("cd /; yes")
    assert result.status == "overflow" and command_feedback(result) == OVERFLOW_FEEDBACK
    healthy(sandbox, restarted=True)


def test_one_10_mb_line_overflows(sandbox):
    result = sandbox.run("cd /; head -c 10000000 /dev/zero | tr '\\0' x")
    assert result.status == "overflow" and command_feedback(result) == OVERFLOW_FEEDBACK
    healthy(sandbox, restarted=True)


def test_background_child_holding_stdout(sandbox):
    result = sandbox.run("(sleep 60; echo late) & echo now")
    assert result.status == "ok" and result.output == "now\n"
    healthy(sandbox)


@pytest.mark.parametrize("command", ["exit", "kill -9 $$"])
def test_the_shell_dying(sandbox, command):
    sandbox.run("cd /tmp")
    result = sandbox.run(command)
    assert result.status == "died" and command_feedback(result) == DIED_FEEDBACK
    healthy(sandbox, restarted=True)


@pytest.mark.parametrize("command", ["cat", "python3", "read -r line; echo \"[$line]\"", "sed p", "wc -l"])
def test_commands_reading_stdin_get_eof(sandbox, command):
    result = sandbox.run(command)
    assert result.status == "ok"
    assert result.output in ("", "[]\n", "0\n")
    healthy(sandbox)


def test_output_without_trailing_newline(sandbox):
    assert sandbox.run("printf 'no newline'").output == "no newline"
    assert sandbox.run("printf 'a\\nb'").output == "a\nb"
    healthy(sandbox)


def test_binary_and_invalid_utf8_output(sandbox):
    result = sandbox.run("head -c 65536 /dev/urandom; printf '\\000\\377end'")
    assert result.status == "ok" and result.exit_code == 0
    assert result.output.endswith("\x00\ufffdend")
    healthy(sandbox)


def test_fork_bomb(sandbox):
    result = sandbox.run(":(){ :|:& };:")
    assert result.status in ("ok", "timeout")
    # The bomb runs on in the background (its "fork: retry" noise reaching the next
    # outputs, as in a terminal) until a restart kills it; one timeout at most.
    seen = []
    for _ in range(3):
        probe = sandbox.run("ls / >/dev/null && echo works")
        seen.append((probe.status, round(probe.seconds, 2), probe.output[-60:]))
        if probe.output.endswith("works\n"):
            break
        assert probe.status in ("ok", "timeout")
    if not probe.output.endswith("works\n"):  # say what was still there
        top = sandbox.client.api.top(sandbox.container_id, ps_args="-eo pid,ppid,stat,args")
        pytest.fail(f"no working session after the bomb: probes {seen}; processes {top.get('Processes')}")
    sandbox.run("sleep 10")  # a timeout: the restart kills whatever is left
    assert int(sandbox.run("ps -e --no-headers | wc -l").output) < 10
    healthy(sandbox, restarted=True)


BOMBS = 20
PROBES = 5  # `echo ok` under each bomb


def test_fork_bombs_the_fresh_session_is_usable_at_once(sandbox):
    """Each bomb is followed at once by `echo ok`, which must answer on the first try, under
    the bomb and after the timeout's restart. That restart is complete only when nothing of
    the old session is left and a fresh shell answers: its time is counted in the timed-out
    command, never in the next one. Prints the time from the timeout to the usable fresh
    session (pytest -s shows it)."""
    recoveries = []
    rebuilds = sandbox.rebuilds
    for i in range(BOMBS):
        # The bomb returns at once, and runs on in the background ("fork: retry" noise
        # reaching the next outputs, as in a terminal)...
        bomb = sandbox.run(":(){ :|:& };:")
        assert bomb.status in ("ok", "timeout"), (i, bomb)
        # ...where a builtin still answers, on the first try, every time (its output may carry
        # the noise, before or after its own, never inside the line that ends it).
        for _ in range(PROBES):
            probe = sandbox.run("echo ok")
            assert probe.status == "ok" and "ok" in probe.output.splitlines(), (i, probe)
        # A command that needs a fork (or sleeps) times out; the restart ends the bomb.
        stuck = sandbox.run("sleep 60")
        assert stuck.status == "timeout" and command_feedback(stuck) == TIMEOUT_FEEDBACK, (i, stuck)
        # Restarted in place: the keeper survived the bomb (a sandbox rebuilt from the starting
        # state would answer too, but the model's work would be lost).
        assert sandbox.rebuilds == rebuilds, (i, "the sandbox was rebuilt")
        recoveries.append(sandbox.session.restart_seconds)
        fresh = sandbox.run("echo ok")
        assert (fresh.status, fresh.output) == ("ok", "ok\n"), (i, fresh)
    assert int(sandbox.run("ps -e --no-headers | wc -l").output) < 10
    recoveries.sort()
    print(f"\nfork bombs: {BOMBS}/{BOMBS} fresh sessions answered on the first try; from the timeout "
          f"to a usable fresh session: median {statistics.median(recoveries):.2f} s, "
          f"max {recoveries[-1]:.2f} s")
    healthy(sandbox, restarted=True)


def test_memory_hog_beyond_the_limit(sandbox):
    # A longer timeout: reclaim before the kill can be slow on a loaded host.
    result = sandbox.run("python3 -c 'x = bytearray(1 << 30); print(len(x))'", timeout=60)
    assert result.status == "ok"
    assert result.exit_code == 137 and "Killed" in result.output
    healthy(sandbox)


def test_no_network(sandbox):
    result = sandbox.run(
        "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), timeout=2)' 2>&1 | tail -1; "
        "getent hosts example.com || echo no-dns; ip -o link 2>/dev/null | grep -v ' lo:' | wc -l || true")
    assert result.status == "ok"
    assert "Network is unreachable" in result.output
    assert "no-dns" in result.output
    healthy(sandbox)


def test_writes_outside_testbed_stay_in_the_container(sandbox):
    marker = f"cwm-hostile-{uuid.uuid4().hex[:8]}"
    result = sandbox.run(f"echo x > /{marker} && echo x > /etc/{marker} && mkdir -p /opt/{marker} && echo wrote")
    assert result.output == "wrote\n"
    assert not Path(f"/{marker}").exists() and not Path(f"/etc/{marker}").exists()
    assert not Path(f"/opt/{marker}").exists()
    healthy(sandbox)


def test_process_ignoring_sigterm(sandbox):
    sandbox.run("bash -c \"trap '' TERM; exec sleep 600\" >/dev/null 2>&1 &")
    result = sandbox.run("trap '' TERM; sleep 600")
    assert result.status == "timeout"
    assert sandbox.run("pgrep -c -x sleep || true").output == "0\n"
    healthy(sandbox, restarted=True)


def test_a_thousand_quick_commands(sandbox):
    for i in range(1000):
        result = sandbox.run(f"echo {i}")
        assert result.output == f"{i}\n"
    healthy(sandbox)


def test_rm_rf_root(docker_client, sandbox_image, host_repo):
    # Its own sandbox: this one is wrecked on purpose.
    digest = tree_digest(host_repo)
    run_id = f"test-rmrf-{uuid.uuid4().hex[:8]}"
    with DockerSandbox(sandbox_image, repo=host_repo, command_timeout=20, run_id=run_id,
                       client=docker_client) as box:
        result = box.run("rm -rf / --no-preserve-root 2>/dev/null; ls /usr /testbed 2>&1 | head -3")
        assert result.status in ("ok", "overflow", "timeout", "died")
        # Whether or not bash survived, the next commands work: in the wreck, or in a
        # sandbox rebuilt from the starting state when no fresh shell could start.
        box.run("exit")
        healthy(box, restarted=True)
    assert tree_digest(host_repo) == digest
    assert not docker_client.containers.list(all=True, ignore_removed=True, filters={"label": f"{LABEL}={run_id}"})


AGENT = """
import sys, time
from cwm_agent.sandbox.docker import DockerSandbox
box = DockerSandbox(sys.argv[1], ttl_seconds=int(sys.argv[2]), command_timeout=3600, run_id=sys.argv[3])
print(box.container_id, flush=True)
if sys.argv[4] == "busy":
    box.run("echo started; while :; do :; done")
time.sleep(3600)
"""


def wait_gone(client, container_id: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not client.containers.list(all=True, ignore_removed=True, filters={"id": container_id}):
            return True
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("mode,ttl", [("busy", 3600), ("idle", 3600)])
def test_agent_killed_with_sigkill(docker_client, sandbox_image, mode, ttl):
    """Busy (an endless command runs) or idle: the keeper sees its stdin close and ends the
    container at once, long before its time-to-live (issue 19: busy used to wait for it)."""
    run_id = f"test-sigkill-{uuid.uuid4().hex[:8]}"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, sandbox_image, str(ttl), run_id, mode],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        container_id = agent.stdout.readline().strip()
        assert container_id, "the agent did not start its sandbox"
        if mode == "busy":  # wait until the loop runs
            for _ in range(100):
                top = docker_client.api.top(container_id, ps_args="-eo pid,pcpu,args")
                if any(float(row[1]) > 10 for row in top.get("Processes") or []):
                    break  # something spins: the loop runs
                time.sleep(0.2)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        assert wait_gone(docker_client, container_id, within=5)
    finally:
        if agent.poll() is None:
            agent.kill()
        for container in docker_client.containers.list(all=True, ignore_removed=True, filters={"label": f"{LABEL}={run_id}"}):
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # going already (auto_remove)
                pass
