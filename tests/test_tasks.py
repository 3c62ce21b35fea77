"""Task loading, and a real check of every bundled task: tests fail before the gold patch, pass after."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cwm_agent.paths import TASKS_DIR
from cwm_agent.bench.tasks import DEFAULT_TEST_COMMAND, DEMO_TASK, Task, TaskError, commit_tree, load_tasks

BUNDLED = load_tasks(TASKS_DIR)
BUNDLED_IDS = [task.instance_id for task in BUNDLED]

MINIMAL = {"instance_id": "x-1", "repo": "o/x", "base_commit": "abc", "problem_statement": "it breaks"}


def write_repo(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("def f():\n    return 1\n")
    (root / "README.md").write_text("# pkg\n")
    return root


# --- loading ---------------------------------------------------------------------------


def test_bundled_task_set():
    assert len(BUNDLED) >= 8
    assert BUNDLED_IDS == sorted(BUNDLED_IDS)
    assert DEMO_TASK in BUNDLED_IDS
    kinds = [task.extra["bug_kind"] for task in BUNDLED]
    assert len(set(kinds)) == len(kinds), "each bundled task shows a different kind of bug"
    for task in BUNDLED:
        assert task.path == TASKS_DIR / task.instance_id / "task.json"
        assert task.source_dir() == (TASKS_DIR / task.instance_id / "repo").resolve()
        assert task.repo.startswith("cwm-agent/")


def test_load_one_task_folder():
    (task,) = load_tasks(TASKS_DIR / DEMO_TASK)
    assert task.instance_id == DEMO_TASK
    assert task.source_dir().is_dir()


def test_load_jsonl_with_swebench_encoded_lists(tmp_path):
    rows = [
        {**MINIMAL, "FAIL_TO_PASS": '["tests/test_a.py::test_one"]', "PASS_TO_PASS": "[]", "extra_col": 3},
        {**MINIMAL, "instance_id": "x-2", "FAIL_TO_PASS": ["t::a"], "image": "img:1", "hints_text": None,
         "test_command": None, "version": 0.2},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    first, second = load_tasks(path)
    assert first.FAIL_TO_PASS == ["tests/test_a.py::test_one"]
    assert first.PASS_TO_PASS == []
    assert first.extra == {"extra_col": 3}
    assert first.test_command == DEFAULT_TEST_COMMAND
    assert first.image is None and first.source is None
    assert (second.FAIL_TO_PASS, second.image, second.hints_text) == (["t::a"], "img:1", "")
    assert (second.test_command, second.version) == (DEFAULT_TEST_COMMAND, "0.2")
    assert first.path == second.path == path


def test_load_json_one_row_or_a_list(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(MINIMAL))
    assert [t.instance_id for t in load_tasks(one)] == ["x-1"]
    many = tmp_path / "many.json"
    many.write_text(json.dumps([MINIMAL, {**MINIMAL, "instance_id": "x-2"}]))
    assert [t.instance_id for t in load_tasks(many)] == ["x-1", "x-2"]


def test_directory_of_task_folders_is_sorted_and_skips_others(tmp_path):
    for name in ("b-task", "a-task"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "task.json").write_text(json.dumps({**MINIMAL, "instance_id": name}))
    (tmp_path / "not-a-task").mkdir()
    (tmp_path / "README.md").write_text("hi")
    assert [t.instance_id for t in load_tasks(tmp_path)] == ["a-task", "b-task"]


def test_test_files_default_to_what_the_test_patch_touches(tmp_path):
    test_patch = (
        "diff --git a/tests/test_a.py b/tests/test_a.py\n--- a/tests/test_a.py\n+++ b/tests/test_a.py\n"
        "@@ -1 +1,2 @@\n x\n+y\n"
        "diff --git a/tests/test_b.py b/tests/test_b.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_b.py\n"
        "@@ -0,0 +1 @@\n+z\n"
    )
    task = Task(**MINIMAL, test_patch=test_patch)
    assert task.test_files == ["tests/test_a.py", "tests/test_b.py"]
    assert task.test_invocation == "python3 -m pytest -rA tests/test_a.py tests/test_b.py"
    explicit = Task(**MINIMAL, test_patch=test_patch, test_files=["tests/test_a.py"])
    assert explicit.test_files == ["tests/test_a.py"]


def test_to_row_round_trips(tmp_path):
    original = BUNDLED[0]
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(original.to_row(), ensure_ascii=False) + "\n", encoding="utf-8")
    (loaded,) = load_tasks(path)
    assert loaded.to_row() == original.to_row()


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"instance_id": "x-1"', r"rows\.jsonl:2: invalid JSON"),
        ("[1, 2]", r"rows\.jsonl:2: a row must be a JSON object"),
        (json.dumps({**MINIMAL, "base_commit": ""}), r"rows\.jsonl:2: missing base_commit"),
        (json.dumps({"instance_id": "x-2"}), "missing repo, base_commit, problem_statement"),
        (json.dumps({**MINIMAL, "FAIL_TO_PASS": "not json"}), r"rows\.jsonl:2: FAIL_TO_PASS must be a list"),
        (json.dumps({**MINIMAL, "PASS_TO_PASS": [1]}), "PASS_TO_PASS must be a list of strings"),
        (json.dumps({**MINIMAL, "patch": 5}), r"rows\.jsonl:2: patch must be a string, not int"),
        (json.dumps(MINIMAL), "instance_id 'x-1' appears twice"),
    ],
    ids=["bad-json", "not-object", "empty-field", "missing", "bad-list-text", "list-of-ints", "bad-type", "dup"],
)
def test_bad_jsonl_rows_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(MINIMAL) + "\n" + text + "\n")
    with pytest.raises(TaskError, match=message):
        load_tasks(path)


def test_bad_json_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "instance_id": "x-1",\n  oops\n}')
    with pytest.raises(TaskError, match=r"broken\.json:3: invalid JSON"):
        load_tasks(broken)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([MINIMAL, {"instance_id": "x-2"}]))
    with pytest.raises(TaskError, match=r"rows\.json: row 2: missing repo"):
        load_tasks(rows)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(TaskError, match="non-empty list"):
        load_tasks(empty)


def test_bad_paths(tmp_path):
    with pytest.raises(TaskError, match="no such file"):
        load_tasks(tmp_path / "missing.jsonl")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(TaskError, match="expected a .jsonl"):
        load_tasks(tmp_path / "rows.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TaskError, match="no rows"):
        load_tasks(tmp_path / "empty.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(TaskError, match="no task folders"):
        load_tasks(tmp_path / "folder")


def test_task_folder_name_must_match_its_id(tmp_path):
    (tmp_path / "right-name").mkdir()
    (tmp_path / "right-name" / "task.json").write_text(json.dumps(MINIMAL))
    with pytest.raises(TaskError, match="differs from its folder's name 'right-name'"):
        load_tasks(tmp_path)


# --- sources and base commits ----------------------------------------------------------


def test_source_folder_is_relative_to_the_row_file(tmp_path):
    write_repo(tmp_path / "data" / "src" / "x")
    path = tmp_path / "data" / "rows.jsonl"
    path.write_text(json.dumps({**MINIMAL, "source": "src/x"}) + "\n")
    (task,) = load_tasks(path)
    assert task.source_dir() == (tmp_path / "data" / "src" / "x").resolve()


@pytest.mark.parametrize("top_folder", [True, False], ids=["one-top-folder", "flat"])
def test_archive_source_gives_the_same_commit_as_the_folder(tmp_path, top_folder):
    repo = write_repo(tmp_path / "project")
    archive = tmp_path / "project.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        if top_folder:
            tar.add(repo, arcname="project")
        else:
            for child in repo.iterdir():
                tar.add(child, arcname=child.name)
    folder_commit = commit_tree(repo, tmp_path / "from-folder")
    task = Task(**MINIMAL, source="project.tar.gz", path=tmp_path / "rows.jsonl")
    unpacked = task.source_dir(tmp_path / "unpacked")
    assert (unpacked / "pkg" / "__init__.py").read_text() == "def f():\n    return 1\n"
    assert task.checkout(tmp_path / "from-archive") == folder_commit


def test_archive_that_escapes_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"owned\n"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    task = Task(**MINIMAL, source="evil.tar", path=tmp_path / "rows.jsonl")
    with pytest.raises(TaskError, match="cannot unpack"):
        task.source_dir(tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


def test_missing_or_odd_sources(tmp_path):
    with pytest.raises(TaskError, match="has no local source"):
        Task(**MINIMAL).source_dir()
    (tmp_path / "notes.txt").write_text("x")
    for source in ("notes.txt", "nowhere"):
        task = Task(**MINIMAL, source=source, path=tmp_path / "rows.jsonl")
        with pytest.raises(TaskError, match="neither a folder nor a .tar"):
            task.source_dir()


def test_base_commit_ignores_modes_litter_and_identity(tmp_path, monkeypatch):
    first = commit_tree(write_repo(tmp_path / "a"), tmp_path / "a-git")
    repo = write_repo(tmp_path / "b")
    (repo / "pkg" / "__init__.py").chmod(0o755)
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (repo / ".pytest_cache").mkdir()
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Someone Else")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2001-01-01T00:00:00")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert commit_tree(repo, tmp_path / "b-git") == first
    (repo / "README.md").write_text("# changed\n")
    assert commit_tree(repo, tmp_path / "c-git") != first


def test_checkout_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "file").write_text("x")
    with pytest.raises(TaskError, match="not empty"):
        commit_tree(write_repo(tmp_path / "src"), tmp_path / "dest")


# --- every bundled task, for real ------------------------------------------------------

STATUSES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")


def parse_pytest_rA(log: str) -> dict[str, str]:
    """test id -> status from pytest -rA's summary lines, split the way SWE-bench does."""
    results = {}
    for line in log.splitlines():
        if line.startswith(STATUSES):
            words = line.replace(" - ", " ").split()
            if len(words) > 1 and "::" in words[1]:
                results[words[1]] = words[0]
    return results


def run_task_tests(repo: Path, command: str) -> dict[str, str]:
    argv = shlex.split(command)
    assert argv[0] == "python3", "bundled tasks run their tests with the sandbox's python3"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    # Like the sandbox: no third-party pytest plugins (the venv's hypothesis, ...).
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    results = parse_pytest_rA(done.stdout)
    # SWE-bench's anti-spoof rule: a failing run must show which tests failed.
    assert results, f"no per-test results from {command!r}:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0 or any(s in ("FAILED", "ERROR") for s in results.values()), done.stdout
    return results


def resolved(task: Task, results: dict[str, str]) -> bool:
    """SWE-bench's rule: every FAIL_TO_PASS passes, every PASS_TO_PASS still passes."""
    return all(results.get(t) in ("PASSED", "XFAIL") for t in task.FAIL_TO_PASS) and all(
        results.get(t) in ("PASSED", "XFAIL", "SKIPPED") for t in task.PASS_TO_PASS
    )


def git_apply(repo: Path, patch: str) -> None:
    subprocess.run(["git", "apply", "-v", "-"], cwd=repo, input=patch, text=True, check=True, capture_output=True)


@pytest.fixture(params=BUNDLED, ids=BUNDLED_IDS)
def task(request) -> Task:
    return request.param


def test_row_is_well_formed(task):
    touched_by_fix = set(_files(task.patch))
    assert task.patch and task.test_patch and task.FAIL_TO_PASS and task.PASS_TO_PASS
    assert task.test_files == _files(task.test_patch)
    assert not touched_by_fix & set(task.test_files), "the gold patch must not touch the tests"
    assert all(f.endswith(".py") and not f.startswith("tests/") for f in touched_by_fix)
    assert not set(task.FAIL_TO_PASS) & set(task.PASS_TO_PASS)
    for test in task.FAIL_TO_PASS + task.PASS_TO_PASS:
        assert test.split("::")[0] in task.test_files and not any(c.isspace() for c in test), test
    assert task.test_command == DEFAULT_TEST_COMMAND
    assert task.base_commit == task.environment_setup_commit
    # The issue describes a symptom; it must not hand over the hidden tests' names.
    assert not any(test.split("::")[1] in task.problem_statement for test in task.FAIL_TO_PASS)


def _files(diff: str) -> list[str]:
    return [line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git a/")]


def test_task_is_genuine(task, tmp_path):
    repo = tmp_path / "repo"
    assert task.checkout(repo) == task.base_commit, "task.json's base_commit is stale: rebuild the row"

    # The repository as the agent sees it: its own tests pass.
    before_all = run_task_tests(repo, task.test_command)
    assert set(before_all.values()) == {"PASSED"}, before_all

    # Hidden tests, no fix (the empty patch): the bug shows and the task is not resolved.
    git_apply(repo, task.test_patch)
    no_fix = run_task_tests(repo, task.test_invocation)
    assert all(no_fix.get(test) in ("FAILED", "ERROR") for test in task.FAIL_TO_PASS), no_fix
    assert all(no_fix.get(test) == "PASSED" for test in task.PASS_TO_PASS), no_fix
    assert not resolved(task, no_fix)

    # The gold patch resolves it; the lists name exactly the tests that run.
    git_apply(repo, task.patch)
    gold = run_task_tests(repo, task.test_invocation)
    assert resolved(task, gold)
    assert set(gold) == set(task.FAIL_TO_PASS) | set(task.PASS_TO_PASS)
    assert set(gold.values()) == {"PASSED"}
    after_all = run_task_tests(repo, task.test_command)
    assert set(after_all.values()) == {"PASSED"}, "the gold patch breaks other tests"


def test_make_row_rebuilds_the_demo_row(tmp_path):
    """tasks/make_row.py, run on a work tree holding the gold and test patches, gives back the row."""
    spec = importlib.util.spec_from_file_location("make_row", TASKS_DIR / "make_row.py")
    make_row = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_row)
    task_dir = tmp_path / DEMO_TASK
    shutil.copytree(TASKS_DIR / DEMO_TASK, task_dir)
    stored = json.loads((task_dir / "task.json").read_text(encoding="utf-8"))
    by_hand = ("instance_id", "repo", "problem_statement", "version", "created_at")
    hand_written = {key: stored[key] for key in by_hand}
    (task_dir / "task.json").write_text(json.dumps(hand_written), encoding="utf-8")

    work = tmp_path / "work"
    make_row.main(["checkout", str(task_dir), str(work)])
    git_apply(work, stored["patch"])
    git_apply(work, stored["test_patch"])
    row = make_row.build(task_dir, work)
    for key in ("base_commit", "patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS", "test_files", "source"):
        assert row[key] == stored[key], key
    (rebuilt,) = load_tasks(task_dir)
    assert rebuilt.FAIL_TO_PASS == stored["FAIL_TO_PASS"]


def _tar_for_container(repo: Path, task: Task) -> bytes:
    """The checked-out repository as /testbed, and the two patches under /cwm-patches."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0  # git refuses repositories owned by another user
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(repo, arcname="testbed", filter=as_root)
        for name, text in (("test.diff", task.test_patch), ("gold.diff", task.patch)):
            data = text.encode("utf-8")
            info = as_root(tarfile.TarInfo(f"cwm-patches/{name}"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.docker
def test_task_in_the_sandbox_image(task, tmp_path, docker_client, sandbox_image):
    """The same check with the sandbox's own python3 and pytest (bookworm's 7.2), offline."""
    repo = tmp_path / "repo"
    task.checkout(repo)
    container = docker_client.containers.run(
        sandbox_image, ["sleep", "300"], detach=True, network_mode="none", init=True, auto_remove=False
    )
    try:
        assert container.put_archive("/", _tar_for_container(repo, task))

        def run(patch: str) -> dict[str, str]:
            script = f"cd /testbed && git apply -v /cwm-patches/{patch} && {task.test_invocation}"
            code, output = container.exec_run(["bash", "-c", script])
            log = output.decode("utf-8", "replace")
            results = parse_pytest_rA(log)
            assert results and (code == 0 or "FAILED" in results.values()), log
            return results

        no_fix = run("test.diff")
        assert not resolved(task, no_fix)
        assert all(no_fix.get(test) in ("FAILED", "ERROR") for test in task.FAIL_TO_PASS), no_fix
        gold = run("gold.diff")
        assert resolved(task, gold)
        assert set(gold) == set(task.FAIL_TO_PASS) | set(task.PASS_TO_PASS)
    finally:
        container.remove(force=True)
