"""The cost of the chat's per-step snapshots (cwm_agent/sandbox/snapshot.py), measured in one run
on this host's Docker engine with a 50 MB repository (bench_sandbox.make_repo).

Per step, the model changes one file, then:
- take(): the work tree into the private index and a commit (median over the steps), against
  the baseline of one `true` through the model's session (`sandbox.run("true")`), one bare
  `sandbox.exec(["true"])` (the floor of anything run beside the session), and `sandbox.diff()`
  of the same state in the same run;
- take() when nothing changed (it returns the parent);
- restore() of one step (the /undo) and back again (a redo).
The first take of a sandbox, which makes the private index, is reported on its own.

Usage: .venv/bin/python benchmarks/bench_snapshot.py [--image IMAGE] [--steps N] [--size-mb 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sandbox import make_repo  # noqa: E402

from cwm_agent.sandbox import snapshot  # noqa: E402
from cwm_agent.sandbox.docker import DockerSandbox, docker_client  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=None, help="default: the base sandbox image")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()
    if args.image is None:
        from cwm_agent.sandbox.image import ensure_image

        args.image = ensure_image(docker_client())

    with tempfile.TemporaryDirectory(prefix="cwm-bench-") as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo, args.size_mb)
        du = subprocess.run(["du", "-sm", str(repo)], capture_output=True, text=True).stdout.split()[0]
        files = sum(1 for _ in repo.rglob("*.py"))
        print(f"repository: {du} MB on disk (work tree + .git), {files} files, image {args.image}")

        with DockerSandbox(args.image, repo=repo) as sandbox:
            for _ in range(50):  # warm-up
                sandbox.run("true")
            run_true = [timed(lambda: sandbox.run("true"))[0] for _ in range(200)]
            exec_true = [timed(lambda: sandbox.exec(["true"], timeout=60))[0] for _ in range(50)]
            first, parent = timed(lambda: snapshot.take(sandbox, "step-0"))
            takes, same, diffs, undos, redos, patch_sizes = [], [], [], [], [], []
            for step in range(1, args.steps + 1):
                module = step * 7 % (args.size_mb * 10)  # make_repo's files: pkg<i % 20>/mod<i>.py
                result = sandbox.run(f"echo 'step_{step} = {step}' >> pkg{module % 20}/mod{module}.py")
                assert result.exit_code == 0, result
                seconds, taken = timed(lambda: snapshot.take(sandbox, f"step-{step}", parent))
                assert taken != parent
                takes.append(seconds)
                seconds, again = timed(lambda: snapshot.take(sandbox, f"again-{step}", taken))
                assert again is taken
                same.append(seconds)
                seconds, patch = timed(sandbox.diff)
                diffs.append(seconds)
                patch_sizes.append(len(patch))
                seconds, changed = timed(lambda: snapshot.restore(sandbox, parent))
                assert len(changed) == 1, changed
                undos.append(seconds)
                seconds, changed = timed(lambda: snapshot.restore(sandbox, taken))
                assert len(changed) == 1, changed
                redos.append(seconds)
                parent = taken
            last_diff, _ = timed(lambda: snapshot.diff(sandbox, parent))

    take, run, exe, diff = (statistics.median(x) for x in (takes, run_true, exec_true, diffs))
    print(f"baseline: sandbox.run('true') {run * 1e3:.2f} ms (median of {len(run_true)}), "
          f"sandbox.exec(['true']) {exe * 1e3:.1f} ms (median of {len(exec_true)})")
    print(f"take() after one changed file: {take * 1e3:.1f} ms (median of {len(takes)}; "
          f"min {min(takes) * 1e3:.1f}, max {max(takes) * 1e3:.1f}): "
          f"{take / run:.0f}x a session round trip, {take / exe:.2f}x a bare exec, {take / diff:.2f}x sandbox.diff()")
    print(f"sandbox.diff() of the same state: {diff * 1e3:.1f} ms (median of {len(diffs)}; "
          f"patches up to {max(patch_sizes) / 1e3:.0f} kB)")
    print(f"take() with nothing changed (returns the parent): {ms(same)}")
    print(f"restore() one step back (undo): {ms(undos)}; forward again (redo): {ms(redos)}")
    print(f"first take() of the sandbox (makes the private index from the model's): {first * 1e3:.1f} ms; "
          f"snapshot.diff() of the last step: {last_diff * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
