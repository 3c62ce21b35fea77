"""How much does the protocol cost per turn late in an episode?

Builds a 100-turn, ~100,000-token CWM transcript, then times what the agent does
with turn 100: record the completion, parse its action, build the budgeted tool
result, append it, and render the next `.prompt` (the full text for
/v1/completions). Token counts use EstimateCounter. Prints the median of many
runs, with a breakdown.

    .venv/bin/python benchmarks/bench_protocol.py [--turns 100] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from cwm_agent import protocol
from cwm_agent.models.tokens import EstimateCounter

REASONING = (
    "The failing test calls parse('') and the traceback ends in tokenizer.py line {n}. "
    "I should look at how _tokenize_line handles an empty line and whether the caller guards it. "
) * 6
OUTPUT_LINE = "src/pkg/module_{i}.py:{n}:    return self._items.get(key, default)  # cache lookup\n"


def completion(turn: int) -> str:
    body = f"grep -rn 'get(' src/pkg | head -n {turn}"
    return REASONING.format(n=turn) + "</think>\n" + protocol.render_action(protocol.Action("bash", body))


def feedback(turn: int) -> str:
    return "".join(OUTPUT_LINE.format(i=i, n=turn) for i in range(28))


def build(turns: int, count) -> tuple[protocol.Transcript, int]:
    transcript = protocol.Transcript.start(protocol.system_prompt(), protocol.issue_prompt("Empty input crashes."))
    used = count(transcript.prompt)
    for turn in range(1, turns):
        known = len(transcript.prompt)
        transcript.add_assistant(completion(turn))
        body = protocol.budgeted_tool_result(feedback(turn), remaining_turns=128 - turn,
                                             context_window=protocol.CONTEXT_WINDOW, tokens_so_far=used, count=count)
        transcript.add_tool_result("bash", body)
        used += count(transcript.prompt[known:])
    return transcript, used


def one_turn(transcript: protocol.Transcript, turn: int, used: int, count) -> dict[str, float]:
    text = completion(turn)
    t0 = time.perf_counter()
    transcript.add_assistant(text)
    t1 = time.perf_counter()
    action = protocol.parse_action(text)
    t2 = time.perf_counter()
    body = protocol.budgeted_tool_result(feedback(turn), remaining_turns=128 - turn,
                                         context_window=protocol.CONTEXT_WINDOW, tokens_so_far=used, count=count)
    t3 = time.perf_counter()
    transcript.add_tool_result(action.tool, body)
    prompt = transcript.prompt
    t4 = time.perf_counter()
    assert prompt.endswith(protocol.generation_prompt())
    return {"append": t1 - t0, "parse_action": t2 - t1, "budgeted_tool_result": t3 - t2,
            "prompt": t4 - t3, "total": t4 - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    count = EstimateCounter().count

    samples: dict[str, list[float]] = {}
    for _ in range(args.runs):
        transcript, used = build(args.turns, count)  # fresh each run: turn N's .prompt is never pre-cached
        for key, seconds in one_turn(transcript, args.turns, used, count).items():
            samples.setdefault(key, []).append(seconds * 1000)
    transcript, used = build(args.turns, count)
    one_turn(transcript, args.turns, used, count)
    chars = len(transcript.prompt)
    tokens = count(transcript.prompt)

    median = {key: statistics.median(values) for key, values in samples.items()}
    print(f"history: {args.turns} turns, {tokens:,} estimated tokens, {chars:,} characters")
    for key in ("append", "parse_action", "budgeted_tool_result", "prompt"):
        print(f"  {key:22s} median {median[key]:8.3f} ms")
    print(f"RESULT turn {args.turns} of a {tokens:,}-token history: render .prompt + parse_action + "
          f"budgeted_tool_result = {median['total']:.3f} ms median over {args.runs} runs "
          f"(p90 {statistics.quantiles(samples['total'], n=10)[-1]:.3f} ms)")


if __name__ == "__main__":
    main()
