"""Task generation: the mutation operators, and real generation runs checked by real test runs."""

from __future__ import annotations

import ast
import difflib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cwm_agent.bench.generate import (
    GenerateError,
    failing_test_source,
    hide_tests,
    generate_tasks,
    order_candidates,
    parse_statuses,
    unified_diff,
)
from cwm_agent.bench.mutate import OPERATORS, Mutation, find_mutations, mutant
from cwm_agent.bench.tasks import load_tasks

# --- mutation operators ----------------------------------------------------------------

SAMPLE = textwrap.dedent('''\
    """A module docstring is never mutated."""

    LIMIT = 10  # module level: no function to report against, never mutated


    def window(items, size=2, *, strict=False):
        """Windows of the items."""
        if size < 1 or not items:
            raise ValueError("size must be positive")
        out = []
        for i in range(len(items) - size + 1):
            out.append(items[i:i + size])
        total = len(out) * 2
        if strict:
            total += 1
        else:
            total -= 1
        label = "big" if total > LIMIT else ""
        return out if label is not None else f"{size + 1}"
''')


def mutations_of(source: str, operator: str | None = None) -> list[Mutation]:
    found = find_mutations(source, "pkg/mod.py")
    return [m for m in found if operator is None or m.operator == operator]


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_every_mutation_is_valid_python_and_changes_only_its_span():
    found = mutations_of(SAMPLE)
    assert {m.operator for m in found} == set(OPERATORS)
    for m in found:
        text = mutant(SAMPLE, m)
        assert text is not None, m.description
        assert text != SAMPLE
        data, new = SAMPLE.encode(), text.encode()
        assert new[:m.start] == data[:m.start] and new[m.start + len(m.replacement.encode()):] == data[m.end:]
        assert m.function == "window" and m.path == "pkg/mod.py"


def test_nothing_outside_functions_docstrings_or_fstrings_is_mutated():
    fstring = SAMPLE.index('f"{size + 1}"')
    for m in mutations_of(SAMPLE):
        assert m.line >= 6, m.description  # LIMIT = 10 and the module docstring stay
        assert "Windows of the items" not in m.original
        assert not fstring <= m.start < fstring + len('f"{size + 1}"'), m.description


@pytest.mark.parametrize("operator, original, replacement", [
    ("flip_compare", "<", "<="),
    ("flip_compare", ">", ">="),
    ("flip_compare", "is not", "is"),
    ("flip_operator", "*", "//"),
    ("flip_operator", "+=", "-="),
    ("flip_boolean", "or", "and"),
    ("flip_boolean", "not ", ""),
    ("change_constant", "False", "True"),
    ("change_constant", '""', '"x"'),
    ("change_constant", "2", "3"),
    ("off_by_one", "len(items) - size + 1", "len(items) - size + 1 + 1"),
    ("off_by_one", "i + size", "i + size - 1"),
])
def test_token_mutations_change_one_line_minimally(operator, original, replacement):
    candidates = [m for m in mutations_of(SAMPLE, operator)
                  if m.original == original and m.replacement == replacement]
    if operator == "off_by_one" and not candidates:  # `a - b + 1` is changed at its constant
        candidates = [m for m in mutations_of(SAMPLE, operator) if m.replacement in ("2", "0")]
    assert candidates, [(m.original, m.replacement) for m in mutations_of(SAMPLE, operator)]
    m = candidates[0]
    diff = changed_lines(SAMPLE, mutant(SAMPLE, m))
    assert len(diff) == 2, diff  # one line out, one line in
    removed, added = diff[0][1:], diff[1][1:]
    assert removed.replace(m.original, m.replacement, 1) == added


def test_off_by_one_on_slices_and_range():
    found = {(m.original, m.replacement) for m in mutations_of(SAMPLE, "off_by_one")}
    assert ("1", "2") in found and ("1", "0") in found  # range(len(items) - size + 1)
    assert ("i", "i + 1") in found and ("i", "i - 1") in found  # items[i:...]
    assert ("size", "size + 1") not in {(m.original, m.replacement) for m in mutations_of(SAMPLE, "change_constant")}


def test_drop_statement_keeps_docstrings_and_sole_statements():
    source = textwrap.dedent('''\
        def f(x):
            """Doc."""
            return x

        def g(x):
            y = x + 1
            if y:
                return y
            return 0
    ''')
    dropped = [m for m in mutations_of(source, "drop_statement")]
    assert {m.original.strip() for m in dropped} == {"y = x + 1", "return 0"} | {
        m.original.strip() for m in dropped if m.original.startswith("    if y:")}
    assert all(m.function == "g" for m in dropped)  # f's body is a docstring and one statement
    for m in dropped:
        text = mutant(source, m)
        assert text is not None and len(text.splitlines()) < len(source.splitlines())
        assert m.replacement == "" and m.original.endswith("\n")  # whole lines go


def test_swap_branches_if_else_and_conditional_expression():
    swaps = mutations_of(SAMPLE, "swap_branches")
    blocks = [m for m in swaps if "else:" in m.original]
    assert len(blocks) == 1
    text = mutant(SAMPLE, blocks[0])
    assert "    if strict:\n        total -= 1\n    else:\n        total += 1\n" in text
    inline = [m for m in swaps if "if total > LIMIT" in m.original]
    assert inline and inline[0].replacement == '"" if total > LIMIT else "big"'


def test_elif_chains_swap_only_their_last_pair():
    source = textwrap.dedent('''\
        def sign(x):
            if x > 0:
                return 1
            elif x < 0:
                return -1
            else:
                return 0
    ''')
    (swap,) = mutations_of(source, "swap_branches")
    assert "return 0" in swap.replacement.split("else:")[0]
    assert ast.parse(mutant(source, swap))


def test_positions_count_utf8_bytes():
    source = 'def f(s):\n    return "héllo wörld" + s if s < "é" else s\n'
    found = mutations_of(source)
    assert found
    for m in found:
        text = mutant(source, m)
        assert text is not None
        assert text.count("héllo wörld") == 1
    flips = [m for m in found if m.operator == "flip_compare"]
    assert mutant(source, flips[0]) == source.replace('s < "é"', 's <= "é"')


def test_mutations_are_deterministic_and_ordered_fairly():
    first = order_candidates(mutations_of(SAMPLE), seed=3)
    again = order_candidates(mutations_of(SAMPLE), seed=3)
    other = order_candidates(mutations_of(SAMPLE), seed=4)
    assert [c.mutation for c in first] == [c.mutation for c in again]
    assert [c.mutation for c in first] != [c.mutation for c in other]
    assert len(first) == len(mutations_of(SAMPLE))
    assert {c.mutation for c in first} == set(mutations_of(SAMPLE))  # nothing lost, nothing twice
    head = [c.mutation.operator for c in first[:len(OPERATORS)]]
    assert len(set(head)) == len(OPERATORS)  # every kind of bug gets a turn first


# --- helpers -----------------------------------------------------------------------------


def test_parse_statuses_counts_a_failed_subtest_as_a_failed_test():
    output = textwrap.dedent("""\
        PASSED tests/t.py::T::test_a
        SUBFAILED(x=Fraction(2, 3)) tests/t.py::T::test_a - AssertionError
        PASSED tests/t.py::test_b
        SKIPPED [1] tests/t.py:9: not here
        FAILED tests/t.py::test_c[1] - assert 1 == 2
    """)
    assert parse_statuses(output) == {
        "tests/t.py::T::test_a": "FAILED", "tests/t.py::test_b": "PASSED", "tests/t.py::test_c[1]": "FAILED"}


def test_hide_tests_removes_the_failing_tests_and_test_patch_restores_them(tmp_path):
    original = textwrap.dedent('''\
        import unittest


        def test_kept():
            assert True


        # the one that fails
        def test_gone():
            assert False


        class AllGone(unittest.TestCase):
            def test_x(self):
                pass


        class Partly(unittest.TestCase):
            def test_y(self):
                pass

            def test_z(self):
                pass
    ''')
    hidden = hide_tests(original, ["tests/t.py::test_gone", "tests/t.py::AllGone::test_x",
                                   "tests/t.py::Partly::test_y"])
    assert hidden is not None
    assert "test_gone" not in hidden and "the one that fails" not in hidden and "AllGone" not in hidden
    assert "def test_kept" in hidden and "def test_z" in hidden and "test_y" not in hidden
    ast.parse(hidden)
    # The test patch, applied with git, gives back the original file byte for byte.
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text(hidden)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    patch = unified_diff("tests/t.py", hidden, original)
    subprocess.run(["git", "apply", "-"], cwd=tmp_path, input=patch, text=True, check=True)
    assert (tmp_path / "tests" / "t.py").read_text() == original
    # A test that is not defined in the file itself cannot be hidden.
    assert hide_tests(original, ["tests/t.py::Inherited::test_q"]) is None


# --- generation end to end ------------------------------------------------------------------

TINY = {
    "pyproject.toml": '[project]\nname = "tinycalc"\nversion = "0.1.0"\n\n'
                      '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "tinycalc/__init__.py": "from .core import chunks, clamp, mean\nfrom .text import initials, shout\n",
    "tinycalc/core.py": textwrap.dedent('''\
        def clamp(value, low, high):
            """Value limited to [low, high]."""
            if low > high:
                raise ValueError("low must not exceed high")
            if value < low:
                return low
            if value > high:
                return high
            return value


        def mean(values):
            values = list(values)
            if not values:
                raise ValueError("mean of nothing")
            return sum(values) / len(values)


        def chunks(items, size):
            if size < 1:
                raise ValueError("size must be positive")
            return [items[i:i + size] for i in range(0, len(items), size)]
    '''),
    "tinycalc/text.py": textwrap.dedent('''\
        def shout(text, excited=True):
            text = text.upper()
            if excited:
                return text + "!"
            else:
                return text + "."


        def initials(name):
            parts = name.split()
            return "".join(p[0] for p in parts if p).upper()
    '''),
    "tests/test_core.py": textwrap.dedent('''\
        import pytest

        from tinycalc import chunks, clamp, mean


        def test_clamp_inside():
            assert clamp(5, 1, 10) == 5


        def test_clamp_edges():
            assert clamp(-3, 0, 4) == 0
            assert clamp(9, 0, 4) == 4
            assert clamp(4, 0, 4) == 4


        def test_clamp_bad_bounds():
            with pytest.raises(ValueError):
                clamp(1, 5, 2)


        def test_mean():
            assert mean([1, 2, 3, 6]) == 3


        def test_mean_empty():
            with pytest.raises(ValueError):
                mean([])


        def test_chunks():
            assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


        def test_chunks_size_one():
            assert chunks("abc", 1) == ["a", "b", "c"]
    '''),
    "tests/test_text.py": textwrap.dedent('''\
        from tinycalc import initials, shout


        def test_shout():
            assert shout("hi") == "HI!"


        def test_shout_calm():
            assert shout("hi", excited=False) == "HI."


        def test_initials():
            assert initials("ada  lovelace") == "AL"
    '''),
}


def make_tiny(root: Path) -> Path:
    for name, text in TINY.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_pytest(repo: Path, tests: list[str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *tests],
                          cwd=repo, env=env, capture_output=True, text=True)
    return parse_statuses(done.stdout)


def git_apply(repo: Path, patch: str) -> None:
    subprocess.run(["git", "apply", "-"], cwd=repo, input=patch, text=True, check=True, capture_output=True)


def check_task(task, workdir: Path) -> None:
    """The SWE-bench checks, done here by hand: F2P fail without the fix and pass with it."""
    assert task.patch and task.test_patch and task.FAIL_TO_PASS
    source_file = task.extra["mutation"]["path"]
    assert [line for line in task.patch.splitlines() if line.startswith("diff --git")] == [
        f"diff --git a/{source_file} b/{source_file}"]
    assert all(f.startswith("tests/") for f in task.test_files)
    repo = workdir / task.instance_id
    assert task.checkout(repo) == task.base_commit
    for test in task.FAIL_TO_PASS:  # hidden: the agent does not see the failing tests
        text = (repo / test.split("::")[0]).read_text()
        assert failing_test_source(text, test, max_lines=10**6) is None, test
    git_apply(repo, task.test_patch)
    before = run_pytest(repo, task.test_files)
    assert all(before.get(t) != "PASSED" for t in task.FAIL_TO_PASS)
    assert all(before.get(t) == "PASSED" for t in task.PASS_TO_PASS)
    git_apply(repo, task.patch)
    after = run_pytest(repo, task.test_files)
    assert all(after.get(t) == "PASSED" for t in task.FAIL_TO_PASS + task.PASS_TO_PASS)
    # The issue names what fails, never the fix.
    fixed_lines = [line[1:].strip() for line in task.patch.splitlines()
                   if line.startswith("+") and not line.startswith("+++") and line[1:].strip()]
    assert not any(line in task.problem_statement for line in fixed_lines if len(line) > 8)


def test_generate_from_a_tiny_project(tmp_path):
    project = make_tiny(tmp_path / "tinycalc")
    events = []
    folders = generate_tasks(project, tmp_path / "out", count=4, seed=1, jobs=2, verify="local",
                             progress=events.append)
    assert len(folders) == 4
    tasks = load_tasks(tmp_path / "out")
    assert [t.instance_id for t in tasks] == sorted(f.name for f in folders)
    functions = [t.extra["mutation"]["function"] for t in tasks]
    assert len(set(functions)) == 4  # one task per function by default
    for task in tasks:
        assert task.repo == "pypi/tinycalc" and task.version == "0.1.0"
        assert task.source == "repo.tar.gz" and (task.path.parent / "repo.tar.gz").is_file()
        assert task.instance_id.startswith("tinycalc__")
        check_task(task, tmp_path / "check")
        top = task.extra["mutation"]["function"]
        assert f"`{top}" in task.problem_statement.splitlines()[0]  # the title names the function
    summary = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert summary["kept"] == 4 and summary["tried"] >= 4 and summary["baseline_tests"] == 10
    assert events and events[-1].tried == summary["tried"] and events[-1].kept >= 4

    # Same seed, same tasks.
    again = generate_tasks(project, tmp_path / "again", count=4, seed=1, jobs=1, verify="local")
    assert [f.name for f in again] == [f.name for f in folders]
    for first, second in zip(folders, again):
        assert (first / "task.json").read_text() == (second / "task.json").read_text()
        assert (first / "repo.tar.gz").read_bytes() == (second / "repo.tar.gz").read_bytes()


def test_a_custom_verifier_decides_what_is_kept(tmp_path):
    project = make_tiny(tmp_path / "tinycalc")
    asked: list[tuple[str, str]] = []

    def picky(task, patch):
        asked.append((task.instance_id, patch))
        gold_asks = [p for _, p in asked if p]
        if not patch:
            return len(gold_asks) == 2  # the second task "resolves without a fix"
        return len(gold_asks) >= 2  # the first task's gold patch "does not resolve"

    folders = generate_tasks(project, tmp_path / "out", count=1, jobs=1, verify=picky)
    assert len(folders) == 1 and folders[0].name == asked[-1][0]
    assert [bool(patch) for _, patch in asked] == [True, True, False, True, False]
    summary = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert summary["outcomes"]["gold patch does not resolve"] == 1
    assert summary["outcomes"]["resolved without a fix"] == 1
    assert summary["kept"] == 1
    assert [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == [folders[0].name]


def test_bad_sources_and_destinations(tmp_path):
    with pytest.raises(GenerateError, match="no such sdist or folder"):
        generate_tasks(tmp_path / "missing", tmp_path / "out", verify="local")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(GenerateError, match="not empty"):
        generate_tasks(tmp_path, tmp_path / "full", verify="local")
    bare = tmp_path / "bare"
    (bare / "pkg").mkdir(parents=True)
    (bare / "pkg" / "__init__.py").write_text("def f():\n    return 1\n")
    with pytest.raises(GenerateError, match="no test files"):
        generate_tasks(bare, tmp_path / "out2", verify="local")
    broken = make_tiny(tmp_path / "broken")
    (broken / "tests" / "test_core.py").write_text("import nothing_here_at_all\n")
    with pytest.raises(GenerateError, match="does not run cleanly"):
        generate_tasks(broken, tmp_path / "out3", verify="local")


@pytest.mark.docker
def test_generated_task_passes_the_docker_grader(tmp_path, sandbox_image):
    project = make_tiny(tmp_path / "tinycalc")
    folders = generate_tasks(project, tmp_path / "out", count=1, jobs=1, verify="docker")
    assert len(folders) == 1
    from cwm_agent.bench.grade import grade_task

    (task,) = load_tasks(folders[0])
    assert grade_task(task, task.patch).resolved
    from cwm_agent.bench.generate import NOOP_PATCH

    result = grade_task(task, NOOP_PATCH)
    assert not result.resolved and result.fail_to_pass.failure == task.FAIL_TO_PASS


@pytest.mark.slow
def test_generate_from_the_more_itertools_sdist(tmp_path):
    folders = generate_tasks("pypi:more-itertools==10.5.0", tmp_path / "out", count=5, jobs=2, seed=0)
    assert len(folders) == 5
    tasks = load_tasks(tmp_path / "out")
    for task in tasks:
        assert task.repo == "more-itertools/more-itertools" and task.version == "10.5.0"
        assert task.extra["mutation"]["path"].startswith("more_itertools/")
        check_task(task, tmp_path / "check")


def test_issue_code_of_a_long_test_stops_at_the_failing_line():
    body = "".join(f"        check({n})\n" for n in range(60))
    text = f"class T:\n    def test_long(self):\n        setup()\n{body}        teardown()\n"
    whole = failing_test_source(text, "t.py::T::test_long", upto=None)
    assert whole is None  # too long to quote whole, and no failing line to cut at
    cut = failing_test_source(text, "t.py::T::test_long", upto=14)  # check(10) failed
    lines = cut.splitlines()
    assert lines[0] == "def test_long(self):" and lines[-1] == "    check(10)"
    assert "teardown()" not in cut
    short = failing_test_source("def test_a():\n    assert f(1) == 2\n", "t.py::test_a", upto=2)
    assert short == "def test_a():\n    assert f(1) == 2"
    far = failing_test_source(text, "t.py::T::test_long", upto=60)
    assert far.splitlines()[1] == "    ..." and len(far.splitlines()) == 40


def test_failure_sections_with_long_names():
    from cwm_agent.bench.generate import error_excerpt, failure_sections

    output = textwrap.dedent("""\
        =================================== FAILURES ===================================
        _ LongestCommonPrefixTests.test_prefix_contains_elements_of_the_first_iterable _
        tests/test_more.py:5471: in test_prefix_contains_elements_of_the_first_iterable
            self.assertIs(prefix[0], iterables[0][0])
        more_itertools/more.py:12: in helper
            return buggy_line_here
        E   AssertionError: [1] is not [1] at 0x7f2771765620
        ________________________________ T.test_short _________________________________
        tests/t.py:3: in test_short
            assert f() == 2
        E   assert 1 == 2
        =========================== short test summary info ============================
    """)
    sections = failure_sections(output)
    assert list(sections) == ["LongestCommonPrefixTests.test_prefix_contains_elements_of_the_first_iterable",
                              "T.test_short"]
    error, frames, line = error_excerpt(next(iter(sections.values())), "tests/test_more.py")
    assert error == "AssertionError: [1] is not [1] at 0x..."
    assert frames == ["self.assertIs(prefix[0], iterables[0][0])"] and line == 5471  # no library frame


def test_the_cli_generates_and_rejects_bad_flags(tmp_path):
    project = make_tiny(tmp_path / "tinycalc")
    cli = [sys.executable, "-m", "cwm_agent.cli", "tasks", "generate", str(project)]
    done = subprocess.run([*cli, "--out", str(tmp_path / "out"), "--count", "2", "--verify", "local",
                           "--max-per-function", "1", "--timeout", "60"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(load_tasks(tmp_path / "out")) == 2 and "2 task(s)" in done.stdout
    bad = subprocess.run([*cli, "--out", str(tmp_path / "bad"), "--verify", "maybe"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--verify must be auto, local or docker" in bad.stderr
    busy = subprocess.run([*cli, "--out", str(tmp_path / "out"), "--verify", "local"],
                          capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and "not empty" in busy.stderr and "Traceback" not in busy.stderr
