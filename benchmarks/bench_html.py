"""How heavy are the HTML reports at the sizes people make? (issue 17)

Builds a synthetic 128-turn trajectory with about 100k tokens of content (long reasonings, long
observations in ANSI colours, edits, created files, a patch, imagination on some turns) and a
synthetic eval folder of 500 attempts (results.jsonl, report.json by the runner's own report()),
renders each page, and prints its size, the Python render time, and what a real headless Chromium
(tests/_chromium.py) takes to load and draw it, each against an empty page of page.py in the same
browser: the page's own navigation timing (load event, first contentful paint, and "ready": two
animation frames after load, when layout and paint are done), the wall time from navigate to the
load event, and the cost of the pages' interactions (j x 20 on the trajectory, sorting and
filtering the 500 rows). Medians of --repeat runs.

    .venv/bin/python benchmarks/bench_html.py [--repeat 5] [--keep DIR]

Screenshots for the README (needs Docker and the sandbox image, as `cwm-agent solve` does):
real small runs with the scripted model, `cwm-agent solve` and `cwm-agent eval`, photographed at
1280x800 into docs/screenshots/ (scripts/screenshots.sh runs this):

    .venv/bin/python benchmarks/bench_html.py --screenshots docs/screenshots
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser harness the tests use

from _chromium import Browser, png_is_blank, png_stats  # noqa: E402

from cwm_agent import protocol  # noqa: E402
from cwm_agent.bench import runner  # noqa: E402
from cwm_agent.bench.attempts import AttemptResult  # noqa: E402
from cwm_agent.report import eval as eval_page  # noqa: E402
from cwm_agent.report import trajectory as trajectory_page  # noqa: E402
from cwm_agent.report.page import document  # noqa: E402
from cwm_agent.trajectory import Step, Trajectory  # noqa: E402
from cwm_agent.world.imagine import command_kind, score, summarize  # noqa: E402

WORDS = ("the function returns a value when the caller passes a list of items so the loop must handle "
         "an empty input and a generator and the test expects the order to be kept while duplicates are "
         "dropped which means the set is built before the filter runs").split()
RED, GREEN, YELLOW, BOLD, RESET = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


# -- a 128-turn trajectory ---------------------------------------------------------------------------

def _prose(rng: random.Random, words: int) -> str:
    lines, line = [], []
    for i in range(words):
        line.append(rng.choice(WORDS))
        if len(line) > 14 or i == words - 1:
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    return "\n".join(lines)


def _pytest_output(rng: random.Random, lines: int) -> str:
    out = [f"{BOLD}============================= test session starts =============================={RESET}",
           "platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0", "rootdir: /testbed", "collected 412 items", ""]
    for i in range(lines):
        status = f"{GREEN}PASSED{RESET}" if rng.random() > 0.1 else f"{RED}FAILED{RESET}"
        out.append(f"tests/test_module_{i // 40}.py::test_case_{i} {status}{' ' * rng.randint(1, 8)}[{i * 100 // lines:3d}%]")
    out += ["", f"{RED}FAILED{RESET} tests/test_module_3.py::test_case_141 - AssertionError: assert [1, 2] == [2, 1]",
            f"{RED}{BOLD}==== 12 failed, 400 passed in 8.31s ===={RESET}"]
    return "\n".join(out) + "\n"


def _source(rng: random.Random, lines: int) -> str:
    out = []
    for i in range(lines):
        indent = "    " * rng.randint(0, 2)
        out.append(f"{i + 1:5d}\t{indent}{rng.choice(['value', 'items', 'result', 'seen'])} = "
                   f"{rng.choice(['compute', 'normalise', 'dedupe'])}({rng.choice(WORDS)}_{i})")
    return "\n".join(out) + "\n"


def _edit(n: int) -> str:
    return (f"pkg/module_{n % 7}.py\n<<<<<<< SEARCH\n    seen = set()\n    for item in items:\n"
            f"        seen.add(item)\n=======\n    seen = dict.fromkeys(items)  # keeps order, turn {n}\n"
            "    for item in seen:\n        yield item\n>>>>>>> REPLACE")


PATCH = "".join(
    f"diff --git a/pkg/module_{i}.py b/pkg/module_{i}.py\n--- a/pkg/module_{i}.py\n+++ b/pkg/module_{i}.py\n"
    f"@@ -{10 * i + 1},7 +{10 * i + 1},6 @@ def dedupe(items):\n"
    "     \"\"\"Items once each, in order.\"\"\"\n-    seen = set()\n-    for item in items:\n-        seen.add(item)\n"
    "+    seen = dict.fromkeys(items)\n+    for item in seen:\n+        yield item\n     return\n" for i in range(6))


def synthetic_trajectory(turns: int = 128, seed: int = 17) -> tuple[dict, int]:
    """A trajectory.json (as loaded) of ``turns`` turns, and its characters of content."""
    rng = random.Random(seed)
    record = Trajectory(None, config={"base_url": "http://gpu-box:8000/v1", "model": "facebook/cwm",
                                      "api_key": "***", "max_turns": turns, "context_window": 131072},
                        task={"label": "synthetic-128-turns", "issue": _prose(rng, 300), "repo": "/testbed"},
                        model={"name": "facebook/cwm", "format": "cwm"})
    record.header["imagination"] = {"mode": "observe", "max_tokens": 4096, "temperature": 1.0}
    context, chars = 0, 0
    for n in range(1, turns + 1):
        reasoning = _prose(rng, rng.randint(100, 420))
        kind = rng.random()
        if n == turns - 1:
            action = protocol.Action("submit", "fix.patch")
            observation = "Submitted fix.patch (6 files changed).\n"
        elif kind < 0.15:
            action = protocol.Action("edit", _edit(n))
            observation = f"File pkg/module_{n % 7}.py has been successfully updated at line 42.\n"
        elif kind < 0.2:
            body = "\n".join(f"def test_case_{n}_{i}():\n    assert list(dedupe([3, 1, 3])) == [3, 1]\n" for i in range(8))
            action = protocol.Action("create", f"tests/test_turn_{n}.py\n{body}")
            observation = f"File created successfully at: tests/test_turn_{n}.py (16 lines).\n"
        elif kind < 0.5:
            action = protocol.Action("bash", "python -m pytest -q --color=yes tests 2>&1 | tail -n 400")
            observation = _pytest_output(rng, rng.randint(15, 90))
        else:
            action = protocol.Action("bash", f"nl -ba pkg/module_{n % 7}.py | sed -n '1,{rng.randint(20, 120)}p'")
            observation = _source(rng, rng.randint(10, 60))
        completion = (f"{reasoning}\n{protocol.THINK_END}\n" + protocol.render_action(action)) if n < turns else (
            f"Done.\n{protocol.THINK_END}\n## Issue Summary\n\n{_prose(rng, 60)}\n\n## Solution\n\n{_prose(rng, 80)}")
        step = Step(index=n, prompt_delta="", completion=completion, finish_reason="stop", stop="<|eot_id|>")
        if n < turns:
            step.action = {"tool": action.tool, "body": action.body}
            step.observation = observation
            step.command_status, step.exit_code = "ok", 0 if "FAILED" not in observation else 1
            step.submitted = action.tool == "submit"
        feedback_tokens = len(observation) // 4 if n < turns else 0
        completion_tokens = len(completion) // 4
        context += completion_tokens + feedback_tokens
        step.prompt_delta = protocol.render_message("tool: bash", protocol.tool_result_body(
            "…", remaining_turns=turns - n, remaining_tokens=131072 - context)) if n > 1 else protocol.issue_prompt("…")
        step.tokens = {"prompt": context - completion_tokens, "completion": completion_tokens, "context_used": context}
        step.timings = {"model": round(rng.uniform(2, 30), 2), "command": round(rng.uniform(0.01, 9), 2),
                        "overhead": round(rng.uniform(0.01, 0.2), 3)}
        if n % 4 == 0 and n < turns:  # imagination: a predicted observation, scored against the real one
            lines = observation.splitlines()
            predicted = "\n".join(lines[: max(1, len(lines) * 3 // 4)] + ["(the model expected this line)"])
            step.imagined = {"mode": "observe", "kind": command_kind(action.tool, action.body), "prediction": predicted,
                             "scores": score(predicted, observation),
                             "tokens": {"prompt": 180, "completion": len(predicted) // 4, "requests": 1},
                             "seconds": round(rng.uniform(1, 6), 2)}
        chars += len(completion) + len(observation if n < turns else "") + len((step.imagined or {}).get("prediction", ""))
        record.add(step)
    record.finish(exit="submitted", detail="submitted and summarised", turns=turns, tokens=context,
                  timings={"model": 1800.0, "command": 420.0, "overhead": 12.0}, submission=PATCH,
                  summary="## Issue Summary\n\nDuplicates were kept.", patch=PATCH, patch_applies=True,
                  workspace_diff=PATCH, finished=True, counted=True)
    return json.loads(record.to_json()), chars


# -- a 500-attempt eval ------------------------------------------------------------------------------

def synthetic_eval(folder: Path, attempts: int = 500, per_task: int = 2, seed: int = 17) -> dict:
    """An eval folder: results.jsonl of ``attempts`` rows, report.json by the runner's report()."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    exits = ["submitted"] * 14 + ["turn_limit"] * 3 + ["context_limit", "format_errors", "model_error"]
    kinds = ("ls/cat/grep", "tests", "python", "git", "edit/create/submit", "other")
    with (folder / "results.jsonl").open("w", encoding="utf-8") as out:
        for i in range(attempts):
            exit_ = rng.choice(exits)
            infra = exit_ == "model_error"
            resolved = None if infra else (exit_ == "submitted" and rng.random() < 0.55)
            turns = rng.randint(4, 128)
            by_kind = {k: {"turns": rng.randint(1, 10), "scored": rng.randint(1, 8), "exact": round(rng.random(), 4),
                           "line_similarity": round(rng.random(), 4), "first_line": round(rng.random(), 4),
                           "error_agreement": round(rng.random(), 4), "prompt_tokens_per_turn": 180.0,
                           "completion_tokens_per_turn": 95.0} for k in kinds}
            row = AttemptResult(
                instance_id=f"project__repo-{i // per_task:04d}", attempt=i % per_task + 1, exit=exit_,
                detail="" if not infra else "the GPU box is rebooting", infrastructure=infra,
                patch="" if infra else PATCH[: rng.randint(200, len(PATCH))], resolved=resolved,
                grade_status=None if infra else ("resolved" if resolved else "unresolved"), warnings=[],
                turns=turns, tokens=turns * rng.randint(400, 1000), seconds=round(rng.uniform(30, 1800), 2),
                timings={"model": round(rng.uniform(10, 900), 2), "command": round(rng.uniform(1, 300), 2),
                         "grade": round(rng.uniform(5, 60), 2)},
                imagination={"mode": "observe", **summarize([]), "turns": turns // 4, "scored": turns // 4,
                             "exact": round(rng.random() * 0.5, 4), "line_similarity": round(rng.random(), 4),
                             "first_line": round(rng.random(), 4), "error_agreement": round(rng.random(), 4),
                             "by_kind": by_kind},
                finished=exit_ == "submitted", grade_unfinished=False)
            out.write(json.dumps(asdict(row)) + "\n")
    config = {"settings": {"base_url": "http://gpu-box:8000/v1", "api_key": "***", "max_turns": 128},
              "eval": {"name": "synthetic-500", "attempts": per_task, "workers": 16, "tasks": "bundled"}}
    return runner.report(folder, config=config)


# -- timing ------------------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure(browser: Browser, page: Path, repeat: int, script: str | None = None) -> dict:
    runs = [browser.open(page, script=script) for _ in range(repeat)]
    for run in runs:
        if run.errors or run.requests:
            raise SystemExit(f"{page.name}: errors {run.errors} requests {run.requests}")
    keys = ("load_ms", "first_contentful_paint_ms", "ready_ms", "wall_load_ms")
    out = {k: _median([r.timing[k] for r in runs if r.timing.get(k) is not None] or [0]) for k in keys}
    out["dom_nodes"] = runs[0].timing["dom_nodes"]
    if script:
        results = [r.result for r in runs]
        out["interaction"] = {k: _median([r[k] for r in results]) for k in results[0]}
    return out


TRAJECTORY_JS = """(() => {
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) document.dispatchEvent(new KeyboardEvent('keydown', {key: 'j', bubbles: true}));
  const current = document.querySelector('section.turn.current');
  current.getBoundingClientRect();  // the layout the scrolls left
  const t1 = performance.now();
  document.querySelectorAll('details').forEach(d => d.open = true);
  document.body.getBoundingClientRect();
  const t2 = performance.now();
  return {j_x20_ms: t1 - t0, open_all_details_ms: t2 - t1};
})()"""

EVAL_JS = """(() => {
  const t0 = performance.now();
  document.querySelector('#attempts th[data-type="num"]:nth-child(6), #attempts th[data-type="num"]').click();
  document.body.getBoundingClientRect();
  const t1 = performance.now();
  const f = document.getElementById('filter'); f.value = 'submitted yes'; f.dispatchEvent(new Event('input'));
  document.body.getBoundingClientRect();
  const t2 = performance.now();
  return {sort_ms: t1 - t0, filter_ms: t2 - t1};
})()"""


def bench(repeat: int, keep: Path | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-html-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    rows = []

    started = time.perf_counter()
    data, chars = synthetic_trajectory()
    made = time.perf_counter() - started
    print(f"trajectory: {len(data['steps'])} turns, {chars:,} characters of content (~{chars // 4:,} tokens; "
          f"context_used {data['tokens']:,}), trajectory.json {len(json.dumps(data)):,} bytes, built in {made:.2f}s")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        html = trajectory_page.render(data)
        times.append(time.perf_counter() - started)
    (work / "trajectory.html").write_text(html, encoding="utf-8")
    rows.append(("trajectory (128 turns)", work / "trajectory.html", times, TRAJECTORY_JS))

    folder = work / "eval-500"
    report = synthetic_eval(folder)
    print(f"eval: {report['attempts']} attempts, {report['resolved']}/{report['scored']} resolved, "
          f"results.jsonl {(folder / 'results.jsonl').stat().st_size:,} bytes")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        html = eval_page.render(folder, report)
        times.append(time.perf_counter() - started)
    (folder / "report.html").write_text(html, encoding="utf-8")
    rows.append(("eval report (500 attempts)", folder / "report.html", times, EVAL_JS))

    (work / "empty.html").write_text(document("empty", ""), encoding="utf-8")
    with Browser(timeout=120) as browser:
        print(f"browser: {browser.version} (headless, --disable-gpu), {repeat} loads each, medians\n")
        browser.open(work / "empty.html")  # warm-up
        empty = measure(browser, work / "empty.html", repeat)
        print(f"{'page':28} {'size':>10} {'render (py)':>11} {'nodes':>6} {'load':>8} {'FCP':>8} {'ready':>8} "
              f"{'wall':>8}  ready/empty")
        print(f"{'empty page (page.py)':28} {(work / 'empty.html').stat().st_size:>9,}B {'':>11} "
              f"{empty['dom_nodes']:>6} {empty['load_ms']:>6}ms {empty['first_contentful_paint_ms'] or 0:>6}ms "
              f"{empty['ready_ms']:>6}ms {empty['wall_load_ms']:>6}ms  1.0x")
        extra = []
        for name, path, times, script in rows:
            got = measure(browser, path, repeat, script)
            shot = path.with_suffix(".png")
            browser.open(path, screenshot=shot)
            print(f"{name:28} {path.stat().st_size:>9,}B {statistics.median(times) * 1000:>9.0f}ms "
                  f"{got['dom_nodes']:>6} {got['load_ms']:>6}ms {got['first_contentful_paint_ms'] or 0:>6}ms "
                  f"{got['ready_ms']:>6}ms {got['wall_load_ms']:>6}ms  {got['ready_ms'] / empty['ready_ms']:.1f}x")
            stats = png_stats(shot)
            extra.append(f"  {name}: {', '.join(f'{k} {v}ms' for k, v in got['interaction'].items())}; "
                         f"screenshot {stats['colours']} colours, {stats['foreground_fraction']:.1%} drawn"
                         + (" (BLANK)" if png_is_blank(shot) else ""))
        print("\ninteractions (in the page, performance.now()):")
        print("\n".join(extra))
    print(f"\npages in {work}" if keep else "")


# -- screenshots for the README ----------------------------------------------------------------------

def _act(tool: str, body: str) -> str:
    return "Thinking.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))


def screenshots(out: Path) -> None:
    """docs/screenshots/trajectory.png and eval-report.png from real small runs (scripted model)."""
    from cwm_agent.bench.tasks import load_tasks
    from cwm_agent.paths import TASKS_DIR
    from cwm_agent.testing.scripted_server import ScriptedServer, think

    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "cwm_agent.cli"]
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    script = [
        think("Let me find where slugify splits words.", "bash", "grep -n 'text = ' slugkit/core.py"),
        think("Run the failing test first, to see it fail.", "bash",
              "python3 -m pytest -q --color=yes tests 2>&1 | tail -n 6"),
        think("Accents must be folded before splitting. Import unicodedata first.", "edit",
              "slugkit/core.py\n<<<<<<< SEARCH\nimport re\nfrom typing import Iterable, Optional\n=======\n"
              "import re\nimport unicodedata\nfrom typing import Iterable, Optional\n>>>>>>> REPLACE"),
        think("Now normalise before the apostrophes are removed.", "edit",
              'slugkit/core.py\n<<<<<<< SEARCH\n    text = _APOSTROPHES.sub("", text).lower()\n=======\n'
              '    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")\n'
              '    text = _APOSTROPHES.sub("", text).lower()\n>>>>>>> REPLACE'),
        think("A regression test.", "create", "tests/test_accents.py\nfrom slugkit import slugify\n\n\n"
              "def test_accents():\n    assert slugify(\"Crème Brûlée\") == \"creme-brulee\"\n"),
        think("Run the tests again.", "bash", "python3 -m pytest -q --color=yes tests 2>&1 | tail -n 3"),
        think("Write the patch.", "bash", "git diff > fix.patch && git diff --stat"),
        think("Submit it.", "submit", "fix.patch"),
        "The patch is in.\n</think>\n## Issue Summary\n\nAccents split words.\n\n## Solution and Code Changes\n\n"
        "Fold accents with NFKD before splitting.",
    ]
    with ScriptedServer(script) as server:
        subprocess.run([*cli, "solve", "--base-url", server.base_url, "--out", str(work / "run"), "--task", "demo",
                        "--quiet"], check=True, cwd=work)
    page = trajectory_page.write_html(work / "run" / "trajectory.json")

    tasks = load_tasks(TASKS_DIR)
    chosen = [t.instance_id for t in tasks][:6]
    flails, wrong = chosen[4], chosen[5]
    gold = {t.instance_id: t.patch for t in tasks}
    statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}

    def reply(request):
        prompt = request["prompt"]
        task = next(i for i, s in statements.items() if s in prompt)
        turn = prompt.count("<|start_header_id|>assistant")
        if task == flails:
            return "I am not sure.\n</think>\nno tool"
        write = (f"cat > fix.patch <<'EOF_PATCH'\n{gold[task]}EOF_PATCH" if task != wrong else  # a patch that fixes nothing
                 "echo 'looked into it' > NOTES.txt && git add -N NOTES.txt && git diff > fix.patch")
        return [_act("bash", "git ls-files | head -n 20"), _act("bash", write),
                _act("submit", "fix.patch"), "Done.\n</think>\nSummary: applied the fix."][min(turn - 1, 3)]

    with ScriptedServer([reply] * 80) as server:
        subprocess.run([*cli, "eval", str(TASKS_DIR), "--filter", "^(" + "|".join(chosen) + ")$", "--attempts", "2",
                        "--workers", "2", "--max-turns", "6", "--max-format-errors", "2", "--base-url",
                        server.base_url, "--out", str(work / "bundled")], check=True, cwd=work,
                       env={**os.environ, "COLUMNS": "160"}, stdout=subprocess.DEVNULL)
    report = eval_page.write_html(work / "bundled")
    with Browser(size=(1280, 800)) as browser:
        for source, name in ((page, "trajectory.png"), (report, "eval-report.png")):
            result = browser.open(source, screenshot=out / name)
            if result.errors or result.requests or png_is_blank(out / name):
                raise SystemExit(f"{source}: errors {result.errors} requests {result.requests}")
            print(out / name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the pages here (default: a temporary folder)")
    parser.add_argument("--screenshots", type=Path, help="write the README's screenshots here instead")
    args = parser.parse_args()
    if args.screenshots:
        screenshots(args.screenshots)
    else:
        bench(args.repeat, args.keep)
