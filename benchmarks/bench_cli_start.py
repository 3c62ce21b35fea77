"""How long does `cwm-agent --help` take to start, installed from the wheel?

Runs `VENV/bin/cwm-agent --help` and, in the same run and interleaved with it,
`VENV/bin/python -c pass` (the interpreter's own floor) and `VENV/bin/python -c "import
cwm_agent.cli.main"` (the import alone); prints the median of each and the ratios to the floor.
Runs from a temporary directory with PYTHONPATH unset, so the checkout is not on the path.
Make the venv as tests/test_wheel.py does (`python -m build --wheel`, then a fresh venv
and `pip install dist/*.whl`, no extras).

    .venv/bin/python benchmarks/bench_cli_start.py VENV [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="virtual environment holding the installed wheel")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    python, cli = args.venv / "bin" / "python", args.venv / "bin" / "cwm-agent"
    if not cli.exists():
        sys.exit(f"{cli} not found: install the wheel into {args.venv} first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cases = {
        "python -c pass": [str(python), "-c", "pass"],
        "import cwm_agent.cli.main": [str(python), "-c", "import cwm_agent.cli.main"],
        "cwm-agent --help": [str(cli), "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as cwd:
        for cmd in cases.values():  # warm the page cache and write the .pyc files once
            timed(cmd, cwd, env)
        for _ in range(args.runs):
            for name, cmd in cases.items():
                times[name].append(timed(cmd, cwd, env))
    floor = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs, {args.venv}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:22} {median * 1000:7.1f} ms   x{median / floor:5.1f}   (min {min(samples) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
