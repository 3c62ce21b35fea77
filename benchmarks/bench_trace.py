"""How much slower is a program under the tracer than untraced?

Runs each program once untraced and once traced, both through the same child
process (`run_trace(..., trace=False)` / `run_trace(...)`), and compares the time
of the entry call itself as measured inside the child (so interpreter start-up
and module loading are left out of both). Also prints the traced wall time
(start-up, tracing, reading the frames back and rendering the text) and the
cost per frame. One run per program: expect noise of a few percent.

    .venv/bin/python benchmarks/bench_trace.py
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path

from cwm_agent.world.trace import run_trace

PROGRAMS: dict[str, tuple[str, str]] = {
    "strawberry": (
        """
        def count_letters(s, letter):
            n = 0
            for c in s:
                n += int(c == letter)
            return n

        def f(c):
            word = "strawberry" * 200
            return count_letters(word, c)
        """,
        'f("r")',
    ),
    "arith loop": (
        """
        def sum_squares(n):
            total = 0
            for i in range(n):
                total += i * i
            return total
        """,
        "sum_squares(30_000)",
    ),
    "recursion": (
        """
        def fib(n):
            if n < 2:
                return n
            return fib(n - 1) + fib(n - 2)
        """,
        "fib(18)",
    ),
    "word count": (
        """
        def count_words(text):
            counts = {}
            for word in text.split():
                counts[word] = counts.get(word, 0) + 1
            return sorted(counts.items(), key=lambda kv: -kv[1])[:3]

        def main(n):
            words = ["alpha", "beta", "gamma", "delta", "eps"]
            text = " ".join(words[i * 7 % 5] for i in range(n))
            return count_words(text)
        """,
        "main(5_000)",
    ),
    "objects": (
        """
        class Account:
            def __init__(self, owner):
                self.owner = owner
                self.balance = 0

            def deposit(self, amount):
                self.balance += amount
                return self.balance

        def simulate(n):
            accounts = [Account(f"user{i}") for i in range(10)]
            for step in range(n):
                accounts[step % 10].deposit(step)
            return sum(a.balance for a in accounts)
        """,
        "simulate(5_000)",
    ),
    "big locals": (
        """
        def churn(rounds):
            data = list(range(20_000))
            table = {i: str(i) for i in range(5_000)}
            for r in range(rounds):
                data[r] = -r
                table[r] = "x"
            return data[:3], len(table)
        """,
        "churn(300)",
    ),
}


def main() -> None:
    print(f"{'program':<12} {'frames':>8} {'untraced ms':>12} {'traced ms':>10} {'slowdown':>9} "
          f"{'wall ms':>8} {'us/frame':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (source, call) in PROGRAMS.items():
            path = Path(tmp, name.replace(" ", "_") + ".py")
            path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
            plain = run_trace(path, call, trace=False, timeout=120)
            started = time.perf_counter()
            traced = run_trace(path, call, max_steps=10_000_000, timeout=120)
            wall = time.perf_counter() - started
            if not traced.halted or plain.seconds is None or traced.seconds is None:
                print(f"{name:<12} failed: {traced.stop_reason}: {traced.error or plain.error}")
                continue
            ratio = traced.seconds / plain.seconds
            print(f"{name:<12} {traced.steps:>8} {plain.seconds * 1e3:>12.2f} {traced.seconds * 1e3:>10.1f} "
                  f"{ratio:>8.0f}x {wall * 1e3:>8.0f} {traced.seconds / traced.steps * 1e6:>9.2f}")


if __name__ == "__main__":
    main()
