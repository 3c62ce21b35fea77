"""Test-time scaling end to end: patch episodes and CWM's test-generation episodes from the
scripted model (a different script per attempt), execution-based selection in fresh Docker
sandboxes, grading, the report's pass@1 / pass@k / best@k / majority@k, and re-selection.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cwm_agent import protocol
from cwm_agent.bench import runner as evaluate
from cwm_agent.bench import selection
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.config import Settings
from cwm_agent.models.connect import connect
from cwm_agent.paths import TASKS_DIR
from cwm_agent.testing.scripted_server import ScriptedServer, think

pytestmark = pytest.mark.docker
TASK = "pagekit-exact-multiple-pages"
DONE = "Done.\n</think>\nSummary: done."

REPRODUCES = '''from pagekit import Paginator
try:
    pages = Paginator(total=40, per_page=20).num_pages
except Exception:
    print("Other issues")
else:
    print("Issue resolved" if pages == 2 else "Issue reproduced")
'''
NEVER_RUNS = 'import no_such_module\nprint("Issue resolved")\n'  # "Other issues" at best: dropped at the base
WRONG_AT_BASE = 'print("Issue resolved")\n'  # says resolved on the base: dropped


@pytest.fixture(scope="module")
def task():
    return next(t for t in load_tasks(TASKS_DIR / TASK) if t.instance_id == TASK)


def patch_episode(body: str) -> list[str]:
    return [think("Change it.", "bash", body + " && git diff > /tmp/fix.patch"),
            think("Submit.", "submit", "/tmp/fix.patch"), DONE]


def gold_episode(task) -> list[str]:
    return [think("Fix.", "bash", f"cat > /tmp/fix.patch <<'EOF_PATCH'\n{task.patch}EOF_PATCH"),
            think("Submit.", "submit", "/tmp/fix.patch"), DONE]


def writer_episode(test: str) -> list[str]:
    return [think("Write it.", "bash", f"cat > test_issue.py <<'EOF_TEST'\n{test}EOF_TEST"),
            think("Submit.", "submit", "test_issue.py"), "It prints the verdict.\n</think>\nThe test checks num_pages."]


README = "echo 'See the docs.' >> README.md"
BREAKS = "sed -i 's|return hits // self.per_page + 1|return hits // self.per_page + 2|' pagekit/paginator.py"


def run(tmp_path, task, script, *, attempts, test_attempts, method="tests"):
    with ScriptedServer(script, model_id="facebook/cwm") as server:
        model = connect(base_url=server.base_url)
        settings = Settings(base_url=server.base_url, max_turns=8, command_timeout=60, max_format_errors=2)
        opts = evaluate.EvalOptions(out=tmp_path / "eval", workers=1, attempts=attempts, tasks=str(TASKS_DIR),
                                    test_attempts=test_attempts, select=method, filter=f"^{task.instance_id}$")
        evaluate.run_eval([task], opts, settings, model=model)
        prompts = [body["prompt"] for _, body in server.generation_requests()]
    return evaluate.report(opts.out, config=evaluate.run_config(settings, opts, None)), prompts


def test_generated_tests_pick_the_right_patch_that_the_majority_misses(tmp_path, task):
    script = (patch_episode(README) + gold_episode(task) + patch_episode(README)
              + writer_episode(REPRODUCES) + writer_episode(NEVER_RUNS) + writer_episode(WRONG_AT_BASE))
    data, prompts = run(tmp_path, task, script, attempts=3, test_attempts=3)
    # The test-generation episodes got CWM's USER_TESTGEN prompt.
    testgen = protocol.testgen_prompt(task.problem_statement.strip(), repo_root="/testbed").split("<issue_description>")[0]
    assert sum(testgen in p for p in prompts) == 9 and sum("Solve the following issue" in p for p in prompts) == 9
    scaling = data["test_time_scaling"]
    assert scaling["best@k"]["resolved"] == 1 and scaling["majority@k"]["resolved"] == 0
    assert scaling["pass@k"]["resolved"] == 1 and scaling["pass@1"]["resolved"] == 1 and scaling["pass@1"]["of"] == 3
    record = json.loads((tmp_path / "eval" / "instances" / TASK / "selection.json").read_text())
    chosen = record["selection"]
    assert chosen["winner"] == 2 and chosen["kept_tests"] == [1]  # only the reproducing test is kept
    assert record["executions"]["base"]["tests"] == {"1": "reproduced", "2": "other", "3": "resolved"}
    assert record["executions"]["attempt-2"]["tests"]["1"] == "resolved"
    assert record["executions"]["attempt-1"]["tests"]["1"] == "reproduced"
    # Never the hidden tests: the fail-to-pass tests come with test_patch, which selection never saw.
    text = json.dumps(record)
    assert record["executions"]["base"]["suite"] and not any(t.split("::")[-1] in text for t in task.FAIL_TO_PASS)
    assert scaling["cost"]["selection"]["container_seconds"] > 0
    selected = [json.loads(line) for line in (tmp_path / "eval" / "predictions-selected.jsonl").read_text().splitlines()]
    assert selected[0]["model_patch"] == task.patch
    # Re-selection from the saved executions, in a new process: the same choice; majority differs.
    for method, winner in (("tests", 2), ("majority", 1)):
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "select", str(tmp_path / "eval"),
                               "--select", method, "--json"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["per_task"][0]["winner"] == winner


def test_with_no_useful_generated_test_existing_tests_and_the_majority_decide(tmp_path, task):
    script = (patch_episode(BREAKS) + gold_episode(task) + gold_episode(task)
              + writer_episode(NEVER_RUNS) + writer_episode(WRONG_AT_BASE))
    data, _ = run(tmp_path, task, script, attempts=3, test_attempts=2)
    chosen = json.loads((tmp_path / "eval" / "instances" / TASK / "selection.json").read_text())["selection"]
    assert chosen["kept_tests"] == [] and chosen["winner"] == 2  # the gold patch, twice: votes break the tie
    scores = {row["attempt"]: row["existing_passed"] for row in chosen["table"]}
    assert scores[1] < scores[2] == scores[3] == chosen["base_passing"] > 0  # the breaking patch fails tests
    assert data["test_time_scaling"]["best@k"]["resolved"] == 1


def test_when_no_candidate_is_right_nothing_is_resolved(tmp_path, task):
    script = (patch_episode(README) + ["I give up.\n</think>\nno tool call"] * 2
              + writer_episode(REPRODUCES))
    data, _ = run(tmp_path, task, script, attempts=2, test_attempts=1)
    scaling = data["test_time_scaling"]
    assert scaling["best@k"]["resolved"] == 0 and scaling["pass@k"]["resolved"] == 0
    chosen = json.loads((tmp_path / "eval" / "instances" / TASK / "selection.json").read_text())["selection"]
    assert chosen["winner"] == 1 and "attempt 1" in chosen["reason"]  # the only finished candidate


def test_choose_rules_without_docker():
    """The tie-breaks, on made-up executions: score, then votes, then tokens."""
    def run_(tests, suite):
        return selection.Execution("x", True, suite=suite, tests=tests)

    candidates = [selection.Candidate(1, "diff --git a/x b/x\n+a\n", 500), selection.Candidate(2, "diff --git a/x b/x\n+b\n", 90),
                  selection.Candidate(3, "diff --git a/x b/x\n+b\n", 100)]
    executions = {"base": run_({"1": "reproduced"}, {"t::a": "PASSED", "t::b": "PASSED"}),
                  "attempt-1": run_({"1": "resolved"}, {"t::a": "PASSED", "t::b": "PASSED"}),
                  "attempt-2": run_({"1": "reproduced"}, {"t::a": "PASSED", "t::b": "PASSED"}),
                  "attempt-3": run_({"1": "reproduced"}, {"t::a": "PASSED", "t::b": "PASSED"})}
    assert selection.choose("tests", candidates, executions).winner == 1
    assert selection.choose("majority", candidates).winner == 2  # two votes, then fewer tokens
    assert selection.choose("first", candidates).winner == 1
    executions["attempt-1"] = run_({"1": "resolved"}, {"t::a": "FAILED", "t::b": "FAILED"})
    assert selection.choose("tests", candidates, executions).winner == 2  # 2 > 1: votes, then tokens
    assert selection.verdict("Issue reproduced\nOther issues") == "other"
    assert selection.blinded(load_tasks(TASKS_DIR / TASK)[0]).FAIL_TO_PASS == []


def test_solve_with_attempts_writes_the_selected_patch(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n\n\ndef neg(a):\n    return -a\n")
    (repo / "README.md").write_text("# calc\n")
    (repo / "tests" / "test_calc.py").write_text("from calc import neg\n\n\ndef test_neg():\n    assert neg(2) == -2\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    fix = "sed -i 's/a - b/a + b/' calc.py"
    reproducer = ('from calc import add\nprint("Issue resolved" if add(2, 3) == 5 else "Issue reproduced")\n')
    script = patch_episode(README) + patch_episode(fix) + writer_episode(reproducer)
    with ScriptedServer(script, model_id="facebook/cwm") as server:
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "solve", "--repo", str(repo), "--issue",
                               "add() subtracts", "--base-url", server.base_url, "--out", str(tmp_path / "out"),
                               "--attempts", "2", "--test-attempts", "1", "--json"],
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["winner"] == 2 and result["kept_tests"] == [1] and result["patch_applies"]
    assert "+    return a + b" in (tmp_path / "out" / "patch.diff").read_text()
    table = {c["attempt"]: c for c in result["candidates"]}
    assert table[1]["existing_passed"] == table[2]["existing_passed"] == 1  # tests/test_calc.py::test_neg
    assert (table[1]["generated_resolved"], table[2]["generated_resolved"]) == (0, 1)
    assert (repo / "calc.py").read_text().startswith("def add(a, b):\n    return a - b")  # no --apply
