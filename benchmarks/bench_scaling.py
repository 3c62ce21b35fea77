"""Test-time scaling on the bundled tasks: best@k against pass@1 and pass@k, and what selection
costs (container-seconds) against the episodes themselves, in one run on this host's Docker.

The model is the scripted server: on task i, the last `right = i % (K + 1)` of the K patch attempts
to start submit the gold patch and the others an identical wrong one (a README note: every existing test still
passes, the issue stays); of the M test attempts, one writes a reproduction test (it applies the
task's test_patch, runs the fail-to-pass tests and prints CWM's verdict line) and the others a
test that never runs. So `first` and `majority` are right only on some tasks, `tests` whenever a
right patch exists and its reproduction test is kept. Selection itself never sees the hidden
tests (selection.blinded); the scripted "model" does, as a stand-in for one that wrote a good test.

Usage: .venv/bin/python benchmarks/bench_scaling.py [--attempts 4] [--test-attempts 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cwm_agent import protocol  # noqa: E402
from cwm_agent.bench import runner as evaluate  # noqa: E402
from cwm_agent.bench.tasks import load_tasks  # noqa: E402
from cwm_agent.config import Settings  # noqa: E402
from cwm_agent.models.connect import connect  # noqa: E402
from cwm_agent.paths import TASKS_DIR  # noqa: E402
from cwm_agent.testing.scripted_server import ScriptedServer, think  # noqa: E402

SUMMARY = "Done.\n</think>\nSummary: done."
REPRODUCER = '''import subprocess, sys
PATCH = {patch!r}
TESTS = {tests!r}
subprocess.run(["git", "apply", "-"], input=PATCH, text=True, check=True)
try:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                          capture_output=True, text=True)
    print("Issue resolved" if done.returncode == 0 else "Issue reproduced")
finally:
    subprocess.run(["git", "apply", "-R", "-"], input=PATCH, text=True)
'''
JUNK = 'import no_such_module\nprint("Issue resolved")\n'


def write(path: str, text: str) -> str:
    data = base64.b64encode(text.encode()).decode()
    return f"echo {data} | base64 -d > {path}"


def scripted(tasks, attempts: int, test_attempts: int):
    statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}
    by_id = {t.instance_id: t for t in tasks}
    order = {t.instance_id: i for i, t in enumerate(tasks)}
    counters: Counter = Counter()
    lock = threading.Lock()
    marker = protocol.TESTGEN_TEMPLATE.split("\n", 1)[0]

    def reply(request):
        prompt = request["prompt"]
        task_id = next(i for i, s in statements.items() if s in prompt)
        kind = "test" if marker in prompt else "patch"
        turn = prompt.count("<|start_header_id|>assistant")
        if turn >= 3:
            return SUMMARY
        if turn == 2:
            return think("Submit.", "submit", "test_issue.py" if kind == "test" else "/tmp/fix.patch")
        with lock:
            n = counters[(task_id, kind)]
            counters[(task_id, kind)] += 1
        task = by_id[task_id]
        if kind == "test":
            test = REPRODUCER.format(patch=task.test_patch, tests=task.FAIL_TO_PASS) if n == 0 else JUNK
            return think("Write the test.", "bash", write("test_issue.py", test))
        right = order[task_id] % (attempts + 1)
        if n >= attempts - right:  # the right ones come last: `first` is wrong unless all are right
            return think("Fix.", "bash", write("/tmp/fix.patch", task.patch))
        return think("Note it.", "bash", "echo '<!-- see the docs -->' >> README.md && git add -A && "
                                         "git diff --cached > /tmp/fix.patch")
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--test-attempts", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tasks = load_tasks(TASKS_DIR)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp, \
            ScriptedServer([scripted(tasks, args.attempts, args.test_attempts)] * 1000, model_id="facebook/cwm") as server:
        model = connect(base_url=server.base_url)
        settings = Settings(base_url=server.base_url, max_turns=8, command_timeout=120, max_format_errors=2)
        opts = evaluate.EvalOptions(out=Path(tmp) / "eval", workers=args.workers, attempts=args.attempts,
                                    test_attempts=args.test_attempts, select="tests", tasks=str(TASKS_DIR))
        started = time.monotonic()
        evaluate.run_eval(tasks, opts, settings, model=model)
        wall = time.monotonic() - started
        data = evaluate.report(opts.out)
        rows = [json.loads(line) for line in (opts.out / "results.jsonl").read_text().splitlines()]
    grading = sum(r.get("timings", {}).get("grade", 0.0) for r in rows)
    scaling = data["test_time_scaling"]
    print(f"{len(tasks)} bundled tasks, K={args.attempts} patches, M={args.test_attempts} tests, "
          f"{args.workers} workers, {wall:.0f} s wall")
    for name in ("pass@1", "pass@k", "best@k", "majority@k", "first"):
        row = scaling[name]
        print(f"  {name:11} {row['resolved']:3}/{row['of']:<3} {row['rate']:6.1%}  "
              f"[{row['ci95'][0]:.1%}, {row['ci95'][1]:.1%}]")
    cost = scaling["cost"]
    episodes = cost["candidates"]["seconds"] + cost["test_generation"]["seconds"]
    selection = cost["selection"]["container_seconds"]
    print(f"  episodes: patches {cost['candidates']['seconds']} s + tests {cost['test_generation']['seconds']} s "
          f"(sandbox-seconds, grading included in the patches' {grading:.0f} s)")
    print(f"  selection: {selection} container-s = {selection / episodes:.2f} x the episodes' seconds")


if __name__ == "__main__":
    main()
