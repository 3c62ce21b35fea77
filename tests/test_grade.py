"""The grader: log parsing and verdict rules by hand, then real grading runs in containers."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from _leftovers import Leftovers

from cwm_agent.bench import grade
from cwm_agent.bench.grade import (
    APPLY_COMMANDS,
    END_MARKER,
    START_MARKER,
    GradeError,
    GradeReport,
    Prediction,
    edited_test_files,
    eval_script,
    grade_predictions,
    grade_report,
    grade_task,
    judge_log,
    parse_pytest_log,
    prepare_eval_script,
    read_predictions,
    write_predictions,
)
from cwm_agent.paths import TASKS_DIR
from cwm_agent.bench.tasks import Task, TaskError, load_tasks

TASKS = {task.instance_id: task for task in load_tasks(TASKS_DIR)}
# Two tasks whose gold hunks start with context, so a drifted first line needs fuzz.
FUZZY_TASKS = ("pagekit-exact-multiple-pages", "statkit-generator-input")


# --- patches made for the tests: each a real diff of a real checkout ----------------------


def make_patch(task: Task, edit: Callable[[Path], None]) -> str:
    """`git diff` (new files included) of `edit` applied to the task's checkout."""
    with tempfile.TemporaryDirectory(prefix="cwm-test-patch-") as tmp:
        repo = Path(tmp) / "repo"
        task.checkout(repo)
        edit(repo)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        return subprocess.run(["git", "diff", "--cached", "--binary"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout


def noop_patch(task: Task) -> str:
    """A patch that applies and fixes nothing: the tests run and FAIL_TO_PASS still fails."""
    def edit(repo: Path) -> None:
        with (repo / "README.md").open("a") as readme:
            readme.write("\nSee the changelog for what changed.\n")
    return make_patch(task, edit)


def stale_patch(task: Task) -> str:
    """A patch against text the file never had: every command of the chain refuses it."""
    return ("diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
            "@@ -1 +1 @@\n-a line this README never had\n+its replacement\n")


def drifted_patch(task: Task) -> str:
    """The gold patch with the first context line of each hunk changed: plain `git apply`
    refuses it, `patch --fuzz` (which may ignore leading context) takes it."""
    out, hunk_start = [], False
    for line in task.patch.split("\n"):
        if hunk_start and line.startswith(" ") and line.strip():
            line += "  # drifted"
        hunk_start = line.startswith("@@")
        out.append(line)
    return "\n".join(out)


def cheat_patch(task: Task) -> str:
    """Rewrites the test file into a trivially passing one (the eval script resets it)."""
    def edit(repo: Path) -> None:
        for path in task.test_files:
            (repo / path).write_text("def test_nothing():\n    pass\n")
    return make_patch(task, edit)


SPOOF_CONFTEST = '''import os


def pytest_sessionstart(session):
    # Claim every expected test passed, then leave before any test runs.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for test in {tests!r}:
        reporter.write_line("PASSED " + test)
    reporter.flush()
    os._exit(1)
'''


def spoof_patch(task: Task) -> str:
    """A conftest.py that prints fake PASSED lines and exits 1: the anti-spoof rule's case."""
    text = SPOOF_CONFTEST.format(tests=task.FAIL_TO_PASS + task.PASS_TO_PASS)
    return make_patch(task, lambda repo: (repo / "conftest.py").write_text(text))


def pyc_noise_patch(task: Task) -> str:
    """The gold patch as CWM submits it after running pytest where .pyc files are not ignored:
    `git add -A && git diff --cached`, the .pyc files as "Binary files ... differ", no data."""
    def edit(repo: Path) -> None:
        subprocess.run(["git", "apply", "-"], input=task.patch, text=True, cwd=repo, check=True)
        (repo / ".gitignore").unlink()
        subprocess.run(["git", "rm", "-q", "--cached", ".gitignore"], cwd=repo, check=True)
        subprocess.run(["python3", "-m", "compileall", "-q", "."], cwd=repo, check=True)
    with tempfile.TemporaryDirectory(prefix="cwm-test-patch-") as tmp:
        repo = Path(tmp) / "repo"
        task.checkout(repo)
        edit(repo)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        return subprocess.run(["git", "diff", "--cached"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout


def hang_patch(task: Task) -> str:
    return make_patch(task, lambda repo: (repo / "conftest.py").write_text("import time\ntime.sleep(600)\n"))


# --- parse_pytest_log ----------------------------------------------------------------------


def log_of(body: str, *, exit_code: int | None = 0, before: str = "", after: str = "") -> str:
    exit_line = "" if exit_code is None else f">>>>> Test Exit Code: {exit_code}\n"
    return (f"{before}+ : '{START_MARKER}'\n+ python3 -m pytest -rA\n{body}\n"
            f"+ SWEBENCH_TEST_EXIT_CODE={exit_code}\n+ : '{END_MARKER}'\n{exit_line}{after}")


def test_parse_reads_every_status_between_the_markers():
    body = "\n".join([
        "tests/test_a.py ..F.sxX                                    [100%]",
        "=========================== short test summary info ============================",
        "PASSED tests/test_a.py::test_one",
        "FAILED tests/test_a.py::test_two - AssertionError: assert 1 == 2",
        "SKIPPED [1] tests/test_a.py:12: needs a network",
        "SKIPPED tests/test_a.py::test_three",
        "ERROR tests/test_a.py::test_four - fixture 'db' not found",
        "XFAIL tests/test_a.py::test_five - known bug",
        "XPASS tests/test_a.py::test_six unexpectedly fine",
        "PASSED tests/test_a.py::test_param[a-b]",
        "PASSED",  # a bare word is no result
    ])
    log = log_of(body, before="PASSED tests/test_a.py::test_before\n",
                 after="FAILED tests/test_a.py::test_after\n")
    assert parse_pytest_log(log) == {
        "tests/test_a.py::test_one": "PASSED",
        "tests/test_a.py::test_two": "FAILED",
        "tests/test_a.py::test_three": "SKIPPED",
        "tests/test_a.py::test_four": "ERROR",
        "tests/test_a.py::test_five": "XFAIL",
        "tests/test_a.py::test_six": "XPASS",
        "tests/test_a.py::test_param[a-b]": "PASSED",
    }


def test_parse_needs_both_markers_and_takes_the_first_region():
    assert parse_pytest_log("PASSED t::a\nFAILED t::b\n") == {}
    assert parse_pytest_log(f"+ : '{START_MARKER}'\nPASSED t::a\n") == {}
    assert parse_pytest_log(f"PASSED t::a\n+ : '{END_MARKER}'\n") == {}
    log = (f"{START_MARKER}\nPASSED t::a\nFAILED t::a\n{END_MARKER}\n"
           f"{START_MARKER}\nPASSED t::b\n{END_MARKER}\n")
    assert parse_pytest_log(log) == {"t::a": "FAILED"}  # the last line about a test wins


# --- judge_log: SWE-bench's verdict rules ----------------------------------------------------


def test_resolved_only_when_every_expected_test_passes():
    log = log_of("PASSED t::f1\nXFAIL t::f2\nPASSED t::p1\nSKIPPED t::p2\nFAILED t::other")
    verdict = judge_log(log, ["t::f1", "t::f2"], ["t::p1", "t::p2"])
    assert verdict.status == "resolved"
    assert verdict.fail_to_pass.success == ["t::f1", "t::f2"]
    assert verdict.pass_to_pass.success == ["t::p1", "t::p2"]
    assert verdict.exit_code == 0


def test_fail_to_pass_needs_passed_or_xfail():
    log = log_of("SKIPPED t::f1\nXPASS t::f2\nFAILED t::f3\nPASSED t::p1", exit_code=1)
    verdict = judge_log(log, ["t::f1", "t::f2", "t::f3", "t::missing"], ["t::p1"])
    assert verdict.status == "unresolved"
    assert verdict.fail_to_pass.failure == ["t::f1", "t::f2", "t::f3", "t::missing"]
    assert verdict.pass_to_pass.success == ["t::p1"]
    assert "4/4 FAIL_TO_PASS" in verdict.detail


def test_pass_to_pass_broken_is_unresolved():
    log = log_of("PASSED t::f1\nERROR t::p1\nXPASS t::p2", exit_code=1)
    verdict = judge_log(log, ["t::f1"], ["t::p1", "t::p2", "t::p3"])
    assert verdict.status == "unresolved"
    assert verdict.pass_to_pass.failure == ["t::p1", "t::p2", "t::p3"]
    assert "3/3 PASS_TO_PASS broken" in verdict.detail


def test_anti_spoof_nonzero_exit_without_a_recorded_failure_is_invalid():
    spoofed = log_of("PASSED t::f1\nPASSED t::p1", exit_code=1)
    verdict = judge_log(spoofed, ["t::f1"], ["t::p1"])
    assert verdict.status == "invalid"
    assert "exited 1" in verdict.detail
    # A failure in the log explains the exit status: an ordinary unresolved run.
    honest = log_of("FAILED t::f1\nPASSED t::p1", exit_code=1)
    assert judge_log(honest, ["t::f1"], ["t::p1"]).status == "unresolved"
    # Scripts that do not record the exit status are judged on the log alone.
    assert judge_log(log_of("PASSED t::f1", exit_code=None), ["t::f1"], []).status == "resolved"


def test_xpass_lines_are_invisible_to_grading_as_in_swebench():
    # SWE-bench's parser skips XPASS lines, so the SKIPPED line before still stands.
    verdict = judge_log(log_of("SKIPPED t::p1\nXPASS t::p1\nPASSED t::f1"), ["t::f1"], ["t::p1"])
    assert verdict.tests["t::p1"] == "XPASS"  # the report shows the last line
    assert verdict.status == "resolved" and verdict.pass_to_pass.success == ["t::p1"]


@pytest.mark.parametrize(("log", "reason"), [
    ("PASSED t::f1\n", "markers are missing"),
    (log_of("collected 0 items"), "no test results"),
    (log_of("XPASS t::f1"), "no test results"),
    (log_of("PASSED t::f1") + ">>>>> Tests Timed Out\n", "Tests Timed Out"),
])
def test_invalid_logs(log, reason):
    verdict = judge_log(log, ["t::f1"], [])
    assert verdict.status == "invalid"
    assert reason in verdict.detail


def test_truncated_parametrized_ids_match_by_prefix_when_unambiguous():
    log = log_of("PASSED t::test_x[log(photon)]\nPASSED t::test_x[log(photon2)]\nFAILED t::test_y[a]\n"
                 "PASSED t::test_y[ab]", exit_code=1)
    verdict = judge_log(log, ["t::test_x[log(photon", "t::test_y[a"], [])
    assert verdict.fail_to_pass.success == ["t::test_x[log(photon"]
    assert verdict.fail_to_pass.failure == ["t::test_y[a"]  # the candidates disagree


# --- the eval script -------------------------------------------------------------------------


def test_eval_script_resets_applies_and_runs_between_markers():
    task = TASKS["demo-slugify-unicode"]
    script = eval_script(task)
    lines = script.splitlines()
    assert lines[:3] == ["#!/bin/bash", "set -uxo pipefail", "cd /testbed"]
    reset = f"git checkout {task.base_commit} -- tests/test_slugify.py"
    assert lines[3] == reset and lines[-1] == reset
    start = lines.index(f": '{START_MARKER}'")
    assert lines[start + 1:start + 3] == [task.test_invocation, f": '{END_MARKER}'"]
    assert task.test_patch in script
    assert eval_script(task) == script  # the same bytes every time: the export ships them


def test_prepare_eval_script_records_the_exit_status_as_swebench_does():
    script = prepare_eval_script(eval_script(TASKS["demo-slugify-unicode"]))
    lines = script.splitlines()
    end = lines.index(f": '{END_MARKER}'")
    assert lines[end - 1] == "SWEBENCH_TEST_EXIT_CODE=$?"
    assert lines[end + 1] == 'echo ">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE"'
    assert lines[:2] == ["#!/bin/bash", "set -uxo pipefail"]
    assert lines.count("set -uxo pipefail") == 1
    bare = prepare_eval_script("cd /x\n: '>>>>> Start Test Output'\nrun\n: '>>>>> End Test Output'\n")
    assert bare.startswith("#!/bin/bash\nset -uxo pipefail\ncd /x\n")


def test_eval_script_removes_files_the_test_patch_creates():
    base = TASKS["demo-slugify-unicode"]
    new_file = ("diff --git a/tests/test_new.py b/tests/test_new.py\nnew file mode 100644\n"
                "index 0000000..e69de29\n--- /dev/null\n+++ b/tests/test_new.py\n@@ -0,0 +1 @@\n+x = 1\n")
    task = Task(base.instance_id, base.repo, base.base_commit, "issue", test_patch=base.test_patch + new_file)
    script = eval_script(task)
    assert "rm -f -- tests/test_new.py" in script
    assert "-- tests/test_slugify.py\n" in script


def test_eval_script_resets_and_removes_test_files_with_spaced_and_quoted_names(tmp_path):
    """Real git output: a spaced name comes as it is, a non-ASCII one quoted with C escapes;
    the script names both as the files they are."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run = lambda *args: subprocess.run(["git", "-c", "core.quotePath=true", *args], cwd=repo,  # noqa: E731
                                       capture_output=True, text=True, check=True).stdout
    run("init", "-q")
    (repo / "tests").mkdir()
    (repo / "tests" / "test old one.py").write_text("x = 1\n")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base")
    (repo / "tests" / "test old one.py").write_text("x = 2\n")
    (repo / "tests" / "test_caf\u00e9.py").write_text("y = 1\n")
    run("add", "-A")
    test_patch = run("diff", "--cached")
    assert 'diff --git "a/tests/test_caf\\303\\251.py" "b/tests/test_caf\\303\\251.py"' in test_patch
    base = TASKS["demo-slugify-unicode"]
    task = Task(base.instance_id, base.repo, base.base_commit, "issue", test_patch=test_patch)
    assert task.test_files == ["tests/test old one.py", "tests/test_caf\u00e9.py"]
    script = eval_script(task)
    assert f"git checkout {base.base_commit} -- 'tests/test old one.py'\n" in script
    assert "rm -f -- 'tests/test_caf\u00e9.py'\n" in script


def test_eval_script_refuses_a_multiline_test_command():
    base = TASKS["demo-slugify-unicode"]
    task = Task(base.instance_id, base.repo, base.base_commit, "issue", test_patch=base.test_patch,
                test_command="python3 -m pytest\nrm -rf /")
    with pytest.raises(TaskError, match="one line"):
        eval_script(task)


# --- predictions and reports -----------------------------------------------------------------


def test_read_predictions_jsonl_json_and_dict(tmp_path):
    rows = [{"instance_id": "a", "model_patch": "diff", "model_name_or_path": "m"},
            {"instance_id": "b", "model_patch": None}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    expected = [Prediction("a", "diff", "m"), Prediction("b", None, "cwm-agent")]
    assert read_predictions(jsonl) == expected
    as_list = tmp_path / "p.json"
    as_list.write_text(json.dumps(rows))
    assert read_predictions(as_list) == expected
    as_dict = tmp_path / "d.json"
    as_dict.write_text(json.dumps({r["instance_id"]: r for r in rows}))
    assert read_predictions(as_dict) == expected
    again = write_predictions(expected, tmp_path / "again.jsonl")
    assert read_predictions(again) == expected


@pytest.mark.parametrize(("text", "message"), [
    ('{"instance_id": "a", "model_patch": ""}\n{"instance_id": "a", "model_patch": ""}\n', "appears twice"),
    ('{"instance_id": "a"\n', "p.jsonl:1: invalid JSON"),
    ('{"model_patch": "x"}\n', "string instance_id"),
    ('{"instance_id": "a", "model_patch": 3}\n', "model_patch must be"),
    ("\n", "no predictions"),
])
def test_read_predictions_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(GradeError, match=message):
        read_predictions(path)


def test_predictions_for_unknown_tasks_are_refused(tmp_path):
    path = write_predictions([Prediction("no-such-task", "diff")], tmp_path / "p.jsonl")
    with pytest.raises(GradeError, match="no-such-task"):
        grade_predictions(path, list(TASKS.values()))


class NoDocker:
    """A stand-in client that fails on first use: proves a code path never reaches Docker."""

    def __getattr__(self, name):
        raise AssertionError(f"Docker was used ({name})")


def test_empty_patch_is_unresolved_without_a_container():
    task = TASKS["demo-slugify-unicode"]
    for patch in ("", None):
        result = grade_task(task, patch, client=NoDocker())
        assert (result.status, result.resolved, result.patch_applied_with) == ("unresolved", False, None)
        assert result.swebench_bucket == "empty_patch"
        assert any("empty patch" in w for w in result.warnings)


def test_edits_to_test_files_are_found():
    task = TASKS["demo-slugify-unicode"]
    assert edited_test_files(task, task.patch) == []
    assert edited_test_files(task, cheat_patch(task)) == ["tests/test_slugify.py"]
    assert edited_test_files(task, spoof_patch(task)) == ["conftest.py"]


def test_report_counts_and_rows():
    results = [
        grade.GradeResult("a", True, "resolved", "git apply --verbose", seconds=1.0),
        grade.GradeResult("b", False, "unresolved", "git apply --verbose", detail="1/3 FAIL_TO_PASS not passing",
                          fail_to_pass=grade.Breakdown(["t::1", "t::2"], ["t::3"]),
                          pass_to_pass=grade.Breakdown(["t::4"])),
        grade.GradeResult("c", False, "patch_failed", warnings=["patch edits test files: tests/t.py"]),
    ]
    report = GradeReport(results, total_tasks=10)
    data = report.to_dict()
    assert (data["submitted"], data["resolved"], data["rate"]) == (3, 1, 0.3333)
    assert data["counts"] == {"resolved": 1, "unresolved": 1, "patch_failed": 1, "invalid": 0, "error": 0}
    assert data["resolved_ids"] == ["a"]
    assert data["warnings"] == ["c: patch edits test files: tests/t.py"]
    assert [row["status"] for row in data["rows"]] == ["resolved", "unresolved", "patch_failed"]
    assert (data["rows"][1]["fail_to_pass"], data["rows"][1]["pass_to_pass"]) == ("2/3", "1/1")
    assert data["results"][1]["fail_to_pass"] == {"success": ["t::1", "t::2"], "failure": ["t::3"]}
    assert "log" not in data["results"][0]
    assert [r.swebench_bucket for r in results] == ["resolved", "unresolved", "error"]


# --- real grading runs -----------------------------------------------------------------------


def grading_containers(client) -> list:
    """The grading containers of this test process (other processes may be grading too)."""
    from cwm_agent.sandbox.docker import our_containers

    return our_containers(client, "grade", mine=True)


@pytest.fixture
def no_leftovers(docker_client, sandbox_image):
    leftovers = Leftovers(docker_client, "grade")
    yield docker_client
    assert leftovers.describe() == [], "grading left containers behind"


@pytest.mark.docker
@pytest.mark.parametrize("task_id", ["demo-slugify-unicode", "sizefmt-parse-binary-units", "tinybus-handlers-leak"])
def test_gold_patch_resolves(no_leftovers, task_id):
    task = TASKS[task_id]
    result = grade_task(task, task.patch, client=no_leftovers)
    assert result.status == "resolved", result.detail + "\n" + result.log
    assert result.resolved and result.patch_applied_with == "git apply --verbose"
    assert result.fail_to_pass.success == task.FAIL_TO_PASS and result.fail_to_pass.failure == []
    assert result.pass_to_pass.success == task.PASS_TO_PASS and result.pass_to_pass.failure == []
    assert {result.tests[t] for t in task.FAIL_TO_PASS + task.PASS_TO_PASS} == {"PASSED"}
    assert result.test_exit_code == 0 and result.warnings == []
    assert START_MARKER in result.log and END_MARKER in result.log


@pytest.mark.docker
@pytest.mark.parametrize("task_id", ["demo-slugify-unicode", "whenparse-utc-offset"])
def test_patch_that_fixes_nothing_is_unresolved(no_leftovers, task_id):
    task = TASKS[task_id]
    result = grade_task(task, noop_patch(task), client=no_leftovers)
    assert (result.status, result.resolved) == ("unresolved", False), result.log
    assert result.fail_to_pass.failure == task.FAIL_TO_PASS
    assert result.pass_to_pass.failure == []
    assert {result.tests[t] for t in task.FAIL_TO_PASS} == {"FAILED"}
    assert result.test_exit_code == 1


@pytest.mark.docker
def test_stale_patch_fails_every_apply_command(no_leftovers):
    task = TASKS["envconf-getattr-default"]
    result = grade_task(task, stale_patch(task), client=no_leftovers)
    assert (result.status, result.resolved, result.patch_applied_with) == ("patch_failed", False, None)
    assert result.swebench_bucket == "error"
    for command in APPLY_COMMANDS:
        assert f"$ {command} /tmp/patch.diff  # exit " in result.apply_log
    assert result.log == "" and result.tests == {}


@pytest.mark.docker
def test_whitespace_is_not_an_empty_patch(no_leftovers):
    # SWE-bench skips only "" and null; a patch of blank lines goes through the chain and fails.
    result = grade_task(TASKS["envconf-getattr-default"], "\n\n", client=no_leftovers)
    assert (result.status, result.swebench_bucket) == ("patch_failed", "error")


@pytest.mark.docker
@pytest.mark.parametrize("task_id", FUZZY_TASKS)
def test_fuzz_fallback_takes_what_git_apply_refuses(no_leftovers, task_id):
    task = TASKS[task_id]
    patch = drifted_patch(task)
    assert patch != task.patch
    result = grade_task(task, patch, client=no_leftovers)
    assert result.patch_applied_with == "patch --batch --forward --fuzz=5 -p1 -i", result.apply_log
    assert "$ git apply --verbose /tmp/patch.diff  # exit 1" in result.apply_log
    assert "with fuzz" in result.apply_log
    assert result.status == "resolved", result.detail


@pytest.mark.docker
def test_binary_files_without_data_are_passed_over_as_the_official_chain_does(no_leftovers):
    from cwm_agent.sandbox import patch as patch_mod

    task = TASKS["demo-slugify-unicode"]
    noisy = pyc_noise_patch(task)
    skipped = patch_mod.dataless_binary_files(noisy)
    assert skipped and all("__pycache__/" in path and path.endswith(".pyc") for path in skipped)
    result = grade_task(task, noisy, client=no_leftovers)
    assert result.status == "resolved", result.detail + "\n" + result.apply_log
    assert result.patch_applied_with == "patch --batch --forward --fuzz=5 -p1 -i"
    assert "cannot apply binary patch" in result.apply_log
    assert any(w.startswith("binary files with no data") and skipped[0] in w for w in result.warnings)
    # one chain: the grader's commands are the ones solve's check and --apply run
    assert APPLY_COMMANDS is patch_mod.APPLY_COMMANDS


@pytest.mark.docker
def test_patch_editing_test_files_is_graded_as_it_is_with_a_warning(no_leftovers):
    task = TASKS["cartcalc-free-shipping-total"]
    cheat = grade_task(task, cheat_patch(task), client=no_leftovers)
    # The eval script resets the test patch's files, so the rewritten tests never run.
    assert cheat.status == "unresolved" and cheat.fail_to_pass.failure == task.FAIL_TO_PASS
    assert cheat.warnings and cheat.warnings[0].startswith("patch edits test files: tests/test_cart.py")
    both = grade_task(task, task.patch + cheat_patch(task), client=no_leftovers)
    assert both.status == "resolved" and both.patch_applied_with == "git apply --verbose"
    assert both.warnings[0].startswith("patch edits test files: tests/test_cart.py")


@pytest.mark.docker
def test_spoofed_passes_with_a_failing_exit_are_invalid(no_leftovers):
    task = TASKS["pagekit-exact-multiple-pages"]
    result = grade_task(task, spoof_patch(task), client=no_leftovers)
    # The fake lines parse as a full pass; only the exit status gives them away.
    assert {result.tests.get(t) for t in task.FAIL_TO_PASS + task.PASS_TO_PASS} == {"PASSED"}
    assert result.test_exit_code == 1
    assert (result.status, result.resolved) == ("invalid", False)
    assert result.swebench_bucket == "unresolved"
    assert result.warnings[0].startswith("patch edits test files: conftest.py")


@pytest.mark.docker
def test_tests_past_the_timeout_are_an_error_and_the_container_goes(no_leftovers):
    task = TASKS["statkit-generator-input"]
    result = grade_task(task, hang_patch(task), client=no_leftovers, timeout=3)
    assert (result.status, result.resolved) == ("error", False)
    assert "timed out after 3 s" in result.detail
    assert result.seconds < 60


@pytest.mark.docker
def test_grade_predictions_in_parallel_keeps_the_file_order(no_leftovers, tmp_path):
    gold, noop = TASKS["demo-slugify-unicode"], TASKS["moneyfmt-half-cent-rounding"]
    empty = TASKS["statkit-generator-input"]
    path = write_predictions([
        Prediction(gold.instance_id, gold.patch, "m"),
        Prediction(noop.instance_id, noop_patch(noop), "m"),
        Prediction(empty.instance_id, "", "m"),
    ], tmp_path / "preds.jsonl")
    seen: list[str] = []
    report = grade_report(path, TASKS_DIR, workers=2, on_result=lambda r: seen.append(r.instance_id))
    assert sorted(seen) == sorted([gold.instance_id, noop.instance_id, empty.instance_id])
    assert [r.instance_id for r in report.results] == [gold.instance_id, noop.instance_id, empty.instance_id]
    assert [r.status for r in report.results] == ["resolved", "unresolved", "unresolved"]
    assert (report.total_tasks, report.submitted, report.resolved) == (len(TASKS), 3, 1)
    assert all(r.model_name_or_path == "m" for r in report.results)
    written = json.loads(report.write(tmp_path / "report.json", logs_dir=tmp_path / "logs").read_text())
    assert written["resolved_ids"] == [gold.instance_id]
    assert START_MARKER in (tmp_path / "logs" / f"{gold.instance_id}.log").read_text()


def test_swebench_row_has_what_the_official_harness_reads():
    from cwm_agent.bench.swebench_export import SWEBENCH_COLUMNS, swebench_row, task_image_name

    task = TASKS["demo-slugify-unicode"]
    row = swebench_row(task, "img:1")
    assert list(row) == [*SWEBENCH_COLUMNS, "image", "eval_script", "log_parser", "eval_type"]
    assert (row["image"], row["log_parser"], row["eval_type"]) == ("img:1", "parse_log_pytest", "pass_and_fail")
    assert row["eval_script"] == eval_script(task) and row["FAIL_TO_PASS"] == task.FAIL_TO_PASS
    json.dumps(row)  # the dataset is JSON
    name = task_image_name(task, "sha256:aaa")
    assert name.startswith("cwm-agent-task-demo-slugify-unicode:")
    assert name == task_image_name(task, "sha256:aaa") != task_image_name(task, "sha256:bbb")


@pytest.mark.docker
def test_exported_row_grades_in_its_own_image(no_leftovers, sandbox_image, tmp_path):
    """A SWE-bench row (image + eval_script, no local source) goes the official way."""
    from cwm_agent.bench.swebench_export import export_swebench, remove_task_images

    task = TASKS["logscrub-uppercase-secrets"]
    remove_task_images(no_leftovers, [task.instance_id])  # built afresh here
    dataset = export_swebench([task], tmp_path, client=no_leftovers, base_image=sandbox_image)
    (row,) = load_tasks(dataset)
    assert no_leftovers.images.get(row.image).attrs["Config"]["StopSignal"] == "SIGKILL"
    assert row.source is None and row.image.startswith("cwm-agent-task-logscrub-uppercase-secrets:")
    assert row.eval_script == eval_script(task)
    gold = grade_task(row, row.patch, client=no_leftovers)
    assert gold.status == "resolved", gold.detail
    assert gold.warnings == []
    noop = grade_task(row, noop_patch(task), client=no_leftovers)
    assert noop.status == "unresolved" and noop.fail_to_pass.failure == task.FAIL_TO_PASS
