"""`cwm-agent tasks generate`: SWE-smith-style tasks from a real project and its test suite.

    generate_tasks("pypi:more-itertools==10.5.0", Path("/tmp/generated-tasks"), count=50)

1. Get the project (a PyPI sdist through pip, a local sdist or a folder) and run
   its test suite twice: the tests that pass both times are the baseline.
2. List every mutation of its source (`cwm_agent.bench.mutate`), shuffle them with
   the seed and order them so that each function, and each kind of bug, gets a
   turn before any gets a second.
3. For each mutant run the test files (those that name the mutated function
   first, with -x, when that is a strict subset of the suite; then the whole
   suite, with -rA). A mutant that a baseline test fails on becomes a task:
   FAIL_TO_PASS = baseline tests that fail, PASS_TO_PASS = the other baseline
   tests of the same test files.
   With docker verification the suites run in a sandbox container (suites.py):
   a mutant is unreviewed code, kept off the host and the network.
4. The task's base is the mutated tree with the FAIL_TO_PASS test functions
   taken out of their test files; `test_patch` puts them back and `patch` (the
   gold patch) reverts the mutation. This is SWE-bench's shape: the agent sees
   the issue and the rest of the suite, the grader runs the hidden tests. (It
   also means the grader's eval script, which needs a test patch, works as is.)
5. The issue is written from the failing test: its code as a reproduction, the
   error pytest printed, the public functions the failing tests exercise.
   Library frames of the traceback are left out: they would point at the bug.
6. A task is kept only after `verify` says the gold patch resolves it and the
   empty patch does not; then it is written as `dest/<instance_id>/task.json`
   with its source, the mutated tree, in `dest/<instance_id>/repo.tar.gz`.

Each task needs its own tree (the base commit differs), so each gets a small
deterministic archive (about 120 KB for more-itertools) rather than a copy.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import email.parser
import gzip
import hashlib
import io
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import tomllib
import zipfile
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from cwm_agent.bench.mutate import BUG_KINDS, OPERATORS, Mutation, find_mutations, mutant
from cwm_agent.bench.mutate import parse as parse_python
from cwm_agent.bench.suites import ContainerRunner, HostRunner, SuiteRun, SuiteRunner, parse_statuses, run_tests
from cwm_agent.bench.tasks import DEFAULT_TEST_COMMAND, TASK_FILE, Task, load_tasks, unpack_archive

ARCHIVE_NAME = "repo.tar.gz"
SUMMARY_FILE = "generation.json"  # next to the task folders; load_tasks ignores it
# Folders that hold neither the library nor its tests.
_NOT_SOURCE_DIRS = {"docs", "doc", "examples", "example", "benchmarks", "scripts", "tools", "build",
                    "dist", "site-packages", "node_modules", "venv", ".venv"}
_TEST_DIRS = {"tests", "test", "testing"}
_NOT_SOURCE_FILES = {"setup.py", "conftest.py", "noxfile.py", "fabfile.py", "tasks.py"}
# A no-op fix for graders that skip empty patches: the tests must still fail with it.
NOOP_PATCH = ("diff --git a/.cwm-noop b/.cwm-noop\nnew file mode 100644\n--- /dev/null\n+++ b/.cwm-noop\n"
              "@@ -0,0 +1 @@\n+no change to the code\n")

Verifier = Callable[[Task, str], bool]  # (task, patch) -> resolved; "" means "no fix"


class GenerateError(RuntimeError):
    """The project cannot be used (no tests, failing suite, download failure...); says what to do."""


@dataclass
class GenerateProgress:
    tried: int  # mutants whose tests have run
    kept: int  # tasks verified so far (the final selection may drop a few, see generate_tasks)
    target: int
    candidates: int  # mutants available in all
    rejected: dict[str, int]  # why mutants were dropped
    message: str  # what just happened, for a log line
    seconds: float


# ---------------------------------------------------------------------------
# The project


@dataclass
class Project:
    root: Path
    name: str
    version: str
    repo: str  # owner/name for the rows
    files: dict[str, bytes]  # every file of the tree, "/"-separated relative paths
    source_files: list[str]
    test_files: list[str]

    @property
    def top(self) -> str:
        """The archive's top folder."""
        return f"{self.name}-{self.version}"


def obtain_source(spec: str | Path, workdir: Path) -> Path:
    """The project tree for `spec`: "pypi:NAME==VERSION", an sdist (.tar.gz/.zip) or a folder."""
    text = str(spec)
    if text.startswith("pypi:"):
        requirement = text[len("pypi:"):]
        download = workdir / "download"
        download.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
             requirement, "-d", str(download)],
            capture_output=True, text=True,
        )
        files = sorted(download.iterdir())
        if done.returncode != 0 or not files:
            raise GenerateError(f"pip could not download the sdist of {requirement}: "
                                f"{done.stderr.strip()[-500:] or 'no file'}; check the name and version, "
                                "or pass a local sdist or folder")
        return _unpack(files[0], workdir / "project")
    path = Path(spec)
    if path.is_dir():
        return path
    if path.is_file():
        return _unpack(path, workdir / "project")
    raise GenerateError(f"{spec}: no such sdist or folder (or use pypi:NAME==VERSION)")


def _unpack(archive: Path, out: Path) -> Path:
    try:
        return unpack_archive(archive, out)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise GenerateError(f"cannot unpack {archive}: {exc}; pass an sdist (.tar.gz or .zip)") from None


def load_project(root: Path) -> Project:
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in ("__pycache__", ".git", ".pytest_cache", ".tox", ".mypy_cache") for part in rel.parts):
            continue
        if path.is_file() and not path.is_symlink() and not path.name.endswith((".pyc", ".pyo")):
            files[rel.as_posix()] = path.read_bytes()
    tests = [p for p in files if _is_test_file(p)]
    sources = [p for p in files if _is_source_file(p)]
    name, version, repo = _metadata(root)
    if not tests:
        raise GenerateError(f"{root}: no test files (test_*.py or *_test.py); the project's tests make the tasks")
    if not sources:
        raise GenerateError(f"{root}: no Python source files outside the tests")
    return Project(root, name, version, repo, files, sources, tests)


def _is_test_file(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    if any(p.startswith(".") or p in _NOT_SOURCE_DIRS for p in parts[:-1]):
        return False
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def _is_source_file(path: str) -> bool:
    parts = path.split("/")
    if not parts[-1].endswith(".py") or parts[-1] in _NOT_SOURCE_FILES or _is_test_file(path):
        return False
    return not any(p.startswith(".") or p in _NOT_SOURCE_DIRS or p in _TEST_DIRS for p in parts[:-1])


def _metadata(root: Path) -> tuple[str, str, str]:
    """(name, version, owner/repo) from PKG-INFO, else pyproject.toml, else the folder's name."""
    name, version, urls = root.name, "0", []
    if (root / "PKG-INFO").is_file():
        info = email.parser.Parser().parsestr((root / "PKG-INFO").read_text(encoding="utf-8", errors="replace"))
        name, version = info.get("Name") or name, info.get("Version") or version
        urls = [info.get("Home-page") or "", *(info.get_all("Project-URL") or [])]
    elif (root / "pyproject.toml").is_file():
        try:
            project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
        except tomllib.TOMLDecodeError:
            project = {}
        name, version = project.get("name") or name, str(project.get("version") or version)
        urls = list((project.get("urls") or {}).values())
    for url in urls:
        match = re.search(r"github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$", url.strip())
        if match:
            return name, version, f"{match.group(1)}/{match.group(2)}"
    return name, version, f"pypi/{name}"


# ---------------------------------------------------------------------------
# Diffs and hidden tests


def unified_diff(path: str, old: str, new: str) -> str:
    """A `git diff`-style patch of one file (with blob ids in its index line, as git writes them)."""
    if old == new:
        return ""
    lines = []
    for line in difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                     f"a/{path}", f"b/{path}", n=3):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    header = f"diff --git a/{path} b/{path}\nindex {_blob_id(old)[:7]}..{_blob_id(new)[:7]} 100644\n"
    return header + "".join(lines)


def _blob_id(text: str) -> str:
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hide_tests(text: str, tests: list[str]) -> str | None:
    """The test file without the functions behind `tests` (node ids' `Class::name` parts).

    A class left without tests goes as a whole. None when a test cannot be found
    (inherited, generated) or when the file would break without it.
    """
    tree = parse_python(text)
    lines = text.splitlines(keepends=True)
    remove: list[tuple[int, int]] = []  # 1-based inclusive line ranges
    removed_names: set[str] = set()
    wanted: dict[str | None, set[str]] = defaultdict(set)
    for test in tests:
        parts = test.split("::")[1:]
        name = parts[-1].split("[", 1)[0]
        if len(parts) == 1:
            wanted[None].add(name)
        elif len(parts) == 2:
            wanted[parts[0]].add(name)
        else:
            return None  # nested classes: leave it visible rather than guess
    top = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for cls, names in wanted.items():
        if cls is None:
            for name in names:
                if not isinstance(top.get(name), (ast.FunctionDef, ast.AsyncFunctionDef)):
                    return None
                remove.append(_def_lines(top[name]))
                removed_names.add(name)
            continue
        node = top.get(cls)
        if not isinstance(node, ast.ClassDef):
            return None
        methods = {m.name: m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if not names <= methods.keys():
            return None  # inherited from a base class
        left = [s for s in node.body if not (isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name in names)]
        if not any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name.startswith("test") for s in left):
            if _referenced(tree, cls):
                return None
            remove.append(_def_lines(node))
            removed_names.add(cls)
        else:
            remove.extend(_def_lines(methods[name]) for name in names)
    if any(_referenced(tree, name) for name in removed_names):
        return None
    drop: set[int] = set()
    for first, last in remove:
        while first > 1 and lines[first - 2].lstrip().startswith("#"):
            first -= 1  # the comment that introduces the test goes with it
        drop.update(range(first, last + 1))
        # The blank lines before it go too (or, for the first in its block, those after),
        # so the spacing between what is left stays as it was.
        before, after = first - 1, last + 1
        while before >= 1 and not lines[before - 1].strip():
            drop.add(before)
            before -= 1
        if before == first - 1:
            while after <= len(lines) and not lines[after - 1].strip():
                drop.add(after)
                after += 1
    kept: list[str] = []
    for number, line in enumerate(lines, 1):
        opener = kept[-1].split("#", 1)[0].rstrip().endswith(":") if kept else False
        after_cut = opener and not line.strip() and number - 1 in drop  # no blank line after "class T:"
        if number not in drop and not after_cut:
            kept.append(line)
    hidden = "".join(kept)
    try:
        parse_python(hidden)
    except SyntaxError:
        return None
    return hidden


def _def_lines(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> tuple[int, int]:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return first, node.end_lineno or node.lineno


def _referenced(tree: ast.Module, name: str) -> bool:
    """Whether `name` is used anywhere other than its own definition (a base class, an alias...)."""
    return any(isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
               for node in ast.walk(tree))


# ---------------------------------------------------------------------------
# Writing the issue

_SECTION = re.compile(r"^_+ (.+?) _+$", re.M)  # "____ T.test_x ____"; one "_" when the name is long
_FRAME = re.compile(r"^(\S+?):(\d+): in (\S+)$")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")  # object ids differ from run to run
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Iteration|Warning))\b")

_TEMPLATES = (
    "{title}\n\nI'm on {project} {version} with Python 3.11 and {subject} {does} not behave as "
    "documented. This reproduces it (adapted from the project's tests):\n\n{code}It fails with:\n\n"
    "```\n{error}\n```\n\n{more}I expected this to pass.\n",
    "{title}\n\nSomething is off with {subject} in {project} {version}.\n\nSteps to reproduce:\n\n"
    "{code}Actual outcome:\n\n```\n{error}\n```\n\nExpected outcome: no error; the check above "
    "should pass.\n\n{more}",
    "{title}\n\nOur CI started failing in code that uses {subject} ({project} {version}, "
    "Python 3.11). Minimal example:\n\n{code}```\n{error}\n```\n\n{more}Could you take a look?\n",
)


def public_names(project: Project) -> dict[str, str]:
    """Public module-level names of the library -> "function" or "class"."""
    names: dict[str, str] = {}
    for path in project.source_files:
        try:
            tree = parse_python(project.files[path].decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.setdefault(node.name, "class" if isinstance(node, ast.ClassDef) else "function")
    return names


def involved_names(tests: list[str], names: dict[str, str], fallback: str) -> list[str]:
    """The public names the failing tests are about, most-tested first (at most three)."""
    by_key = {name.lower().replace("_", ""): name for name in names}
    counts: Counter[str] = Counter()
    for test in tests:
        parts = test.split("::")[1:]
        found = None
        if len(parts) > 1:
            key = re.sub(r"^Test|Tests?$", "", parts[0]).lower()
            found = by_key.get(key)
        if found is None:
            rest = parts[-1].split("[", 1)[0].removeprefix("test_")
            matches = [n for n in names if rest == n or rest.startswith(n + "_")]
            found = max(matches, key=len) if matches else None
        if found:
            counts[found] += 1
    ranked = [name for name, _ in counts.most_common(3)]
    if not ranked and fallback in names:
        ranked = [fallback]
    return ranked


def failure_sections(output: str) -> dict[str, str]:
    """Section title ("Class.test_name") -> its text, from pytest's FAILURES block."""
    block = output.split("= FAILURES =", 1)
    if len(block) < 2:
        return {}
    body = re.split(r"^=+ .* =+$", block[1].split("\n", 1)[-1], maxsplit=1, flags=re.M)[0]
    parts = _SECTION.split(body)
    sections: dict[str, str] = {}
    for title, text in zip(parts[1::2], parts[2::2]):
        sections.setdefault(title.strip(), text)
    return sections


def _section_for(test: str, sections: dict[str, str]) -> str | None:
    title = ".".join(test.split("::")[1:])
    for key, text in sections.items():
        if key == title or key.startswith(title + " "):  # "T.test_a (i=0)": a subtest
            return text
    return None


def error_excerpt(section: str, test_file: str, *, max_lines: int = 16) -> tuple[str, list[str], int | None]:
    """(the error lines, the test's own traceback lines, the line of `test_file` that failed) of
    one failure. Library frames are dropped: they would show the buggy line."""
    error, frames = [], []
    failed_line = None
    keep = False
    for line in section.splitlines():
        frame = _FRAME.match(line)
        if frame:
            keep = frame.group(1) == test_file
            if keep:
                failed_line = int(frame.group(2))
            continue
        if line.startswith("E ") or line == "E":
            error.append(_ADDRESS.sub("0x...", line[4:200]))  # "E   message", its own indentation kept
        elif keep and line.strip():
            frames.append(line.strip())
    if len(error) > max_lines:
        error = error[:max_lines] + ["..."]
    return "\n".join(error).strip("\n"), frames, failed_line


def failing_test_source(text: str, test: str, *, upto: int | None = None, max_lines: int = 40) -> str | None:
    """The source of the test function behind a node id, dedented; a long one is cut after the
    line `upto` that failed (and shortened from the top). None when not found."""
    parts = [p.split("[", 1)[0] for p in test.split("::")[1:]]
    nodes: list[ast.stmt] = parse_python(text).body
    found = None
    for part in parts:
        found = next((n for n in nodes if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.name == part), None)
        if found is None:
            return None
        nodes = found.body
    if not isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    all_lines = text.splitlines()
    first, last = found.lineno, found.end_lineno or found.lineno
    if last - first + 1 > max_lines:
        if upto is None or not first < upto <= last:
            return None
        last = upto
    lines = all_lines[first - 1:last]
    if len(lines) > max_lines:
        body = all_lines[found.body[0].lineno - 1]
        indent = body[:len(body) - len(body.lstrip())]
        lines = [lines[0], f"{indent}...", *lines[-(max_lines - 2):]]
    return textwrap.dedent("\n".join(lines))


def write_issue(project: Project, mutation: Mutation, f2p: list[str], output: str, names: dict[str, str],
                rng: random.Random) -> str:
    """A user's report of the failure: what they ran (a failing test's code), what they got."""
    involved = involved_names(f2p, names, mutation.top_level)
    shown = [f"`{n}()`" if names.get(n) == "function" else f"`{n}`" for n in involved]
    if not shown:
        module = mutation.path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        shown = [f"`{module}`"]
    subject = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    sections = failure_sections(output)
    first = next((t for t in f2p if _section_for(t, sections) is not None), f2p[0])
    test_file = first.split("::")[0]
    error, frames, failed_line = error_excerpt(_section_for(first, sections) or "", test_file)
    source = failing_test_source(project.files[test_file].decode("utf-8"), first, upto=failed_line)
    code_text = source or "\n".join(frames)
    code = f"```python\n{code_text}\n```\n\n" if code_text else ""
    exception = _EXCEPTION.match(error.splitlines()[0] if error else "")
    plural = len(shown) > 1
    if exception and exception.group(1) != "AssertionError":
        title = f"{subject} {'raise' if plural else 'raises'} {exception.group(1).rsplit('.', 1)[-1]}"
    elif exception or error.startswith("assert"):
        title = f"{subject} {'return' if plural else 'returns'} wrong results"
    else:
        title = f"{subject} {'misbehave' if plural else 'misbehaves'}"
    others = len(f2p) - 1
    more = (f"{others} other check{'s' if others > 1 else ''} of {subject} fail{'' if others > 1 else 's'} "
            "in the same way.\n\n") if others else ""
    template = rng.choice(_TEMPLATES)
    return template.format(title=title, subject=subject, project=project.name, version=project.version,
                           does="do" if plural else "does", code=code, error=error or "(no error message)",
                           more=more)


# ---------------------------------------------------------------------------
# Verification


def local_verify(python: str | None = None, timeout: float = 600.0) -> Verifier:
    """A verifier that grades on this machine: check the task out, apply the test patch and the
    patch, run the task's tests with `python` and judge as SWE-bench does."""
    from cwm_agent.bench.grade import F2P_OK, P2P_OK  # SWE-bench's passing statuses

    python = python or sys.executable

    def verify(task: Task, patch: str) -> bool:
        with tempfile.TemporaryDirectory(prefix="cwm-verify-") as tmp:
            repo = Path(tmp) / "repo"
            task.checkout(repo)
            for diff in (task.test_patch, patch):
                if diff.strip() and not _git_apply(repo, diff):
                    return False
            run = run_tests(repo, task.test_files, python=python, timeout=timeout)
        if run.exit_code is None:
            return False
        return (all(run.statuses.get(t) in F2P_OK for t in task.FAIL_TO_PASS)
                and all(run.statuses.get(t) in P2P_OK for t in task.PASS_TO_PASS))

    return verify


def docker_verify(timeout: float = 300.0) -> Verifier:
    """A verifier that uses the project's grader (cwm_agent.bench.grade): a fresh sandbox container per
    run, as `cwm-agent grade` does. "No fix" is graded as NOOP_PATCH, since the grader counts an
    empty patch unresolved without running anything."""
    from cwm_agent.bench.grade import grade_task

    def verify(task: Task, patch: str) -> bool:
        result = grade_task(task, patch or NOOP_PATCH, timeout=timeout)
        if result.status in ("error", "invalid", "patch_failed"):
            raise GenerateError(f"grading {task.instance_id} failed ({result.status}): {result.detail}")
        return result.resolved

    return verify


def _docker_ready() -> bool:
    """The engine answers and the sandbox image is there."""
    from cwm_agent.sandbox.base import DockerUnavailable
    from cwm_agent.sandbox.docker import docker_client
    from cwm_agent.sandbox.image import default_image, image_exists

    try:
        client = docker_client(timeout=10)
    except DockerUnavailable:
        return False
    try:
        return image_exists(client, default_image())
    except Exception:  # the engine failed mid-check: not ready either
        return False
    finally:
        client.close()


def _git_apply(repo: Path, diff: str) -> bool:
    done = subprocess.run(["git", "apply", "-"], cwd=repo, input=diff, text=True, capture_output=True,
                          env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull})
    return done.returncode == 0


# ---------------------------------------------------------------------------
# The pipeline


@dataclass
class _Candidate:
    index: int
    mutation: Mutation
    group: str  # "path:top-level name": the per-function cap counts these


@dataclass
class _Outcome:
    candidate: _Candidate
    reason: str  # "kept" or why not
    folder: Path | None = None
    detail: str = ""
    seconds: float = 0.0


def order_candidates(mutations: list[Mutation], seed: int) -> list[_Candidate]:
    """Shuffle with the seed; every function gets one turn before any gets a second, and each
    turn goes to the kind of bug used least so far, so that no kind crowds out the others."""
    rng = random.Random(seed)
    groups: dict[str, dict[str, list[Mutation]]] = defaultdict(lambda: defaultdict(list))
    for m in mutations:
        groups[f"{m.path}:{m.top_level}"][m.operator].append(m)
    keys = sorted(groups)
    rng.shuffle(keys)
    for key in keys:
        for family in groups[key].values():
            rng.shuffle(family)
    tie_break = list(OPERATORS)
    rng.shuffle(tie_break)
    used: Counter[str] = Counter()
    ordered: list[_Candidate] = []
    while any(groups[k] for k in keys):
        for key in keys:
            families = groups[key]
            if not families:
                continue
            operator = min(families, key=lambda op: (used[op], tie_break.index(op)))
            used[operator] += 1
            ordered.append(_Candidate(len(ordered), families[operator].pop(), key))
            if not families[operator]:
                del families[operator]
    return ordered


def _instance_id(project: Project, m: Mutation) -> str:
    digest = hashlib.sha1(f"{project.top}:{m.path}:{m.start}:{m.end}:{m.replacement}".encode()).hexdigest()[:6]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", project.name)
    # "_ichunk.__init__" -> "ichunk.init": underscores at the edges only blur the "__" separators
    function = ".".join(part.strip("_") or part for part in m.function.split("."))
    function = re.sub(r"[^A-Za-z0-9_.-]+", "-", function).strip(".-") or "module"
    return f"{name}__{function}__{m.operator}__{digest}"


def write_archive(files: dict[str, bytes], top: str, out: Path) -> None:
    """A deterministic .tar.gz of `files` under `top/` (sorted, no dates, no owners)."""
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs: set[str] = set()
            for path in sorted(files):
                parts = path.split("/")
                for depth in range(1, len(parts)):
                    folder = "/".join(parts[:depth])
                    if folder not in dirs:
                        dirs.add(folder)
                        info = tarfile.TarInfo(f"{top}/{folder}")
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                info = tarfile.TarInfo(f"{top}/{path}")
                info.size, info.mode = len(files[path]), 0o644
                tar.addfile(info, io.BytesIO(files[path]))


class _Generator:
    def __init__(self, project: Project, staging: Path, *, runner: SuiteRunner, timeout: float,
                 verify: Verifier, seed: int, baseline: list[str], baseline_seconds: float,
                 workspaces: queue.Queue[Path]) -> None:
        self.project, self.staging = project, staging
        self.runner, self.timeout, self.verify, self.seed = runner, timeout, verify, seed
        self.baseline = baseline
        self.slow = min(timeout, 4 * baseline_seconds + 5)
        self.workspaces = workspaces
        self.names = public_names(project)
        self.test_texts = {p: project.files[p].decode("utf-8") for p in project.test_files}

    def evaluate(self, candidate: _Candidate) -> _Outcome:
        started = time.monotonic()
        outcome = self._evaluate(candidate)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _evaluate(self, candidate: _Candidate) -> _Outcome:
        m = candidate.mutation
        original = self.project.files[m.path].decode("utf-8")
        text = mutant(original, m)
        if text is None:
            return _Outcome(candidate, "invalid syntax")
        run = self._run_mutant(m, text)
        if isinstance(run, str):
            return _Outcome(candidate, run)
        failing = [t for t in self.baseline if run.statuses.get(t) != "PASSED"]
        if any(t not in run.statuses for t in failing):
            return _Outcome(candidate, "tests vanished")
        f2p = [t for t in failing if not re.search(r"\s", t)]
        if not f2p:
            return _Outcome(candidate, "survived")
        test_files = sorted({t.split("::")[0] for t in f2p})
        p2p = [t for t in self.baseline if t.split("::")[0] in test_files and t not in failing
               and not re.search(r"\s", t)]
        files = dict(self.project.files)
        files[m.path] = text.encode("utf-8")
        test_patch = ""
        for path in test_files:
            hidden = hide_tests(self.test_texts[path], [t for t in f2p if t.startswith(path + "::")])
            if hidden is None:
                return _Outcome(candidate, "tests not hideable")
            files[path] = hidden.encode("utf-8")
            test_patch += unified_diff(path, hidden, self.test_texts[path])
        rng = random.Random(f"{self.seed}:{m.path}:{m.start}:{m.replacement}")
        instance_id = _instance_id(self.project, m)
        row = {
            "instance_id": instance_id,
            "repo": self.project.repo,
            "base_commit": "",
            "problem_statement": write_issue(self.project, m, f2p, run.output, self.names, rng),
            "patch": unified_diff(m.path, text, original),
            "test_patch": test_patch,
            "FAIL_TO_PASS": f2p,
            "PASS_TO_PASS": p2p,
            "version": self.project.version,
            "environment_setup_commit": "",
            "hints_text": "",
            "created_at": "",
            "source": ARCHIVE_NAME,
            "test_command": DEFAULT_TEST_COMMAND,
            "test_files": test_files,
            "bug_kind": BUG_KINDS[m.operator],
            "mutation": {"operator": m.operator, "path": m.path, "line": m.line, "function": m.function,
                         "original": m.original, "replacement": m.replacement, "description": m.description},
            "generator": {"tool": "cwm-agent tasks generate", "source": f"{self.project.name}=={self.project.version}",
                          "seed": self.seed},
        }
        folder = self.staging / instance_id
        folder.mkdir(parents=True)
        write_archive(files, self.project.top, folder / ARCHIVE_NAME)
        row_file = folder / TASK_FILE
        with tempfile.TemporaryDirectory(prefix="cwm-gen-") as tmp:
            probe = Task(**{k: v for k, v in row.items() if k not in ("bug_kind", "mutation", "generator")},
                         path=row_file)
            row["base_commit"] = row["environment_setup_commit"] = probe.checkout(Path(tmp) / "repo")
        row_file.write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (task,) = load_tasks(folder)
        try:
            if not self.verify(task, task.patch):
                return _Outcome(candidate, "gold patch does not resolve", folder)
            if self.verify(task, ""):
                return _Outcome(candidate, "resolved without a fix", folder)
        except GenerateError as exc:
            return _Outcome(candidate, "grading error", folder, detail=str(exc))
        return _Outcome(candidate, "kept", folder)

    def _run_mutant(self, m: Mutation, text: str) -> SuiteRun | str:
        workspace = self.workspaces.get()
        target = workspace / m.path
        try:
            target.write_text(text, encoding="utf-8")
            word = re.compile(rf"\b{re.escape(m.top_level)}\b")
            near = [p for p in self.project.test_files if word.search(self.test_texts[p])]
            if near and len(near) < len(self.project.test_files):
                # Cheap first look: a mutant the nearby tests miss is dropped without the full run.
                quick = self.runner.run(workspace, near, timeout=self.timeout, extra=("-x",))
                if quick.exit_code is None:
                    return "timeout"
                if quick.exit_code == 0:
                    return "survived"
            run = self.runner.run(workspace, self.project.test_files, timeout=self.timeout)
        finally:
            target.write_bytes(self.project.files[m.path])
            self.workspaces.put(workspace)
        if run.exit_code is None:
            return "timeout"
        if run.collection_failed:
            return "broke test collection"
        # A mutant that eats memory until the limit stops it (an endless list()) or slows the
        # suite down a lot makes a task that is slow and risky to grade: a grader may set no limit.
        if "MemoryError" in run.output:
            return "runs out of memory"
        if run.seconds > self.slow:
            return "too slow"
        return run


def generate_tasks(
    source: str | Path,
    dest: Path,
    *,
    count: int = 50,
    seed: int = 0,
    jobs: int = 2,
    timeout_per_mutant: float = 60.0,
    max_per_function: int = 1,
    verify: Literal["auto", "local", "docker"] | Verifier = "auto",
    python: str | None = None,
    progress: Callable[[GenerateProgress], None] | None = None,
) -> list[Path]:
    """Generate up to `count` verified tasks from `source` into `dest`; return their folders.

    source: "pypi:NAME==VERSION" (downloaded with pip), an sdist (.tar.gz/.zip) or a folder.
    dest: a new or empty folder; each task becomes dest/<instance_id>/ (task.json + repo.tar.gz),
      loadable with `load_tasks(dest)`; dest/generation.json records what was tried.
    jobs: mutants tested at once. timeout_per_mutant: cap in seconds on one test run (the
      effective limit is 6x the baseline run, at least 20 s, at most this). Mutants that slow
      the suite past 4x the baseline (+5 s) or exhaust the 4 GiB memory limit are dropped.
    max_per_function: tasks per module-level function or class, for variety.
    verify: who checks that the gold patch resolves a task and no fix does not: "docker" (the
      project's grader, cwm_agent.bench.grade, in the sandbox image), "local" (this machine's
      `python`), "auto" (docker when the engine and image are there), or a callable
      (task, patch) -> resolved, where patch "" means "no fix".
    python: the interpreter that runs the project's tests, on this host (it needs pytest). Default:
      with docker verification, the sandbox image's python3 inside a container (no network, memory
      and processes capped: mutants are unreviewed code); otherwise this interpreter.
    The same source, seed and count give the same tasks (barring timeouts on a loaded machine).
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise GenerateError(f"{dest} is not empty; give a new or empty folder for the tasks")
    if count < 1 or jobs < 1:
        raise GenerateError("count and jobs must be at least 1")
    started = time.monotonic()
    if verify == "auto":
        verify = "docker" if _docker_ready() else "local"
    verifier = _pick_verifier(verify, python or sys.executable, timeout_per_mutant)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cwm-generate-") as tmp_name, _runner(python, verify, tmp_name) as runner:
        tmp = Path(tmp_name)
        project = load_project(obtain_source(source, tmp))
        baseline, baseline_seconds = _baseline(project, tmp, runner, timeout_per_mutant)
        timeout = min(timeout_per_mutant, max(20.0, 6 * baseline_seconds))
        mutations = [m for path in project.source_files
                     for m in find_mutations(project.files[path].decode("utf-8", "replace"), path)]
        candidates = order_candidates(mutations, seed)
        workspaces: queue.Queue[Path] = queue.Queue()
        for n in range(jobs):
            shutil.copytree(project.root, tmp / f"work{n}", ignore=shutil.ignore_patterns("__pycache__", ".git"))
            workspaces.put(tmp / f"work{n}")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
        generator = _Generator(project, staging, runner=runner, timeout=timeout, verify=verifier,
                               seed=seed, baseline=baseline, baseline_seconds=baseline_seconds,
                               workspaces=workspaces)
        try:
            outcomes = _schedule(generator, candidates, count, jobs, max_per_function, started, progress)
            chosen = _select(outcomes, count, max_per_function)
            folders = []
            for outcome in chosen:
                assert outcome.folder is not None
                folders.append(Path(shutil.move(str(outcome.folder), dest / outcome.folder.name)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    reasons = Counter(o.reason for o in outcomes.values())
    summary = {
        "source": str(source), "project": project.name, "version": project.version, "seed": seed,
        "count": count, "jobs": jobs, "tests_run_with": str(runner),
        "verify": verify if isinstance(verify, str) else "custom",
        "baseline_tests": len(baseline), "baseline_seconds": round(baseline_seconds, 2),
        "timeout_per_run": round(timeout, 1), "candidates": len(candidates), "tried": len(outcomes),
        "kept": len(folders), "outcomes": dict(sorted(reasons.items())),
        "by_operator": dict(Counter(o.candidate.mutation.operator for o in chosen)),
        "seconds": round(time.monotonic() - started, 1),
        "tasks": sorted(f.name for f in folders),
    }
    (dest / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return sorted(folders)


def _pick_verifier(verify: str | Verifier, python: str, timeout: float) -> Verifier:
    if callable(verify):
        return verify
    if verify == "local":
        return local_verify(python, timeout=max(timeout, 120.0))
    if verify == "docker":
        if not _docker_ready():
            raise GenerateError("verify='docker' needs the Docker engine and the sandbox image: start the "
                                "engine (bash scripts/install-docker.sh) and run `cwm-agent doctor`, "
                                "or use verify='local'")
        return docker_verify()
    raise GenerateError(f"verify must be 'auto', 'local', 'docker' or a callable, not {verify!r}")


@contextlib.contextmanager
def _runner(python: str | None, verify: str | Verifier, scratch: str) -> Iterator[SuiteRunner]:
    """Where the suites run: see generate_tasks's `python`."""
    if python is None and verify == "docker":
        from cwm_agent.bench import grade
        from cwm_agent.sandbox.image import default_image

        runner: SuiteRunner = ContainerRunner(grade._docker_client(), default_image(), Path(scratch))
    else:
        runner = HostRunner(python or sys.executable)
    try:
        yield runner
    finally:
        runner.close()


def _baseline(project: Project, tmp: Path, runner: SuiteRunner, timeout: float) -> tuple[list[str], float]:
    """The tests that pass in two runs of the untouched project, in the suite's order."""
    work = tmp / "baseline"
    shutil.copytree(project.root, work, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    runs = [runner.run(work, project.test_files, timeout=max(timeout, 600.0)) for _ in range(2)]
    first, second = runs
    if first.exit_code is None or first.collection_failed:
        tail = "\n".join(first.output.strip().splitlines()[-15:])
        raise GenerateError(f"the project's test suite does not run cleanly with {runner}:\n{tail}\n"
                            "install what it needs into a Python and pass it (python=..., or --python)")
    passing = [t for t, s in first.statuses.items() if s == "PASSED" and second.statuses.get(t) == "PASSED"]
    if not passing:
        raise GenerateError(f"no test of {project.name} passes with {runner}; nothing to break")
    return passing, max(r.seconds for r in runs)


def _schedule(generator: _Generator, candidates: list[_Candidate], count: int, jobs: int, cap: int,
              started: float, progress: Callable[[GenerateProgress], None] | None) -> dict[int, _Outcome]:
    """Run candidates in order, `jobs` at a time, until the first `count` selectable ones are known."""
    outcomes: dict[int, _Outcome] = {}
    running: dict[Future[_Outcome], _Candidate] = {}
    kept_per_group: Counter[str] = Counter()
    position = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            while len(running) < jobs and position < len(candidates) and not _enough(outcomes, count, cap):
                candidate = candidates[position]
                position += 1
                if kept_per_group[candidate.group] >= cap:
                    continue  # earlier mutants of this function already made its tasks
                running[pool.submit(generator.evaluate, candidate)] = candidate
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                candidate = running.pop(future)
                outcome = future.result()
                outcomes[candidate.index] = outcome
                if outcome.reason == "kept":
                    kept_per_group[candidate.group] += 1
                elif outcome.folder is not None:
                    shutil.rmtree(outcome.folder, ignore_errors=True)
                if progress:
                    reasons = Counter(o.reason for o in outcomes.values())
                    kept = reasons.pop("kept", 0)
                    progress(GenerateProgress(
                        tried=len(outcomes), kept=kept, target=count, candidates=len(candidates),
                        rejected=dict(reasons), seconds=time.monotonic() - started,
                        message=f"{outcome.reason}: {candidate.mutation.description} ({outcome.seconds:.1f} s)"
                                + (f"; {outcome.detail}" if outcome.detail else ""),
                    ))
    return outcomes


def _select(outcomes: dict[int, _Outcome], count: int, cap: int) -> list[_Outcome]:
    """The first `count` kept outcomes in candidate order, at most `cap` per function."""
    chosen: list[_Outcome] = []
    per_group: Counter[str] = Counter()
    for index in sorted(outcomes):
        outcome = outcomes[index]
        if outcome.reason != "kept" or per_group[outcome.candidate.group] >= cap:
            continue
        per_group[outcome.candidate.group] += 1
        chosen.append(outcome)
        if len(chosen) == count:
            break
    return chosen


def _enough(outcomes: dict[int, _Outcome], count: int, cap: int) -> bool:
    """Whether to stop submitting. Candidates are submitted in order, so the mutants still
    running all come before any not yet started: letting them finish settles the selection."""
    return len(_select(outcomes, count, cap)) >= count


__all__ = [
    "GenerateError", "GenerateProgress", "NOOP_PATCH", "Project", "SuiteRun", "Verifier", "docker_verify",
    "generate_tasks", "hide_tests", "load_project", "local_verify", "obtain_source", "order_candidates",
    "parse_statuses", "run_tests", "unified_diff", "write_issue",
]
