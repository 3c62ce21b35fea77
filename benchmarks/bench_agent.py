"""Harness overhead per turn over a 100-turn scripted episode (issue 5).

Overhead = a turn's wall time minus the model's time and the command's time: rendering,
parsing, token counting, the budget block, saving the trajectory, callbacks. Compared in the
same run with what one `docker exec CONTAINER true` costs (mini-swe-agent's per-command price).

    .venv/bin/python benchmarks/bench_agent.py [--turns 100]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from cwm_agent import protocol
from cwm_agent.agent import Agent, Limits
from cwm_agent.models.connect import connect
from cwm_agent.sandbox.docker import DockerSandbox
from cwm_agent.bench.tasks import DEMO_TASK, load_tasks
from cwm_agent.paths import TASKS_DIR
from cwm_agent.models.tokens import EstimateCounter
from cwm_agent.trajectory import Trajectory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(base_url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(base_url + "/models", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the scripted server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def episode(model, repo: Path, turns: int, tmp: Path, issue: str):
    with DockerSandbox(repo=repo, run_id="bench-agent") as sandbox:
        trajectory = Trajectory(tmp / "trajectory.json", config={}, task={})
        agent = Agent(model, sandbox, limits=Limits(max_turns=turns), trajectory=trajectory)
        result = agent.run(issue)
        execs = []
        for _ in range(20):
            t0 = time.perf_counter()
            subprocess.run(["docker", "exec", sandbox.container_id, "true"], check=True)
            execs.append((time.perf_counter() - t0) * 1000)
    overhead = [s.timings["overhead"] * 1000 for s in trajectory.steps]
    command = [s.timings["command"] * 1000 for s in trajectory.steps]
    return result, overhead, command, execs


def report(label: str, result, overhead: list[float], command: list[float], execs: list[float]) -> None:
    print(f"[{label}] {result.exit.value}, {result.turns} turns, {result.tokens:,} tokens in the transcript")
    print(f"  harness overhead per turn: median {statistics.median(overhead):.2f} ms, "
          f"p95 {percentile(overhead, 0.95):.2f} ms, max {max(overhead):.2f} ms")
    print(f"  command time per turn (seq 1 150 through the session): median {statistics.median(command):.2f} ms")
    print(f"  baseline `docker exec C true`: median {statistics.median(execs):.1f} ms "
          f"= {statistics.median(execs) / statistics.median(overhead):.1f}x the median overhead")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=100)
    args = parser.parse_args()
    # ~1,000 tokens per turn: 100 turns reach ~100,000 tokens, as a long real episode does.
    reply = ("Let me look at the file once more. " * 60 + "\n</think>\n"
             + protocol.render_action(protocol.Action("bash", "seq 1 150")))
    task = load_tasks(TASKS_DIR / DEMO_TASK)[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The stand-in server runs in its own process, as vLLM does, so it does not share our GIL.
        script = tmp / "script.json"
        script.write_text(json.dumps([reply] * (2 * args.turns)))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "cwm_agent.testing.scripted_server",
                                   "--script", str(script), "--port", str(port)], stdout=subprocess.DEVNULL)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            wait_for(base_url)
            repo = tmp / "repo"
            task.checkout(repo)
            model = connect(base_url=base_url, model=None, api_key=None, format=None)
            # 1. exact counts: one /tokenize request per turn, as with a real vLLM
            report("exact counts via /tokenize", *episode(model, repo, args.turns, tmp, task.problem_statement))
            latency = []
            for i in range(20):
                t0 = time.perf_counter()
                model.counter.count(f"a fresh text {i} " * 50)
                latency.append((time.perf_counter() - t0) * 1000)
            print(f"  one /tokenize round trip to the stand-in: median {statistics.median(latency):.2f} ms")
            # 2. the harness alone: estimated counts, no request
            model.counter = EstimateCounter()
            report("estimated counts (no request)", *episode(model, repo, args.turns, tmp, task.problem_statement))
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
