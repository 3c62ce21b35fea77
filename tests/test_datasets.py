"""Task sets as SWE-bench's harness takes them: .parquet, save_to_disk folders (a Dataset, a
DatasetDict and its splits), Hub names (offline here: the clear error), --instance-ids, and the
rows that cannot run named with what they lack. One eval runs end to end from a parquet file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets  # the dev extra installs it
import pytest

from cwm_agent.bench.datasets import load_task_set, only, unrunnable
from cwm_agent.bench.tasks import TaskError, load_tasks
from cwm_agent.paths import TASKS_DIR
from cwm_agent.testing.scripted_server import ScriptedServer, think


DEMO = "demo-slugify-unicode"
OLD = "astropy__astropy-12907"  # a SWE-bench row in the older format: no image, no eval_script


def rows() -> list[dict]:
    demo = load_tasks(TASKS_DIR / DEMO)[0]
    row = {**demo.to_row(), "source": str((TASKS_DIR / DEMO / "repo").resolve())}
    row["FAIL_TO_PASS"] = json.dumps(row["FAIL_TO_PASS"])  # as SWE-bench datasets store them
    row["PASS_TO_PASS"] = json.dumps(row["PASS_TO_PASS"])
    old = {"instance_id": OLD, "repo": "astropy/astropy", "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607",
           "problem_statement": "Modeling's separability_matrix does not compute separability correctly",
           "patch": "", "test_patch": "", "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]", "version": "4.3",
           "environment_setup_commit": "", "hints_text": "", "created_at": "2022-03-03T15:14:54Z", "source": None,
           "test_command": row["test_command"], "test_files": [], "image": None, "eval_script": None}
    return [row, {**{k: None for k in row}, **old}]


def test_parquet_and_save_to_disk_give_the_same_tasks(tmp_path):
    table = datasets.Dataset.from_list(rows())
    table.to_parquet(str(tmp_path / "set.parquet"))
    table.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"test": table, "dev": table.select([0])}).save_to_disk(str(tmp_path / "dict"))
    from_parquet = load_task_set(tmp_path / "set.parquet")
    assert [t.instance_id for t in from_parquet] == [DEMO, OLD]
    assert from_parquet[0].FAIL_TO_PASS == load_tasks(TASKS_DIR / DEMO)[0].FAIL_TO_PASS  # JSON text -> list
    assert [t.instance_id for t in load_task_set(tmp_path / "one")] == [DEMO, OLD]
    assert [t.instance_id for t in load_task_set(tmp_path / "dict")] == [DEMO, OLD]  # split "test"
    assert [t.instance_id for t in load_task_set(tmp_path / "dict", split="dev")] == [DEMO]
    with pytest.raises(TaskError, match="no split 'train'.*pass --split"):
        load_task_set(tmp_path / "dict", split="train")
    # What cannot run says what it lacks and what to use instead; a local task runs.
    assert unrunnable(from_parquet[0]) is None
    why = unrunnable(from_parquet[1])
    assert OLD in why and "`image` and no `eval_script`" in why and "SWE-bench 5 rows carry both" in why
    assert [t.instance_id for t in only(from_parquet, [OLD])] == [OLD]
    with pytest.raises(TaskError, match="no task 'nope'"):
        only(from_parquet, ["nope"])


def test_a_hub_name_that_cannot_be_fetched_is_one_clear_error(tmp_path):
    # Offline (as here, and never any traffic): the datasets library answers from its cache or fails.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", "SWE-bench/SWE-bench_Nonexistent",
                           "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot load the dataset SWE-bench/SWE-bench_Nonexistent (split test)" in done.stderr
    assert "save_to_disk" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(TaskError, match="not a Hugging Face dataset name"):
        load_task_set(tmp_path / "no-such-file.jsonl")


@pytest.mark.docker
def test_eval_runs_from_a_parquet_file_and_leaves_out_the_rows_it_cannot_run(tmp_path, sandbox_image):
    datasets.Dataset.from_list(rows()).to_parquet(str(tmp_path / "set.parquet"))
    demo = load_tasks(TASKS_DIR / DEMO)[0]
    script = [think("Fix.", "bash", f"cat > /tmp/fix.patch <<'EOF_PATCH'\n{demo.patch}EOF_PATCH"),
              think("Submit.", "submit", "/tmp/fix.patch"), "Done.\n</think>\nFixed."]
    with ScriptedServer(script, model_id="facebook/cwm") as server:
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", str(tmp_path / "set.parquet"),
                               "--instance-ids", f"{DEMO},{OLD}", "--base-url", server.base_url,
                               "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"not run: {OLD}" in " ".join(done.stderr.split())
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["instance_id"], r["resolved"]) for r in results] == [(DEMO, True)]
