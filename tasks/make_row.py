"""Fill in a bundled task's row from a work tree holding the fix and the new tests.

    python tasks/make_row.py checkout tasks/ID /tmp/ID   # /tmp/ID: git repo at the base commit
    # ...edit /tmp/ID: fix the bug, add tests that show it (leave them uncommitted)...
    python tasks/make_row.py build tasks/ID /tmp/ID      # writes tasks/ID/task.json

`build` splits the work tree's changes into `test_patch` (test files) and `patch`
(everything else), runs the tests with this Python's pytest before and after the
fix, and writes base_commit, patch, test_patch, FAIL_TO_PASS, PASS_TO_PASS,
test_files and source into tasks/ID/task.json, keeping the fields written by
hand (instance_id, repo, problem_statement, version, created_at, ...).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cwm_agent.bench.tasks import DEFAULT_TEST_COMMAND, TASK_FILE, commit_tree  # noqa: E402

_RESULT = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)", re.MULTILINE)


def is_test_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.startswith(("tests/", "test/")) or name.startswith("test_") or name == "conftest.py"


def _git(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, text=True).stdout


def _diff(work: Path, paths: list[str]) -> str:
    if not paths:
        return ""
    _git(["add", "-A", "--", *paths], work)
    try:
        return _git(["diff", "--cached", "--binary", "HEAD", "--", *paths], work)
    finally:
        _git(["reset", "-q"], work)


def run_tests(repo: Path, test_command: str, test_files: list[str]) -> dict[str, str]:
    """Per-test results of `test_command test_files` in `repo`, with this Python."""
    argv = shlex.split(test_command) + test_files
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    # No third-party pytest plugins, as in the sandbox image.
    env = os.environ | {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
    return {test: status for status, test in _RESULT.findall(done.stdout)}


def build(task_dir: Path, work: Path) -> dict:
    row_file = task_dir / TASK_FILE
    row = json.loads(row_file.read_text(encoding="utf-8"))
    changed = [line[3:] for line in _git(["status", "--porcelain", "-uall"], work).splitlines()]
    tests = [path for path in changed if is_test_file(path)]
    patch = _diff(work, [path for path in changed if not is_test_file(path)])
    test_patch = _diff(work, tests)
    if not patch or not test_patch:
        raise SystemExit(f"{work}: expected uncommitted changes to both source and test files")
    test_command = row.get("test_command") or DEFAULT_TEST_COMMAND
    with tempfile.TemporaryDirectory() as tmp:
        base_repo = Path(tmp) / "repo"
        base = commit_tree(task_dir / "repo", base_repo)
        _git(["apply", "-"], base_repo, test_patch)
        before = run_tests(base_repo, test_command, tests)
        _git(["apply", "-"], base_repo, patch)
        after = run_tests(base_repo, test_command, tests)
    failing = sorted(test for test, status in after.items() if status != "PASSED")
    if failing:
        raise SystemExit(f"tests still failing with the fix: {failing}")
    row.update(
        base_commit=base,
        environment_setup_commit=base,
        patch=patch,
        test_patch=test_patch,
        FAIL_TO_PASS=[test for test in after if before.get(test) != "PASSED"],
        PASS_TO_PASS=[test for test in after if before.get(test) == "PASSED"],
        source="repo",
        test_command=test_command,
        test_files=tests,
    )
    if not row["FAIL_TO_PASS"]:
        raise SystemExit("no test fails before the fix: the new tests do not show the bug")
    row_file.write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return row


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] not in ("checkout", "build"):
        raise SystemExit(__doc__)
    task_dir, work = Path(argv[1]), Path(argv[2])
    if argv[0] == "checkout":
        print(commit_tree(task_dir / "repo", work))
    else:
        row = build(task_dir, work)
        counts = f"{len(row['FAIL_TO_PASS'])} FAIL_TO_PASS, {len(row['PASS_TO_PASS'])} PASS_TO_PASS"
        print(f"{task_dir / TASK_FILE}: {counts}")


if __name__ == "__main__":
    main(sys.argv[1:])
