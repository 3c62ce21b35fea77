"""The Ray backend against the thread backend, in the same run, on the same tasks (issue 16).

A local cluster (tests/_ray_cluster.py: a head and a second node, one `docker` slot each) and
two threads run the bundled tasks, each attempt solved by the scripted model (gold patch, a
test run, submit) with a fixed think time per reply. Reports tasks per hour both ways and
their ratio, the cluster's start-up time, and the driver's memory (RSS) as attempts finish:
it must not grow with them (the driver writes each trajectory and drops it).

    .venv/bin/python benchmarks/bench_ray.py [--attempts 3] [--think 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ray_cluster import RayCluster  # noqa: E402
from bench_eval import solver  # noqa: E402

from cwm_agent.bench import runner as evaluate  # noqa: E402
from cwm_agent.bench.tasks import load_tasks  # noqa: E402
from cwm_agent.config import Settings  # noqa: E402
from cwm_agent.models.connect import connect  # noqa: E402
from cwm_agent.paths import TASKS_DIR  # noqa: E402
from cwm_agent.testing.scripted_server import ScriptedServer  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(tasks, server, out: Path, **opts) -> tuple[float, list[tuple[int, float]]]:
    model = connect(base_url=server.base_url, model=None, api_key=None, format=None)
    settings = Settings(base_url=server.base_url, max_turns=10)
    memory: list[tuple[int, float]] = []

    def on_update(progress) -> None:
        if not memory or memory[-1][0] != progress.finished:
            memory.append((progress.finished, rss_mb()))

    started = time.monotonic()
    results = evaluate.run_eval(tasks, evaluate.EvalOptions(out=out, **opts), settings, model=model,
                                on_update=on_update)
    seconds = time.monotonic() - started
    assert all(r.resolved for r in results), [(r.instance_id, r.exit, r.detail) for r in results if not r.resolved]
    return seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--think", type=float, default=0.3, help="seconds the stand-in spends per reply")
    args = parser.parse_args()
    tasks = load_tasks(TASKS_DIR)
    items = len(tasks) * args.attempts
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer([solver(tasks, args.think)] * (6 * items * 2)) as server:
        with RayCluster(Path(tmp) / "cluster", nodes=2, docker=1) as cluster:
            print(f"cluster start-up (head + 1 node, `ray start`): {cluster.startup_seconds:.1f} s")
            threads, _ = one_run(tasks, server, Path(tmp) / "threads", workers=2, attempts=args.attempts)
            ray, memory = one_run(tasks, server, Path(tmp) / "ray", backend="ray", address=cluster.address,
                                  workers=0, attempts=args.attempts)
    print(f"{items} attempts ({len(tasks)} tasks x {args.attempts}), 2 at a time, think {args.think} s per reply")
    print(f"threads: {threads:.1f} s = {items / threads * 3600:,.0f} tasks/hour")
    print(f"ray:     {ray:.1f} s = {items / ray * 3600:,.0f} tasks/hour "
          f"(includes ray.init and the first worker start-up)")
    print(f"ray / threads wall time: {ray / threads:.2f}x; overhead per attempt: "
          f"{(ray - threads) / items * 2:.2f} s of slot time")
    early = statistics.mean(mb for n, mb in memory if 1 <= n <= 5)
    late = statistics.mean(mb for n, mb in memory if n > items - 5)
    print(f"driver RSS: {early:.0f} MB after the first 5 attempts, {late:.0f} MB after the last 5 "
          f"({(late - early) / max(1, items - 5) * 1024:.0f} KB per finished attempt)")


if __name__ == "__main__":
    main()
