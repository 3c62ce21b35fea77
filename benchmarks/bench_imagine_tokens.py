"""Extra model tokens per turn that `--imagine log` and `--imagine lookahead:3` cost.

The demo episode of tests/test_solve_e2e.py (7 tool calls and a summary) runs three times
through the real CLI and a real Docker sandbox, the scripted server playing CWM:

- off: the baseline; its real observations become the "predictions" of the other runs
  (a perfect world model, so every prediction is as long as the real output);
- log: one prediction per tool call;
- lookahead:3: per tool call, 2 more sampled replies (the real reply with the command
  varied, so as long as a real reply and never deduplicated), a prediction for each of the
  3, and a selection reply of about 40 tokens (a real CWM would reason longer here: that
  reply is the one number below that depends on the model).

Tokens are counted with cwm_agent.models.tokens.EstimateCounter (fitted to CWM's Llama-3
vocabulary, about 7% error), not the scripted server's toy tokenizer. "new prompt" is the
part of a request's prompt that is not a prefix of an earlier request's prompt + reply,
i.e. what vLLM's prefix cache cannot serve.

Usage: .venv/bin/python benchmarks/bench_imagine_tokens.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cwm_agent.testing.scripted_server import ScriptedServer  # noqa: E402
from cwm_agent.models.tokens import EstimateCounter  # noqa: E402
from test_imagine import Router, kind_of  # noqa: E402
from test_solve_e2e import DEMO_SCRIPT  # noqa: E402

COUNT = EstimateCounter().count
SELECTION = "Candidate 1 looks at exactly what the issue needs, the others repeat it.\n</think>\n<choice>1"


def solve(server: ScriptedServer, out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "solve", "--base-url", server.base_url,
                           "--task", "demo-slugify-unicode", "--out", str(out), "--json", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    return json.loads((out / "trajectory.json").read_text())


def variant(reply: str, k: int) -> str:
    """The same reply with its command changed (a distinct action of the same length)."""
    head, sep, tail = reply.rpartition("\n</tool>")
    return f"{head} #{k}{sep}{tail}" if sep else reply


def common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on prefix equality
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def costs(server: ScriptedServer, replies: dict[int, str]) -> list[dict]:
    """Per request: its kind, prompt / new prompt / completion tokens."""
    seen: list[str] = []
    rows = []
    last_action_prompt = None
    for i, (_, body) in enumerate(server.generation_requests()):
        prompt = body["prompt"]
        cached = max((common_prefix(prompt, s) for s in seen), default=0)
        completion = replies[i]
        kind = kind_of(body)
        if kind == "action":  # a second reply to the same prompt is a lookahead candidate
            kind = "candidate" if prompt == last_action_prompt else "action"
            last_action_prompt = prompt
        rows.append({"kind": kind, "prompt": COUNT(prompt), "new_prompt": COUNT(prompt[cached:]),
                     "completion": COUNT(completion)})
        seen.append(prompt + completion)
    return rows


class Recording(Router):
    """A Router that remembers what it answered, by request number."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.answers: dict[int, str] = {}

    def __call__(self, body):
        answer = super().__call__(body)
        self.answers[len(self.answers)] = answer
        return answer


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        off_router = Recording(DEMO_SCRIPT, {})
        with ScriptedServer(off_router.script()) as server:
            off = solve(server, base / "off")
            off_rows = costs(server, off_router.answers)
        steps = [s for s in off["steps"] if s["action"]]
        predictions = {s["action"]["body"]: s["observation"] for s in steps}
        log_router = Recording(DEMO_SCRIPT, predictions)
        with ScriptedServer(log_router.script()) as server:
            solve(server, base / "log", "--imagine", "log")
            log_rows = costs(server, log_router.answers)
        actions, la_predictions = [], dict(predictions)
        for reply in DEMO_SCRIPT[:-1]:
            alts = [variant(reply, 1), variant(reply, 2)]
            actions += [reply, *alts]
            body = reply.rsplit("\n</tool>", 1)[0].split(">\n", 2)[-1]
            for alt in alts:
                la_predictions[alt.rsplit("\n</tool>", 1)[0].split(">\n", 2)[-1]] = predictions[body]
        actions.append(DEMO_SCRIPT[-1])
        la_router = Recording(actions, la_predictions, [SELECTION] * 10)
        with ScriptedServer(la_router.script(200)) as server:
            la = solve(server, base / "la", "--imagine", "lookahead:3")
            la_rows = costs(server, la_router.answers)
        assert [s["action"] for s in la["steps"]] == [s["action"] for s in off["steps"]], "lookahead changed the run"
    turns = len(steps)
    base_prompt = sum(r["new_prompt"] for r in off_rows) / len(off_rows)
    base_completion = sum(r["completion"] for r in off_rows) / len(off_rows)
    print(f"demo episode: {len(off_rows)} turns, {turns} with a tool call; per turn without imagination: "
          f"{base_prompt:,.0f} new prompt tokens (of {sum(r['prompt'] for r in off_rows) / len(off_rows):,.0f}) "
          f"and {base_completion:,.0f} completion tokens")
    for name, rows in (("log", log_rows), ("lookahead:3", la_rows)):
        extra = [r for r in rows if r["kind"] != "action"]
        by_kind: dict[str, dict[str, int]] = {}
        for r in extra:
            k = by_kind.setdefault(r["kind"], {"n": 0, "prompt": 0, "new_prompt": 0, "completion": 0})
            k["n"] += 1
            for key in ("prompt", "new_prompt", "completion"):
                k[key] += r[key]
        total = {key: sum(r[key] for r in extra) / turns for key in ("prompt", "new_prompt", "completion")}
        print(f"\n--imagine {name}: per tool-call turn, extra {len(extra) / turns:.1f} requests, "
              f"{total['prompt']:,.0f} prompt tokens ({total['new_prompt']:,.0f} not in the prefix cache), "
              f"{total['completion']:,.0f} completion tokens")
        for kind, k in by_kind.items():
            print(f"  {kind:<10} {k['n'] / turns:.1f}/turn  prompt {k['prompt'] / turns:>8,.0f}  "
                  f"new prompt {k['new_prompt'] / turns:>6,.0f}  completion {k['completion'] / turns:>5,.0f}")


if __name__ == "__main__":
    main()
