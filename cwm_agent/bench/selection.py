"""Choosing one patch among many: CWM's test-time scaling, with its execution step.

CWM's SWE-bench Verified score goes from 53.9 % (one attempt) to 65.8 % with test-time scaling
(facebookresearch/cwm, evals/README.md and MODEL_CARD.md): sample many patches, generate
reproduction tests with a second agent (protocol.TESTGEN_TEMPLATE), run every patch against
the repository's existing passing tests and the top-5 majority generated tests, pick the patch
that passes the most, break ties by the most frequent patch, then by the fewest tokens. The
release has only the majority vote; the execution step here follows the paper's description.

Selection never looks at the benchmark's hidden tests: it is given the task `blinded` (no
test_patch, FAIL_TO_PASS, PASS_TO_PASS, eval_script, gold patch), and what it runs is the
repository as the agent saw it plus the candidates' patches and the generated tests.

1. `execute`: one fresh sandbox per subject (the base, then each candidate patch applied by
   the official chain): the repository's suite (`test_command`, pytest -rA by default) and
   every generated test (as CWM ran them: `python test_issue.py` at the repository root).
2. `choose` (pure, so `cwm-agent select RUN` re-selects from the saved executions):
   - existing tests: those that PASSED on the base;
   - generated tests: those whose base run printed "Issue reproduced" only, grouped by the
     verdicts they give across the candidates, the five largest groups kept;
   - each candidate's score: the existing tests it still passes + the kept tests it makes
     print "Issue resolved"; the highest wins; ties by the most frequent normalised patch,
     then the fewest tokens, then the earliest attempt.
   `majority`: the most frequent normalised patch (then fewest tokens); `first`: the earliest
   finished attempt with a patch.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwm_agent.bench.suites import parse_statuses
from cwm_agent.bench.tasks import Task
from cwm_agent.protocol import TEST_VERDICTS

METHODS = ("tests", "majority", "first")
KEPT_GROUPS = 5
SUITE_TIMEOUT = 1800.0  # seconds for the repository's suite in one subject
TEST_TIMEOUT = 120.0  # seconds per generated test (CWM's eval_timeout)
OUTPUT_KEPT = 2000  # characters of each generated test's output kept in the record
_PIECE = 96 * 1024  # base64 characters per argument (one argv string holds 128 KiB)

REPRODUCED, RESOLVED, OTHER = "reproduced", "resolved", "other"


def suite_command(task: Task) -> str | None:
    """How selection runs the repository's existing tests: the row's test_command, read as a
    pytest -rA log; None for rows whose logs are not pytest's (their log_parser says so), which
    then select by generated tests and votes alone (the grader reads only pytest logs too)."""
    from cwm_agent.bench.grade import LOG_PARSER

    parser = task.extra.get("log_parser")
    return None if parser not in (None, LOG_PARSER) else task.test_command


def blinded(task: Task) -> Task:
    """The task as selection may see it: the hidden tests and the gold patch removed."""
    return dataclasses.replace(task, test_patch="", FAIL_TO_PASS=[], PASS_TO_PASS=[], test_files=[],
                               eval_script=None, patch="")


def verdict(output: str) -> str:
    """What a generated test said: exactly one of CWM's three lines, else "other"."""
    said = [line in output for line in TEST_VERDICTS]
    if said == [True, False, False]:
        return REPRODUCED
    if said == [False, True, False]:
        return RESOLVED
    return OTHER


def normalise(patch: str) -> str:
    """A patch reduced to what it changes (file names and +/- lines, whitespace at line ends
    dropped), so two attempts that wrote the same change count as one in a vote."""
    kept = []
    for line in patch.splitlines():
        if line.startswith("diff --git"):
            kept.append(line)
        elif line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
            kept.append(line.rstrip())
    return "\n".join(kept)


@dataclass
class Candidate:
    attempt: int
    patch: str
    tokens: int


@dataclass
class GeneratedTest:
    attempt: int
    test: str  # the submitted test_issue.py


@dataclass
class Execution:
    """One subject (the base, or one candidate) run in its own fresh sandbox."""

    subject: str  # "base" or "attempt-N"
    applied: bool
    apply_log: str = ""
    suite: dict[str, str] = field(default_factory=dict)  # test id -> PASSED / FAILED / ...
    suite_exit: int | None = None
    tests: dict[str, str] = field(default_factory=dict)  # generated test's attempt (str) -> verdict
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # the sandbox's whole life: the container-seconds this subject cost


@dataclass
class Selection:
    method: str
    winner: int | None  # the chosen attempt; None: no finished candidate with a patch
    reason: str
    table: list[dict[str, Any]] = field(default_factory=list)  # per candidate: the numbers behind it
    kept_tests: list[int] = field(default_factory=list)
    base_passing: int = 0
    container_seconds: float = 0.0


# --- running ------------------------------------------------------------------------------

def _put(sandbox: Any, path: str, text: str) -> None:
    """Write ``text`` to ``path`` in the sandbox through exec arguments (any size)."""
    data = base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")
    pieces = [data[i:i + _PIECE] for i in range(0, len(data), _PIECE)] or [""]
    for n, piece in enumerate(pieces):
        code, _, err = sandbox.exec(["bash", "-c", 'printf %s "$2" >> "$1.b64"', "put", path, piece], timeout=60)
        if code != 0:
            raise RuntimeError(f"cannot write {path} in the sandbox: {err.decode(errors='replace')[-200:]}")
    code, _, err = sandbox.exec(["bash", "-c", 'base64 -d "$1.b64" > "$1" && rm -f "$1.b64"', "put", path], timeout=60)
    if code != 0:
        raise RuntimeError(f"cannot write {path} in the sandbox: {err.decode(errors='replace')[-200:]}")


def _shell(sandbox: Any, script: str, timeout: float) -> tuple[int, str]:
    """A script beside the model's session, as the session would run it (~/.bashrc first: the
    SWE-bench images activate their environment there), in the repository root."""
    root = shlex.quote(sandbox.repo_root)
    code, out, err = sandbox.exec(["bash", "-c", f"[ -f ~/.bashrc ] && . ~/.bashrc >/dev/null 2>&1; cd {root} && {script}"],
                                  timeout=timeout)
    return code, (out + err).decode("utf-8", "replace")


def execute(open_sandbox: Callable[[], AbstractContextManager[Any]], subject: str, patch: str | None,
            tests: Sequence[GeneratedTest], *, test_command: str | None, suite_timeout: float = SUITE_TIMEOUT,
            test_timeout: float = TEST_TIMEOUT) -> Execution:
    """Run the suite (``test_command``, a pytest -rA run; None: none) and every generated test on
    the base (``patch`` None) or with ``patch``."""
    from cwm_agent.sandbox.patch import apply_chain

    started = time.monotonic()
    result = Execution(subject, applied=patch is None)
    with open_sandbox() as sandbox:
        if patch is not None:
            _put(sandbox, "/tmp/cwm-candidate.patch", patch)
            chain = apply_chain(lambda command: _shell(sandbox, command, 300), "/tmp/cwm-candidate.patch")
            result.applied, result.apply_log = chain.ok, chain.output[-2000:]
        if result.applied and test_command:
            log = "/tmp/cwm-suite.log"
            limit = max(1, round(suite_timeout))
            code, out = _shell(sandbox, f"timeout -s KILL {limit} {test_command} > {log} 2>&1; echo \"__EXIT=$?\"; "
                                        f"grep -E '^(SUB)?(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\\b' {log}",
                               suite_timeout + 60)
            found = re.search(r"__EXIT=(\d+)", out)
            result.suite_exit = int(found.group(1)) if found else None
            result.suite = parse_statuses(out)
        if result.applied:
            for test in tests:
                path = f"/tmp/cwm-test-{test.attempt}.py"
                _put(sandbox, path, test.test)
                # `python test_issue.py` as CWM ran it (python3 where an image has no `python`).
                _, output = _shell(sandbox, f"cp {path} test_issue.py && timeout -s KILL {max(1, round(test_timeout))} "
                                            "\"$(command -v python || command -v python3)\" test_issue.py 2>&1; "
                                            "rm -f test_issue.py", test_timeout + 60)
                result.tests[str(test.attempt)] = verdict(output)
                result.outputs[str(test.attempt)] = output[-OUTPUT_KEPT:]
    result.seconds = time.monotonic() - started
    return result


def run_and_choose(method: str, candidates: Sequence[Candidate], tests: Sequence[GeneratedTest],
                   open_sandbox_for: Callable[[str], Callable[[], AbstractContextManager[Any]]], *,
                   test_command: str | None, executions: dict[str, Execution] | None = None, run: bool = True,
                   on_subject: Callable[[str], None] = lambda _subject: None) -> tuple[Selection, dict[str, Execution]]:
    """For `tests`: execute the base and every candidate not executed yet (``run``), each in the
    fresh sandbox ``open_sandbox_for(subject)`` opens; then `choose`. Returns the choice and
    every execution, to save."""
    executions = dict(executions or {})
    if run and method == "tests" and candidates:
        subjects = [("base", None)] + [(f"attempt-{c.attempt}", c.patch) for c in candidates]
        for subject, patch in subjects:
            if subject not in executions:
                on_subject(subject)
                executions[subject] = execute(open_sandbox_for(subject), subject, patch, tests,
                                              test_command=test_command)
    return choose(method, candidates, executions), executions


# --- choosing -----------------------------------------------------------------------------

def choose(method: str, candidates: Sequence[Candidate], executions: dict[str, Execution] | None = None) -> Selection:
    """The winner among ``candidates`` (finished attempts with a patch) by ``method``."""
    if method not in METHODS:
        raise ValueError(f"selection is one of {', '.join(METHODS)}, not {method!r}")
    pool = sorted((c for c in candidates if c.patch.strip()), key=lambda c: c.attempt)
    if not pool:
        return Selection(method, None, "no finished attempt submitted a patch")
    votes = Counter(normalise(c.patch) for c in pool)
    seconds = sum(e.seconds for e in (executions or {}).values())
    if method == "first":
        return Selection(method, pool[0].attempt, f"attempt {pool[0].attempt}: the first finished attempt with a patch",
                         container_seconds=seconds)
    if method == "majority" or not executions or "base" not in executions:
        best = min(pool, key=lambda c: (-votes[normalise(c.patch)], c.tokens, c.attempt))
        why = (f"attempt {best.attempt}: its patch is the most frequent ({votes[normalise(best.patch)]} of "
               f"{len(pool)}), then the fewest tokens ({best.tokens:,})")
        if method == "tests":
            why = "no executions to select by (the base run is missing); by majority instead: " + why
        return Selection(method, best.attempt, why,
                         [{"attempt": c.attempt, "tokens": c.tokens, "votes": votes[normalise(c.patch)]} for c in pool],
                         container_seconds=seconds)
    base = executions["base"]
    passing = sorted(t for t, status in base.suite.items() if status == "PASSED")
    reproducing = sorted((t for t, v in base.tests.items() if v == REPRODUCED), key=int)
    runs = {c.attempt: executions.get(f"attempt-{c.attempt}") for c in pool}
    # Generated tests grouped by what they say about each candidate; the five largest groups kept.
    groups: dict[tuple[str, ...], list[str]] = {}
    for test in reproducing:
        signature = tuple((runs[c.attempt].tests.get(test, OTHER) if runs[c.attempt] and runs[c.attempt].applied
                           else "not-applied") for c in pool)
        groups.setdefault(signature, []).append(test)
    ranked = sorted(groups.values(), key=lambda members: (-len(members), int(members[0])))
    kept = sorted((t for members in ranked[:KEPT_GROUPS] for t in members), key=int)
    table = []
    for c in pool:
        run = runs[c.attempt]
        applied = bool(run and run.applied)
        existing = sum(run.suite.get(t) == "PASSED" for t in passing) if applied else 0
        generated = sum(run.tests.get(t) == RESOLVED for t in kept) if applied else 0
        table.append({"attempt": c.attempt, "applied": applied, "existing_passed": existing,
                      "generated_resolved": generated, "score": existing + generated if applied else -1,
                      "votes": votes[normalise(c.patch)], "tokens": c.tokens})
    best = min(table, key=lambda row: (-row["score"], -row["votes"], row["tokens"], row["attempt"]))
    rivals = [row for row in table if row is not best]
    tied = [row for row in rivals if row["score"] == best["score"]]
    why = (f"attempt {best['attempt']}: passes {best['existing_passed']} of the {len(passing)} existing tests that "
           f"pass on the base and {best['generated_resolved']} of the {len(kept)} kept generated tests "
           f"(score {best['score']})")
    if tied:
        why += f"; tied with attempt(s) {', '.join(str(r['attempt']) for r in tied)}, won by votes ({best['votes']}) then tokens"
    elif rivals:
        why += f"; the next best scored {max(r['score'] for r in rivals)}"
    if not best["applied"]:
        why = "no candidate patch applies; " + why
    return Selection(method, best["attempt"], why, table, [int(t) for t in kept], len(passing), seconds)


def save(path: Path, selection: Selection, executions: dict[str, Execution] | None) -> None:
    data = {"selection": dataclasses.asdict(selection),
            "executions": {k: dataclasses.asdict(v) for k, v in (executions or {}).items()}}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def load_executions(path: Path) -> dict[str, Execution]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: Execution(**v) for k, v in data.get("executions", {}).items()}
