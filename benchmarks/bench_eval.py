"""Eval throughput on the bundled tasks with the scripted model and 2 workers (issue 6).

The stand-in model reads the code, writes the gold patch, runs the tests, submits and
summarises, with a fixed think time per reply so the numbers resemble a (very fast) model.
Reports tasks per hour and where the wall time went: model, commands, grading, and the
rest (sandbox start-up, copies, harness).

    .venv/bin/python benchmarks/bench_eval.py [--workers 2] [--think 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cwm_agent import protocol

from cwm_agent.bench import runner as evaluate
from cwm_agent.config import Settings
from cwm_agent.models.connect import connect
from cwm_agent.paths import TASKS_DIR
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.testing.scripted_server import Reply, ScriptedServer


def act(tool: str, body: str) -> str:
    return "Next step.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))


def solver(tasks, think: float):
    gold = {t.instance_id: t for t in tasks}
    statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}

    def reply(request):
        prompt = request["prompt"]
        task = gold[next(i for i, s in statements.items() if s in prompt)]
        turn = prompt.count("<|start_header_id|>assistant")
        steps = [act("bash", "git ls-files | head -n 30"),
                 act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{task.patch}EOF_PATCH\ngit apply fix.patch && git status --short"),
                 act("bash", "python3 -m pytest -q 2>&1 | tail -n 3"),
                 act("submit", "fix.patch"),
                 "Done.\n</think>\nSummary: applied the fix and ran the tests."]
        text = steps[min(turn - 1, len(steps) - 1)]
        return Reply(text, delay=think / max(1, len(text)))  # delay is per streamed chunk
    return reply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--think", type=float, default=0.5, help="seconds the stand-in spends per reply")
    args = parser.parse_args()
    tasks = load_tasks(TASKS_DIR)
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer([solver(tasks, args.think)] * (6 * len(tasks)),
                                                              chunk_chars=None) as server:
        model = connect(base_url=server.base_url, model=None, api_key=None, format=None)
        settings = Settings(base_url=server.base_url, max_turns=10)
        opts = evaluate.EvalOptions(out=Path(tmp) / "eval", workers=args.workers)
        started = time.monotonic()
        results = evaluate.run_eval(tasks, opts, settings, model=model)
        wall = time.monotonic() - started
    resolved = sum(bool(r.resolved) for r in results)
    busy = sum(r.seconds for r in results)
    parts = {key: sum(r.timings.get(key, 0.0) for r in results) for key in ("model", "command", "grade")}
    rest = busy - sum(parts.values())
    print(f"{len(results)} tasks, {resolved} resolved, {args.workers} workers, wall {wall:.1f} s "
          f"-> {3600 * len(results) / wall:.0f} tasks/hour")
    print("share of the attempts' time: " + ", ".join(f"{k} {v / busy:.0%}" for k, v in parts.items())
          + f", outside the model and the tests (sandbox start, copies, harness) {rest / busy:.0%}")


if __name__ == "__main__":
    main()
