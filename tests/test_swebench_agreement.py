"""Agreement with the official SWE-bench harness (PyPI `swebench` 5.0.2), offline.

The bundled tasks are exported as a SWE-bench 5 dataset (per-task local images,
our eval script); the same predictions are graded by
`python -m swebench.harness.run_evaluation` (in its own venv, made by
scripts/swebench-venv.sh) and by our grader, and every instance must land in the
same bucket of the official report (resolved, unresolved, error, empty patch),
with the same FAIL_TO_PASS / PASS_TO_PASS breakdown where tests ran.

Prediction sets, one official run each (an instance may appear once per run):
gold for every task, empty for every task, a stale patch for every task (blank
lines for one), and a mixed set (a patch that fixes nothing, a drifted gold
patch that only `patch --fuzz` takes, spoofed PASSED lines with a failing exit,
a rewrite of the test file, the gold patch plus that rewrite), then one hanging
run for the timeout. Last, the verdict rules alone: `judge_log` against the
official `get_eval_report` on hundreds of made-up logs. The official harness
takes 1-2 s an instance here because the task images stop on SIGKILL (see
cwm_agent/swebench_export.py); about 17 s without.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from _ci import unavailable
from test_grade import (
    FUZZY_TASKS,
    cheat_patch,
    drifted_patch,
    grading_containers,
    hang_patch,
    noop_patch,
    spoof_patch,
    stale_patch,
)

from cwm_agent.bench.grade import (
    END_MARKER,
    START_MARKER,
    GradeResult,
    Prediction,
    eval_script,
    grade_predictions,
    judge_log,
    prepare_eval_script,
    write_predictions,
)
from cwm_agent.paths import PROJECT_ROOT, TASKS_DIR
from cwm_agent.bench.swebench_export import export_swebench
from cwm_agent.bench.tasks import Task, load_tasks

pytestmark = [pytest.mark.slow, pytest.mark.docker]

MODEL = "agreement-check"
HANG_TIMEOUT = 8  # seconds, for the one run where the tests never finish


@pytest.fixture(scope="module")
def swebench_python() -> str:
    """The official harness's python; under CI a failure to set it up fails the tier."""
    problem = None
    if shutil.which("docker") is None:
        problem = "the docker CLI is not on PATH (the official harness shells out to it)"
    else:
        try:
            done = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "swebench-venv.sh")],
                                  capture_output=True, text=True, timeout=1200)
            if done.returncode == 0:
                return done.stdout.strip().splitlines()[-1]
            problem = f"scripts/swebench-venv.sh failed:\n{done.stderr[-3000:]}"
        except subprocess.TimeoutExpired:
            problem = "scripts/swebench-venv.sh did not finish in 20 minutes"
    unavailable(problem)


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return load_tasks(TASKS_DIR)


@pytest.fixture(scope="module")
def dataset(tasks, docker_client, sandbox_image, tmp_path_factory) -> Path:
    return export_swebench(tasks, tmp_path_factory.mktemp("export"), client=docker_client, base_image=sandbox_image)


def run_official(python: str, dataset: Path, predictions: Path, workdir: Path, *,
                 timeout: int = 300) -> tuple[dict[str, str], dict[str, dict], Path]:
    """Grade with the official harness: (bucket per instance, its report.json per instance, logs dir)."""
    run_id = f"cwm-{uuid.uuid4().hex[:8]}"
    command = [python, "-m", "swebench.harness.run_evaluation", "--dataset_name", str(dataset),
               "--predictions_path", str(predictions), "--run_id", run_id, "--max_workers", "2",
               "--timeout", str(timeout), "--report_dir", str(workdir / "reports")]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the official harness failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads((workdir / "reports" / f"{MODEL}.{run_id}.json").read_text())
    buckets = {}
    for bucket in ("resolved", "unresolved", "error", "empty_patch"):
        for instance_id in report[f"{bucket}_ids"]:
            assert instance_id not in buckets, f"{instance_id} in two buckets of {report}"
            buckets[instance_id] = bucket
    logs = workdir / "logs" / "run_evaluation" / run_id / MODEL
    reports = {}
    for path in logs.glob("*/report.json"):
        reports[path.parent.name] = json.loads(path.read_text())[path.parent.name]
    assert report.get("unstopped_containers", []) == [], "the official harness left containers"
    return buckets, reports, logs


def check_agreement(tasks: list[Task], predictions: list[Prediction], expected: dict[str, str],
                    python: str, dataset: Path, workdir: Path, name: str, *,
                    timeout: int = 300, docker_client=None) -> list[GradeResult]:
    """Grade `predictions` both ways; assert both give `expected` buckets, test by test."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_predictions(predictions, workdir / f"{name}.jsonl")
    started = time.monotonic()
    official, official_reports, logs = run_official(python, dataset, path, workdir, timeout=timeout)
    official_seconds = time.monotonic() - started
    started = time.monotonic()
    ours = grade_predictions(path, tasks, workers=2, timeout=timeout)
    our_seconds = time.monotonic() - started
    # Shown with -s; never asserted.
    print(f"\n{name}: {len(predictions)} predictions, {len(official_reports)} graded by running tests; "
          f"official {official_seconds:.1f} s, ours {our_seconds:.1f} s (2 workers each)")

    our_buckets = {r.instance_id: r.swebench_bucket for r in ours}
    assert official == expected, f"{name}: the official harness's verdicts are not the expected ones"
    assert our_buckets == official, f"{name}: verdicts differ (ours vs official)"

    by_id = {task.instance_id: task for task in tasks}
    for result in ours:
        report = official_reports.get(result.instance_id)
        if report is None:  # no report: an empty patch, or an error before grading
            assert result.status in ("unresolved", "patch_failed", "error"), result
            continue
        # Both harnesses ran the same script, byte for byte.
        task = by_id[result.instance_id]
        assert (logs / result.instance_id / "eval.sh").read_text() == prepare_eval_script(eval_script(task))
        assert report["resolved"] == result.resolved, result.instance_id
        # The official report has no tests when it found the log invalid.
        assert report["patch_successfully_applied"] == (result.status != "invalid"), result.instance_id
        if result.status != "invalid":
            status = report["tests_status"]
            assert status["FAIL_TO_PASS"] == {"success": result.fail_to_pass.success,
                                              "failure": result.fail_to_pass.failure}, result.instance_id
            assert status["PASS_TO_PASS"] == {"success": result.pass_to_pass.success,
                                              "failure": result.pass_to_pass.failure}, result.instance_id
    if docker_client is not None:
        left = grading_containers(docker_client)
        assert left == [], f"our grader left containers: {[c.name for c in left]}"
    return ours


def test_gold_patches_agree(tasks, swebench_python, dataset, tmp_path, docker_client):
    predictions = [Prediction(t.instance_id, t.patch, MODEL) for t in tasks]
    ours = check_agreement(tasks, predictions, {t.instance_id: "resolved" for t in tasks},
                           swebench_python, dataset, tmp_path, "gold", docker_client=docker_client)
    assert all(r.patch_applied_with == "git apply --verbose" for r in ours)


def test_empty_patches_agree(tasks, swebench_python, dataset, tmp_path):
    predictions = [Prediction(t.instance_id, "", MODEL) for t in tasks]
    check_agreement(tasks, predictions, {t.instance_id: "empty_patch" for t in tasks},
                    swebench_python, dataset, tmp_path, "empty")


def test_stale_patches_agree(tasks, swebench_python, dataset, tmp_path, docker_client):
    # The first gets blank lines: not empty to SWE-bench, so they must fail to apply.
    predictions = [Prediction(t.instance_id, "\n\n" if i == 0 else stale_patch(t), MODEL)
                   for i, t in enumerate(tasks)]
    ours = check_agreement(tasks, predictions, {t.instance_id: "error" for t in tasks},
                           swebench_python, dataset, tmp_path, "stale", docker_client=docker_client)
    assert {r.status for r in ours} == {"patch_failed"}


MIXED_KINDS = {  # kind -> (make the patch, the official bucket)
    "noop": (noop_patch, "unresolved"),
    "spoof": (spoof_patch, "unresolved"),  # invalid: the official report says not applied
    "cheat": (cheat_patch, "unresolved"),
    "gold+cheat": (lambda t: t.patch + cheat_patch(t), "resolved"),
}


def test_mixed_patches_agree(tasks, swebench_python, dataset, tmp_path, docker_client):
    predictions, expected, kinds = [], {}, {}
    others = [t for t in tasks if t.instance_id not in FUZZY_TASKS]
    for i, task in enumerate(others):
        kind = list(MIXED_KINDS)[i % len(MIXED_KINDS)]
        make, bucket = MIXED_KINDS[kind]
        predictions.append(Prediction(task.instance_id, make(task), MODEL))
        expected[task.instance_id], kinds[task.instance_id] = bucket, kind
    for task in tasks:
        if task.instance_id in FUZZY_TASKS:
            predictions.append(Prediction(task.instance_id, drifted_patch(task), MODEL))
            expected[task.instance_id], kinds[task.instance_id] = "resolved", "drifted"
    assert set(kinds.values()) == {*MIXED_KINDS, "drifted"}, "too few tasks to try every kind"
    ours = check_agreement(tasks, predictions, expected, swebench_python, dataset, tmp_path, "mixed",
                           docker_client=docker_client)
    for result in ours:
        kind = kinds[result.instance_id]
        if kind == "drifted":
            assert result.patch_applied_with == "patch --batch --forward --fuzz=5 -p1 -i"
        if kind == "spoof":
            assert result.status == "invalid"
        if kind in ("spoof", "cheat", "gold+cheat"):
            assert result.warnings and result.warnings[0].startswith("patch edits test files")


def test_exported_rows_grade_the_same_with_our_grader(tasks, dataset, docker_client):
    """Our grader on the exported rows (their images and eval scripts) agrees with it on the local tasks."""
    rows = load_tasks(dataset)
    assert all(row.image and row.eval_script and row.source is None for row in rows)
    predictions = [Prediction(t.instance_id, t.patch if i % 2 else noop_patch(t), MODEL) for i, t in enumerate(tasks)]
    local = grade_predictions(predictions, tasks, workers=2)
    exported = grade_predictions(predictions, rows, workers=2)
    assert [(r.status, r.tests) for r in exported] == [(r.status, r.tests) for r in local]
    assert [r.status for r in local] == ["unresolved" if i % 2 == 0 else "resolved" for i in range(len(tasks))]


def test_timeouts_agree(tasks, swebench_python, dataset, tmp_path, docker_client):
    task = next(t for t in tasks if t.instance_id == "statkit-generator-input")
    predictions = [Prediction(task.instance_id, hang_patch(task), MODEL)]
    (ours,) = check_agreement(tasks, predictions, {task.instance_id: "error"}, swebench_python, dataset,
                              tmp_path, "hang", timeout=HANG_TIMEOUT, docker_client=docker_client)
    assert ours.status == "error" and "timed out" in ours.detail



# --- the verdict rules themselves, on many made-up logs --------------------------------------

OFFICIAL_JUDGE = r"""
import json, sys, tempfile
from swebench.harness.grading import get_eval_report
from swebench.harness.utils import make_test_spec

out = []
for case in json.load(open(sys.argv[1])):
    row = {"instance_id": "x", "image": "unused", "eval_script": ": ''", "repo": "o/x", "version": "1",
           "FAIL_TO_PASS": case["f2p"], "PASS_TO_PASS": case["p2p"], "log_parser": "parse_log_pytest",
           "eval_type": "pass_and_fail"}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as log:
        log.write(case["log"])
    report = get_eval_report(make_test_spec(row), {"instance_id": "x", "model_patch": "diff"}, log.name, True)["x"]
    tests = report.get("tests_status")
    out.append({"found": report["patch_successfully_applied"], "resolved": report["resolved"],
                "f2p": tests and tests["FAIL_TO_PASS"], "p2p": tests and tests["PASS_TO_PASS"]})
json.dump(out, open(sys.argv[2], "w"))
"""


def made_up_logs(count: int, seed: int = 5) -> list[dict]:
    """Logs in the eval script's shape with random results, exit codes and damage."""
    import random

    rng = random.Random(seed)
    pool = ["t.py::a", "t.py::b", "t.py::c[x-1]", "t.py::c[x-2]", "t.py::d[log(p", "t.py::d[log(p)]", "t.py::e"]
    statuses = ["PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS"]
    cases = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(0, 6)):
            status, test = rng.choice(statuses), rng.choice(pool)
            lines.append(f"{status} {test}" + (" - assert 1 == 2" if status == "FAILED" and rng.random() < .5 else ""))
        # SWE-bench reads the whole log when the markers hold no result; our scripts
        # print none outside them, so results outside come only beside results inside.
        counted = any(not line.startswith("XPASS") for line in lines)
        if rng.random() < .2:
            lines.append("SKIPPED [2] t.py:10: no network")
        body = "\n".join(["collected 7 items", "t.py ..F.sx", *lines, "== 3 passed, 1 failed in 0.1s =="])
        exit_code = rng.choice([None, 0, 1, 2])
        log = "+ git apply --verbose -\nApplied patch t.py cleanly.\n"
        damage = rng.random()
        log += "" if damage < .05 else f"+ : '{START_MARKER}'\n"
        log += body + "\n" + ("" if exit_code is None else f"+ SWEBENCH_TEST_EXIT_CODE={exit_code}\n")
        log += "" if .05 <= damage < .1 else f"+ : '{END_MARKER}'\n"
        log += "" if exit_code is None else f">>>>> Test Exit Code: {exit_code}\n"
        if .1 <= damage < .13:
            log += ">>>>> Tests Errored\n"
        if counted and rng.random() < .2:  # results after the markers never count
            log += "PASSED t.py::a\n"
        picked = rng.sample(pool, rng.randint(0, 4))
        cut = rng.randint(0, len(picked))
        cases.append({"log": log, "f2p": picked[:cut], "p2p": picked[cut:]})
    return cases


def test_verdict_rules_agree_on_made_up_logs(swebench_python, tmp_path):
    cases = made_up_logs(400)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run([swebench_python, "-c", OFFICIAL_JUDGE, str(tmp_path / "cases.json"),
                           str(tmp_path / "official.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    official = json.loads((tmp_path / "official.json").read_text())
    statuses = set()
    for case, theirs in zip(cases, official, strict=True):
        verdict = judge_log(case["log"], case["f2p"], case["p2p"])
        statuses.add(verdict.status)
        ours = {"found": verdict.status != "invalid", "resolved": verdict.status == "resolved"}
        if ours["found"]:
            ours["f2p"] = {"success": verdict.fail_to_pass.success, "failure": verdict.fail_to_pass.failure}
            ours["p2p"] = {"success": verdict.pass_to_pass.success, "failure": verdict.pass_to_pass.failure}
        else:
            ours["f2p"] = ours["p2p"] = None
        assert ours == theirs, case["log"]
    assert statuses == {"resolved", "unresolved", "invalid"}, "the made-up logs miss a verdict"
