"""Tasks: one SWE-bench-style row each, loaded from a tasks/ folder, a .jsonl or a .json.

A row is a SWE-bench row (the official datasets' columns, plus v5's optional `image`
and `eval_script`) with cwm-agent's extension for local tasks: `source`, the buggy
tree next to the row; `test_command`; `test_files`. A local task's `base_commit` is
the commit that `checkout` makes of its source: fixed author, date and message, so
the same tree gives the same id on every machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cwm_agent.sandbox.patch import patched_files

DEMO_TASK = "demo-slugify-unicode"
DEFAULT_TEST_COMMAND = "python3 -m pytest -rA"
TASK_FILE = "task.json"  # the row's name inside a task folder

# Who commits a local task's source, and when: fixed, so base_commit is reproducible.
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "cwm-agent",
    "GIT_AUTHOR_EMAIL": "tasks@cwm-agent.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "cwm-agent",
    "GIT_COMMITTER_EMAIL": "tasks@cwm-agent.invalid",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",  # no user or system config (hooks, autocrlf, signing)
    "GIT_CONFIG_GLOBAL": os.devnull,
}
_COMMIT_MESSAGE = "base"
# Build litter never belongs to a task's tree.
_IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache")

_REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement")
_LISTS = ("FAIL_TO_PASS", "PASS_TO_PASS", "test_files")


class TaskError(ValueError):
    """A task file or row that cannot be used; the message names the file (and line)."""


@dataclass
class Task:
    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str = ""  # the gold patch (source files only)
    test_patch: str = ""  # the hidden tests
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)
    version: str = ""
    environment_setup_commit: str = ""
    hints_text: str = ""
    created_at: str = ""
    # SWE-bench v5: a prebuilt image and the script that grades inside it.
    image: str | None = None
    eval_script: str | None = None
    # cwm-agent's extension for local tasks.
    source: str | None = None  # a folder or .tar/.tar.gz, relative to the row's file
    test_command: str = DEFAULT_TEST_COMMAND  # run with test_files appended
    test_files: list[str] = field(default_factory=list)  # default: what test_patch touches
    path: Path | None = None  # the file the row came from
    extra: dict[str, Any] = field(default_factory=dict)  # other columns, kept as they came

    def __post_init__(self) -> None:
        if not self.test_files and self.test_patch:
            self.test_files = patched_files(self.test_patch)

    @property
    def test_invocation(self) -> str:
        """The shell command that runs the task's tests, as a grader runs it."""
        return " ".join([self.test_command, *map(shlex.quote, self.test_files)])

    def source_dir(self, workdir: Path | None = None) -> Path:
        """The task's source tree. An archive is unpacked into `workdir` (default: a new temp dir)."""
        if self.source is None:
            raise TaskError(
                f"task {self.instance_id} has no local source: its repository lives in its "
                f"image ({self.image or 'no image given'}) or at {self.repo}@{self.base_commit}"
            )
        base = self.path.parent if self.path is not None else Path.cwd()
        src = (base / self.source).resolve()
        if src.is_dir():
            return src
        if not src.is_file() or not src.name.endswith((".tar", ".tar.gz", ".tgz")):
            raise TaskError(
                f"task {self.instance_id}: source {self.source!r} ({src}) is neither a folder "
                "nor a .tar/.tar.gz archive; fix the row's 'source'"
            )
        if not hasattr(tarfile, "data_filter"):
            raise TaskError(f"unpacking {src} safely needs Python 3.11.4 or newer")
        out = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="cwm-task-"))
        try:
            return unpack_archive(src, out)
        except (tarfile.TarError, OSError) as exc:
            raise TaskError(f"task {self.instance_id}: cannot unpack {src}: {exc}") from None

    def checkout(self, dest: Path) -> str:
        """Copy the source into `dest` (new or empty), commit it, return the commit id."""
        with tempfile.TemporaryDirectory(prefix="cwm-task-") as tmp:
            return commit_tree(self.source_dir(Path(tmp)), dest)

    def to_row(self) -> dict[str, Any]:
        """The row as JSON-ready dict (SWE-bench columns first; `path` left out)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("path", "extra")}
        return {**row, **self.extra}


def unpack_archive(archive: Path, out: Path) -> Path:
    """Unpack a tar (any compression) or a .zip into `out`, refusing absolute paths, `..` and
    devices. An archive of one top folder (tar czf x.tgz project/) means that folder.
    Raises tarfile.TarError, zipfile.BadZipFile or OSError."""
    out.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise tarfile.TarError(f"unsafe member {name!r}")
            zipped.extractall(out)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")
    entries = list(out.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out


def commit_tree(src: Path, dest: Path) -> str:
    """Copy `src` into `dest` and commit it as a local task's base commit; return its id."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise TaskError(f"{dest} is not empty; give checkout a new or empty folder")
    shutil.copytree(src, dest, ignore=_IGNORED, copy_function=shutil.copyfile, dirs_exist_ok=True)
    # GIT_DIR, GIT_INDEX_FILE and friends (set inside git hooks) would redirect us.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | _COMMIT_ENV
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "core.autocrlf=false", "-c", "commit.gpgsign=false",
         "commit", "-q", "--no-verify", "--allow-empty", "-m", _COMMIT_MESSAGE],
    ):
        _git(args, dest, env)
    return _git(["rev-parse", "HEAD"], dest, env).strip()


def _git(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise TaskError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks from a .jsonl, a .json (one row or a list), a task folder, or a folder of them."""
    path = Path(path)
    if path.is_dir():
        tasks = _load_dir(path)
    elif not path.exists():
        raise TaskError(f"{path}: no such file or folder")
    elif path.suffix == ".jsonl":
        tasks = _load_jsonl(path)
    elif path.suffix == ".json":
        tasks = _load_json(path)
    else:
        raise TaskError(f"{path}: expected a .jsonl, a .json or a folder of tasks")
    seen: dict[str, Task] = {}
    for task in tasks:
        if task.instance_id in seen:
            raise TaskError(f"{task.path}: instance_id {task.instance_id!r} appears twice")
        seen[task.instance_id] = task
    return tasks


def _load_dir(path: Path) -> list[Task]:
    if (path / TASK_FILE).is_file():  # one task's own folder
        return _load_json(path / TASK_FILE)
    tasks = []
    for sub in sorted(p for p in path.iterdir() if (p / TASK_FILE).is_file()):
        for task in _load_json(sub / TASK_FILE):
            if task.instance_id != sub.name:
                raise TaskError(
                    f"{sub / TASK_FILE}: instance_id {task.instance_id!r} differs from its "
                    f"folder's name {sub.name!r}; rename one of them"
                )
            tasks.append(task)
    if not tasks:
        raise TaskError(f"{path}: no task folders (subfolders holding a {TASK_FILE})")
    return sorted(tasks, key=lambda t: t.instance_id)


def _load_jsonl(path: Path) -> list[Task]:
    tasks = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
            tasks.append(_from_row(row, path, where))
    if not tasks:
        raise TaskError(f"{path}: no rows")
    return tasks


def _load_json(path: Path) -> list[Task]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(data, dict):
        return [_from_row(data, path, str(path))]
    if not isinstance(data, list) or not data:
        raise TaskError(f"{path}: expected one row (an object) or a non-empty list of rows")
    return [_from_row(row, path, f"{path}: row {i}") for i, row in enumerate(data, 1)]


def _from_row(row: Any, path: Path, where: str) -> Task:
    if not isinstance(row, dict):
        raise TaskError(f"{where}: a row must be a JSON object, not {type(row).__name__}")
    missing = [key for key in _REQUIRED if not row.get(key)]
    if missing:
        raise TaskError(f"{where}: missing {', '.join(missing)}")
    known = {f.name for f in fields(Task)} - {"path", "extra"}
    values: dict[str, Any] = {}
    for key, value in row.items():
        if key not in known:
            continue
        if key in _LISTS:
            value = _string_list(value, f"{where}: {key}")
        elif value is None:  # some datasets store null for "not given": keep the default
            continue
        elif key == "version" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a version read as a number, e.g. 0.2
        elif not isinstance(value, str):
            raise TaskError(f"{where}: {key} must be a string, not {type(value).__name__}")
        values[key] = value
    extra = {key: value for key, value in row.items() if key not in known}
    return Task(**values, path=path, extra=extra)


def _string_list(value: Any, where: str) -> list[str]:
    # SWE-bench datasets store the test lists as JSON-encoded strings.
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TaskError(f"{where} must be a list of strings or its JSON encoding") from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TaskError(f"{where} must be a list of strings or its JSON encoding")
    return value
