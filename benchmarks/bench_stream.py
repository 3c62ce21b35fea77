"""How fast the CWM client takes in a streamed reply, against one plain (non-streamed) request.

Both requests ask the scripted vLLM stand-in on loopback for the same long reply
(20,000 tokens by default, one token per server-sent event, as vLLM streams);
the streamed one also calls an ``on_text`` callback per delta, as the CLI does.
The server runs in its own process (``python -m cwm_agent.testing.scripted_server``)
so it does not share the client's GIL. Every round runs both requests,
alternating which goes first; medians are printed with their ratio. The streamed
figure is the ceiling the client puts on a model server's speed (one H100
serving CWM writes on the order of 100 tokens/s per request).

    python benchmarks/bench_stream.py [--tokens 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from cwm_agent.models.client import Completion, CWMClient
from cwm_agent.testing.scripted_server import count_tokens

PROMPT = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nthink<|eot_id|>"
WORDS = [" the", " function", " returns", " None", " when", " x", " is", " empty", ",", "\n", "so", " we", " fix"]


def long_reply(tokens: int) -> str:
    """Reasoning-like text of exactly ``tokens`` scripted-server tokens."""
    text = "".join(WORDS[i % len(WORDS)] for i in range(tokens - 1)) + "."
    assert count_tokens(text) == tokens, count_tokens(text)
    return text


def start_server(script: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(script, f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cwm_agent.testing.scripted_server", "--script", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "scripted server: http://127.0.0.1:PORT/v1 (...)"
    return proc, line.split()[2], path


def measure(fn: Callable[[], Completion], reply: str, tokens: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for one request."""
    started, cpu = time.perf_counter(), time.process_time()
    done = fn()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done.text == reply and done.completion_tokens == tokens and done.finish_reason == "stop"
    return seconds, cpu


def run(tokens: int, rounds: int) -> None:
    reply = long_reply(tokens)
    proc, base_url, path = start_server([reply] * (2 * rounds + 2))
    deltas = 0

    def on_text(_delta: str) -> None:
        nonlocal deltas
        deltas += 1

    try:
        streaming = CWMClient(base_url, model="cwm-scripted", stream=True, retries=0)
        plain = CWMClient(base_url, model="cwm-scripted", stream=False, retries=0)

        def stream() -> Completion:
            return streaming.complete_text(PROMPT, max_tokens=tokens, on_text=on_text)

        def whole() -> Completion:
            return plain.complete_text(PROMPT, max_tokens=tokens)

        measure(stream, reply, tokens), measure(whole, reply, tokens)  # warm up connections
        deltas = 0
        times: dict[str, list[tuple[float, float]]] = {"stream": [], "whole": []}
        for i in range(rounds):
            order = [("stream", stream), ("whole", whole)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                times[name].append(measure(fn, reply, tokens))
        streaming.close()
        plain.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(path)

    s = statistics.median(t for t, _ in times["stream"])
    w = statistics.median(t for t, _ in times["whole"])
    s_cpu = statistics.median(c for _, c in times["stream"])
    w_cpu = statistics.median(c for _, c in times["whole"])
    print(f"reply: {tokens:,} tokens, {len(reply):,} characters; {rounds} rounds each, medians")
    print(
        f"streamed   : {tokens / s:12,.0f} tokens/s  ({s * 1000:8.1f} ms wall; client CPU "
        f"{s_cpu / tokens * 1e6:5.1f} us/token; {deltas // rounds:,} deltas to on_text)"
    )
    print(
        f"non-stream : {tokens / w:12,.0f} tokens/s  ({w * 1000:8.1f} ms wall; client CPU "
        f"{w_cpu / tokens * 1e6:5.1f} us/token)"
    )
    print(f"ratio      : streaming takes {s / w:.1f}x the plain request's time ({w / s:.3f}x its speed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(args.tokens, args.rounds)


if __name__ == "__main__":
    main()
