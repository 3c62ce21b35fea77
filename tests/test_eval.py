"""Batch evaluation end to end: real containers, real grading, the scripted model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _leftovers import Leftovers

from cwm_agent import protocol

from cwm_agent.bench import runner as evaluate
from cwm_agent.config import Settings
from cwm_agent.models.connect import connect
from cwm_agent.paths import TASKS_DIR
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.testing.scripted_server import Failure, ScriptedServer

pytestmark = pytest.mark.docker
SOLVED, FLAILS, BROKEN = "demo-slugify-unicode", "pagekit-exact-multiple-pages", "tinybus-handlers-leak"


def act(tool: str, body: str) -> str:
    return "Thinking.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))


def scripted_model(tasks, *, broken_down: bool):
    """Replies chosen by which task the prompt is about and how many turns it has had."""
    gold = {t.instance_id: t.patch for t in tasks}
    statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}

    def reply(request):
        prompt = request["prompt"]
        task = next(i for i, s in statements.items() if s in prompt)
        turn = prompt.count("<|start_header_id|>assistant")
        if task == BROKEN and broken_down:
            return Failure(503, "the GPU box is rebooting")
        if task == FLAILS:
            return "I am not sure.\n</think>\nno tool"
        return [act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{gold[task]}EOF_PATCH"), act("submit", "fix.patch"),
                "Done.\n</think>\nSummary: applied the fix."][min(turn - 1, 2)]
    return reply


def run(tmp_path, tasks, server, **opts):
    model = connect(base_url=server.base_url, model=None, api_key=None, format=None, retries=1)
    settings = Settings(base_url=server.base_url, max_turns=6, max_format_errors=2, command_timeout=60)
    options = evaluate.EvalOptions(out=tmp_path / "eval", workers=2, filter=f"^({SOLVED}|{FLAILS}|{BROKEN})$", **opts)
    return evaluate.run_eval(tasks, options, settings, model=model)


def test_eval_grades_resumes_and_retries_only_infrastructure_errors(tmp_path, docker_client, sandbox_image):
    leftovers = Leftovers(docker_client)
    tasks = load_tasks(TASKS_DIR)
    with ScriptedServer([scripted_model(tasks, broken_down=True)] * 40) as server:
        results = run(tmp_path, tasks, server)
    by_id = {r.instance_id: r for r in results}
    assert set(by_id) == {SOLVED, FLAILS, BROKEN}
    assert by_id[SOLVED].exit == "submitted" and by_id[SOLVED].resolved is True
    assert by_id[FLAILS].exit == "format_errors" and by_id[FLAILS].resolved is False
    assert by_id[FLAILS].grade_status == "unfinished"  # a limit ended it: not graded
    assert by_id[BROKEN].exit == "model_error" and by_id[BROKEN].infrastructure and by_id[BROKEN].resolved is None

    out = tmp_path / "eval"
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["instance_id"] for p in predictions} == {SOLVED, FLAILS}  # infrastructure errors are not predictions
    assert all(set(p) == {"instance_id", "model_patch", "model_name_or_path"} for p in predictions)
    assert (out / "instances" / SOLVED / "attempt-1" / "trajectory.json").exists()
    report = evaluate.report(out)
    assert (report["resolved"], report["scored"], report["infrastructure_errors"]) == (1, 2, 1)
    assert report["resolved_rate"] == 0.5 and 0 < report["resolved_rate_ci95"][0] < 0.5 < report["resolved_rate_ci95"][1]

    # resumed: nothing finished runs again
    with ScriptedServer([]) as idle:
        assert run(tmp_path, tasks, idle) == []
        assert idle.generation_requests() == []
    # --retry-errors: exactly the infrastructure failure runs again, now with a healthy server
    with ScriptedServer([scripted_model(tasks, broken_down=False)] * 10) as server:
        again = run(tmp_path, tasks, server, retry_errors=True)
    assert [r.instance_id for r in again] == [BROKEN]
    assert again[0].exit == "submitted" and again[0].resolved is True
    report = evaluate.report(out)
    assert (report["resolved"], report["scored"], report["infrastructure_errors"]) == (2, 3, 0)
    # none of the containers these runs started (sandboxes, graders) is left
    assert leftovers.describe() == []


def test_the_leak_check_sees_a_container_an_eval_leaves(docker_client, sandbox_image):
    """The check above can fail: a sandbox started as the runner starts one (its run id) and
    left open is reported; once closed, it is not."""
    from cwm_agent.sandbox.docker import DockerSandbox

    leftovers = Leftovers(docker_client)
    sandbox = DockerSandbox(sandbox_image, run_id=f"eval-{SOLVED}-1", client=docker_client)
    try:
        assert [c.id for c in leftovers.left()] == [sandbox.container_id]
        (described,) = leftovers.describe()
        assert sandbox.container_id.startswith(described.split()[0])
        assert described.endswith(f"(cwm-agent=eval-{SOLVED}-1, running)")
        assert Leftovers(docker_client).left() == []  # made after it: not this check's business
    finally:
        sandbox.close()
    assert leftovers.left() == []


def test_eval_cli_prints_the_report(tmp_path, sandbox_image):
    tasks = load_tasks(TASKS_DIR)
    with ScriptedServer([scripted_model(tasks, broken_down=False)] * 10) as server:
        out = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", str(TASKS_DIR), "--filter", f"^{SOLVED}$",
                              "--base-url", server.base_url, "--out", str(tmp_path / "e"), "--max-turns", "5"],
                             capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "1/1 = 100.0%" in out.stdout
    assert json.loads((tmp_path / "e" / "report.json").read_text())["resolved"] == 1


def submits_then_runs_out_of_turns(tasks):
    """Writes the gold patch, submits it, then keeps working until the turn limit ends the episode."""
    gold = {t.instance_id: t.patch for t in tasks}

    def reply(request):
        turn = request["prompt"].count("<|start_header_id|>assistant")
        return [act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{gold[SOLVED]}EOF_PATCH"), act("submit", "fix.patch"),
                act("bash", "echo one more check")][min(turn - 1, 2)]
    return reply


@pytest.mark.parametrize("grade_unfinished", [False, True], ids=["cwm-rule", "grade-unfinished"])
def test_an_episode_the_turn_limit_ended_is_graded_only_with_grade_unfinished(tmp_path, docker_client, sandbox_image,
                                                                              grade_unfinished):
    tasks = load_tasks(TASKS_DIR)
    gold = next(t.patch for t in tasks if t.instance_id == SOLVED)
    out = tmp_path / "eval"
    # max_turns 3: replies 1 and 2 write and submit the gold patch, reply 3 meets the turn limit
    with ScriptedServer([submits_then_runs_out_of_turns(tasks)] * 10) as server:
        model = connect(base_url=server.base_url, model=None, api_key=None, format=None, retries=1)
        settings = Settings(base_url=server.base_url, max_turns=3, command_timeout=60,
                            grade_unfinished=grade_unfinished)
        [result] = evaluate.run_eval(tasks, evaluate.EvalOptions(out=out, filter=f"^{SOLVED}$"), settings, model=model)
    assert (result.exit, result.finished, result.infrastructure) == ("turn_limit", False, False)
    assert result.patch.strip() == gold.strip()  # results.jsonl keeps what it submitted
    [prediction] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    report = evaluate.report(out, grade_unfinished=grade_unfinished)
    assert json.loads((out / "report.json").read_text())["grade_unfinished"] is grade_unfinished
    assert (report["scored"], report["unfinished"], report["unfinished_with_patch"]) == (1, 1, 1)
    attempt = out / "instances" / SOLVED / "attempt-1"
    assert json.loads((attempt / "trajectory.json").read_text())["config"]["grade_unfinished"] is grade_unfinished
    if grade_unfinished:  # as harnesses that submit on exit: the last patch is the answer
        assert (result.resolved, result.grade_status) == (True, "resolved")
        assert prediction["model_patch"] == result.patch
        assert report["resolved"] == 1 and report["scoring_rule"] == evaluate.GRADE_UNFINISHED
    else:  # CWM's rule: failed, whatever it submitted; the official harness sees an empty patch
        assert (result.resolved, result.grade_status) == (False, "unfinished")
        assert not (attempt / "log.txt").exists()  # never graded
        assert prediction == {"instance_id": SOLVED, "model_patch": "", "model_name_or_path": model.name}
        assert report["resolved"] == 0 and report["resolved_rate"] == 0.0
        assert report["scoring_rule"] == evaluate.FINISHED_ONLY
        assert report["instances"][0]["graded"] is False and report["instances"][0]["finished"] is False


def test_eval_cli_never_ends_an_episode_on_format_errors_and_records_its_rule(tmp_path, sandbox_image):
    tasks = load_tasks(TASKS_DIR)
    out = tmp_path / "e"
    with ScriptedServer([scripted_model(tasks, broken_down=False)] * 10) as server:
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", str(TASKS_DIR), "--filter", f"^{FLAILS}$",
                               "--base-url", server.base_url, "--out", str(out), "--max-turns", "8",
                               "--grade-unfinished"],
                              capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    trajectory = json.loads((out / "instances" / FLAILS / "attempt-1" / "trajectory.json").read_text())
    # every reply is malformed: eval's default (0) lets them cost a turn each, 7 in a row (solve
    # would stop at 5), until reply 8 meets the turn limit
    assert trajectory["exit"] == "turn_limit" and trajectory["config"]["max_format_errors"] == 0
    assert sum(bool(step["format_error"]) for step in trajectory["steps"]) == 7
    report = json.loads((out / "report.json").read_text())
    assert report["grade_unfinished"] is True and report["scoring_rule"] == evaluate.GRADE_UNFINISHED
    assert "grade" in done.stdout and "submit on exit" in done.stdout  # the table shows the rule


def test_wilson_interval_is_sane():
    assert evaluate.wilson_interval(0, 0) == (0.0, 0.0)
    low, high = evaluate.wilson_interval(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35
    low, high = evaluate.wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 0.8


def test_select_filters_shuffles_and_slices():
    tasks = load_tasks(TASKS_DIR)
    opts = evaluate.EvalOptions(out=None, filter="^(demo|page|tiny)", slice="1:")
    assert [t.instance_id for t in evaluate.select(tasks, opts)] == [
        "pagekit-exact-multiple-pages", "tinybus-handlers-leak"]
    shuffled = evaluate.select(tasks, evaluate.EvalOptions(out=None, shuffle=3))
    assert sorted(t.instance_id for t in shuffled) == sorted(t.instance_id for t in tasks)
    assert shuffled == evaluate.select(tasks, evaluate.EvalOptions(out=None, shuffle=3))
