"""eval --backend ray on a real Ray cluster on this machine: a head and a second node, each
started with `ray start` in its own temp dir and announcing one `docker` slot (_ray_cluster.py).

The bundled tasks give the same verdicts as on the thread backend; a node killed mid-attempt
costs a retry on the other node, never a result; a driver killed mid-run resumes from --out; a
task set made in the test (save_to_disk) with a row whose image is missing under --pull never
records a named infrastructure error; a cluster that is not there is one clear line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _leftovers import Leftovers
from _ray_cluster import RayCluster

from cwm_agent import protocol
from cwm_agent.bench import runner as evaluate
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.config import Settings
from cwm_agent.models.connect import connect
from cwm_agent.paths import TASKS_DIR
from cwm_agent.testing.scripted_server import ScriptedServer

pytestmark = pytest.mark.docker
FLAILS = "pagekit-exact-multiple-pages"  # never gives a tool call: format errors, unresolved
MISSING_IMAGE = "127.0.0.1:5999/cwm-agent-test/no-such-image:1"  # a registry nobody runs: never any traffic


def act(tool: str, body: str) -> str:
    return "Thinking.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))


class Solver:
    """The scripted model for many tasks at once: the gold patch for each (FLAILS never acts).
    ``hold`` makes first turns wait until ``release`` is set (counting them in ``waiting``), so
    a test can act while attempts are in flight."""

    def __init__(self, tasks, *, hold: bool = False):
        self.gold = {t.instance_id: t.patch for t in tasks}
        self.statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.waiting: list[str] = []  # first turns that waited for release
        self.firsts: list[str] = []  # every first turn asked for

    def __call__(self, request):
        prompt = request["prompt"]
        task = next(i for i, s in self.statements.items() if s in prompt)
        turn = prompt.count("<|start_header_id|>assistant")
        if turn == 1:
            self.firsts.append(task)
        if turn == 1 and not self.release.is_set():
            self.waiting.append(task)
            self.release.wait(300)
        if task == FLAILS:
            return "I am not sure.\n</think>\nno tool"
        return [act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{self.gold[task]}EOF_PATCH"), act("submit", "fix.patch"),
                "Done.\n</think>\nSummary: applied the fix."][min(turn - 1, 2)]

    def wait_for(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.waiting) < count:
            assert time.monotonic() < deadline, f"only {self.waiting} started"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sandbox_image):
    with RayCluster(tmp_path_factory.mktemp("cluster"), nodes=2, docker=1) as started:
        yield started


def verdicts(out: Path) -> dict[tuple[str, int], tuple[str, bool | None, bool]]:
    return {key: (r.exit, r.resolved, r.infrastructure) for key, r in evaluate.load_results(out / "results.jsonl").items()}


def run(out: Path, tasks, server, on_update=lambda _p: None, **opts) -> list[evaluate.AttemptResult]:
    model = connect(base_url=server.base_url, model=None, api_key=None, format=None, retries=1)
    settings = Settings(base_url=server.base_url, max_turns=6, max_format_errors=2, command_timeout=60)
    return evaluate.run_eval(tasks, evaluate.EvalOptions(out=out, **opts), settings, model=model, on_update=on_update)


def test_the_bundled_tasks_give_the_same_verdicts_on_ray_as_on_threads(tmp_path, cluster, docker_client):
    leftovers = Leftovers(docker_client, everyone=True)  # Ray workers start them
    tasks = load_tasks(TASKS_DIR)
    with ScriptedServer([Solver(tasks)] * 100) as server:
        run(tmp_path / "threads", tasks, server, workers=2)
        seen = []
        run(tmp_path / "ray", tasks, server, on_update=lambda p: seen.append(dict(p.running)), workers=0,
            backend="ray", address=cluster.address)
    threads, ray = verdicts(tmp_path / "threads"), verdicts(tmp_path / "ray")
    assert len(threads) == len(tasks) and ray == threads
    assert sum(resolved for _, resolved, _ in ray.values()) == len(tasks) - 1  # all but FLAILS
    assert not any(infra for _, _, infra in ray.values())
    # The trajectories and grading logs came back to the driver's --out, as the thread backend writes them.
    for task in tasks:
        folder = tmp_path / "ray" / "instances" / task.instance_id / "attempt-1"
        assert json.loads((folder / "trajectory.json").read_text())["task"]["label"] == task.instance_id
        assert (folder / "log.txt").exists() == (task.instance_id != FLAILS)
    predictions = [json.loads(line) for line in (tmp_path / "ray" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["instance_id"] for p in predictions) == sorted(t.instance_id for t in tasks)
    # The progress display heard turns from the nodes, through the board.
    assert any(turn >= 1 for running in seen for turn in running.values())
    assert leftovers.describe() == []


def test_a_node_killed_mid_attempt_costs_a_retry_not_a_result(tmp_path, sandbox_image, docker_client):
    leftovers = Leftovers(docker_client, everyone=True)  # Ray workers start them
    tasks = [t for t in load_tasks(TASKS_DIR)][:4]
    solver = Solver(tasks, hold=True)
    with RayCluster(tmp_path / "cluster", nodes=2, docker=1) as killable, \
            ScriptedServer([solver] * 60) as server:
        outcome: dict = {}
        driver = threading.Thread(target=lambda: outcome.update(results=run(
            tmp_path / "eval", tasks, server, workers=0, backend="ray", address=killable.address)))
        driver.start()
        solver.wait_for(2)  # one attempt on each node, both waiting on the model
        killable.kill_node(1)
        solver.release.set()
        driver.join(600)
        assert not driver.is_alive()
    results = verdicts(tmp_path / "eval")
    assert sorted(iid for iid, _ in results) == sorted(t.instance_id for t in tasks)  # nothing lost, nothing twice
    # The attempt the node was running ran again on the head: a retry, not an error and not a score.
    assert not any(infra for _, _, infra in results.values())
    assert {iid: resolved for (iid, _), (_, resolved, _) in results.items()} == \
           {t.instance_id: t.instance_id != FLAILS for t in tasks}
    assert len(solver.firsts) == len(tasks) + 1  # the lost attempt's first turn was asked again, once
    deadline = time.monotonic() + 15  # the dead node's sandbox goes with its keeper's stream
    while leftovers.left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers.describe() == []


def cli(log: Path, *args: str) -> subprocess.Popen:
    """`cwm-agent eval ARGS`, its output in ``log`` (a pipe nobody reads could block it)."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "cwm_agent.cli", "eval", *args], stdout=fh,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})


def test_ctrl_c_and_a_killed_driver_lose_nothing_and_a_missing_image_is_named(tmp_path, cluster, docker_client):
    import datasets

    leftovers = Leftovers(docker_client, everyone=True)  # Ray workers start them
    tasks = load_tasks(TASKS_DIR)[:3]
    rows = [{**t.to_row(), "source": str(t.source_dir().resolve()), "FAIL_TO_PASS": json.dumps(t.FAIL_TO_PASS),
             "PASS_TO_PASS": json.dumps(t.PASS_TO_PASS)} for t in tasks]
    rows.append({**rows[0], "instance_id": "needs-an-image", "source": None, "image": MISSING_IMAGE,
                 "eval_script": "#!/bin/bash\ntrue\n"})
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "set"))
    out = tmp_path / "eval"
    args = [str(tmp_path / "set"), "--backend", "ray", "--address", cluster.address, "--out", str(out),
            "--pull", "never", "--max-turns", "6", "--max-format-errors", "2"]
    solver = Solver(tasks, hold=True)
    with ScriptedServer([solver] * 60) as server:
        # Ctrl-C: the remote attempts are cancelled (their sandboxes closed), nothing is recorded for them.
        first = cli(tmp_path / "first.log", *args, "--base-url", server.base_url)
        solver.wait_for(2)  # both slots busy, nothing finished but the image row
        first.send_signal(signal.SIGINT)
        assert first.wait(120) == 130
        assert set(verdicts(out)) <= {("needs-an-image", 1)}
        # kill -9 of the driver: Ray ends the tasks it owned; the next run resumes.
        second = cli(tmp_path / "second.log", *args, "--base-url", server.base_url)
        solver.wait_for(4)
        second.send_signal(signal.SIGKILL)
        second.wait(60)
        before = verdicts(out)
        solver.release.set()
        third = cli(tmp_path / "third.log", *args, "--base-url", server.base_url)
        third.wait(600)
    said = (tmp_path / "third.log").read_text()
    assert third.returncode == 0, said
    results = evaluate.load_results(out / "results.jsonl")
    assert set(before) <= set(results) and sorted(iid for iid, _ in results) == \
           sorted([t.instance_id for t in tasks] + ["needs-an-image"])
    image_row = results[("needs-an-image", 1)]
    assert image_row.infrastructure and MISSING_IMAGE in image_row.detail and f"docker pull {MISSING_IMAGE}" in image_row.detail
    assert all(r.resolved == (r.instance_id != FLAILS) for r in results.values() if not r.infrastructure)
    for task in tasks:
        assert (out / "instances" / task.instance_id / "attempt-1" / "trajectory.json").exists()
    assert "report:" in said
    deadline = time.monotonic() + 15  # the killed driver's sandboxes go with their keepers' streams
    while leftovers.left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers.describe() == []


def test_no_cluster_is_one_clear_line(tmp_path):
    with ScriptedServer([]) as server:
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", "bundled", "--backend", "ray",
                               "--address", "127.0.0.1:1", "--base-url", server.base_url, "--out", str(tmp_path / "e")],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", "bundled", "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "add --backend ray" in done.stderr


def test_test_time_scaling_runs_its_episodes_and_its_selection_on_the_cluster(tmp_path, cluster):
    from test_scaling import README, REPRODUCES, TASK, gold_episode, patch_episode, writer_episode

    task = next(t for t in load_tasks(TASKS_DIR) if t.instance_id == TASK)
    # --workers 1: one item in flight, so the scripted replies come in the order written
    script = patch_episode(README) + gold_episode(task) + writer_episode(REPRODUCES)
    with ScriptedServer(script, model_id="facebook/cwm") as server:
        run(tmp_path / "eval", [task], server, workers=1, attempts=2, test_attempts=1, select="tests",
            backend="ray", address=cluster.address)
    out = tmp_path / "eval"
    record = json.loads((out / "instances" / TASK / "selection.json").read_text())  # written on a node, brought back
    assert record["selection"]["winner"] == 2 and record["selection"]["kept_tests"] == [1]
    assert record["executions"]["base"]["tests"] == {"1": "reproduced"}
    assert (out / "instances" / TASK / "test-attempt-1" / "test_issue.py").read_text() == REPRODUCES
    selected = [json.loads(line) for line in (out / "predictions-selected.jsonl").read_text().splitlines()]
    assert selected == [{"instance_id": TASK, "model_patch": task.patch, "model_name_or_path": "cwm-agent (select tests)"}]
