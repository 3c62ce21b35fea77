"""Sandbox costs, measured in one run on this host's Docker engine.

1. Per-command round trip: `true` through the session of a DockerSandbox versus
   `docker exec CONTAINER true` (goal: the session at least 50 times faster).
2. Time to a ready sandbox (container start, copy of a 50 MB repository with its
   history, start-up script) versus a bare `docker run --rm IMAGE true`
   (goal: under 1.5 times), in the default copy mode (bind, for an engine on this
   host) and, for comparison, in archive mode (put_archive, for a remote engine).

Usage: .venv/bin/python benchmarks/bench_sandbox.py [--image IMAGE] [--repeat N] [--size-mb 50]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cwm_agent.sandbox.docker import COPY_ENV, DockerSandbox, docker_client  # noqa: E402
from cwm_agent.sandbox.repo_copy import RepoCopy  # noqa: E402


def make_repo(path: Path, size_mb: int) -> None:
    """A git repository of about `size_mb` MB of source-like text in 3 commits."""
    path.mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("config", "user.email", "bench@example.com")
    run("config", "user.name", "bench")
    seed = os.urandom(1 << 16).hex()  # text that compresses like real code, roughly
    files = size_mb * 10  # files of about 100 KB
    per_commit = files // 3 + 1
    for commit in range(3):
        for i in range(commit * per_commit, min(files, (commit + 1) * per_commit)):
            folder = path / f"pkg{i % 20}"
            folder.mkdir(exist_ok=True)
            start = (i * 7919) % (len(seed) - 1000)
            text = "\n".join(f"line_{i}_{n} = '{seed[(start + n * 37) % (len(seed) - 64):][:64]}'"
                             for n in range(1200))
            (folder / f"mod{i}.py").write_text(text + "\n")
        run("add", "-A")
        run("commit", "-q", "-m", f"commit {commit}")
    (path / "untracked.txt").write_text("not committed yet\n")


def seconds(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=None, help="default: the base sandbox image")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()
    client = docker_client()
    if args.image is None:
        from cwm_agent.sandbox.image import ensure_image

        args.image = ensure_image(client)
    image = args.image

    with tempfile.TemporaryDirectory(prefix="cwm-bench-") as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo, args.size_mb)
        du = subprocess.run(["du", "-sm", str(repo)], capture_output=True, text=True).stdout.split()[0]
        print(f"repository: {du} MB on disk (work tree + .git), image {image}")

        # Warm the engine and the page cache once, untimed.
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "true"], check=True)
        DockerSandbox(image, repo=repo).close()

        bare = seconds(lambda: subprocess.run(["docker", "run", "--rm", "--network", "none", image, "true"],
                                              check=True), args.repeat)
        ready: list[float] = []
        steps: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            t = time.perf_counter()
            sandbox = DockerSandbox(image, repo=repo)
            ready.append(time.perf_counter() - t)
            for step, at in sandbox.start_timings.items():
                steps.setdefault(step, []).append(at)
            sandbox.close()

        # The other way in, for an engine that cannot see this host's files: the tar
        # through the engine's API.
        os.environ[COPY_ENV] = "archive"
        try:
            ready_archive = seconds(lambda: DockerSandbox(image, repo=repo).close(), args.repeat)
        finally:
            del os.environ[COPY_ENV]

        # Where the time goes: the tar alone (built on the host, in a thread, from the
        # outset), and the engine's extraction of the same tar alone.
        tar_build = seconds(lambda: RepoCopy(repo).bytes(), args.repeat)
        archive = RepoCopy(repo).bytes()
        copy_only: list[float] = []
        for _ in range(args.repeat):
            created = client.api.create_container(image, ["true"], labels={"cwm-agent": "bench"},
                                                  host_config=client.api.create_host_config(network_mode="none"))
            t = time.perf_counter()
            client.api.put_archive(created["Id"], "/", archive)
            copy_only.append(time.perf_counter() - t)
            client.api.remove_container(created["Id"], force=True)

        with DockerSandbox(image, repo=repo) as sandbox:
            for _ in range(100):  # warm-up
                sandbox.run("true")
            t = time.perf_counter()
            for _ in range(args.commands):
                sandbox.run("true")
            session = (time.perf_counter() - t) / args.commands
            execs = seconds(lambda: subprocess.run(["docker", "exec", sandbox.container_id, "true"], check=True),
                            max(20, args.repeat * 4))

    exec_med = statistics.median(execs)
    bare_med, ready_med = statistics.median(bare), statistics.median(ready)
    print(f"round trip of `true`: session {session * 1e3:.3f} ms (mean of {args.commands}), "
          f"docker exec {exec_med * 1e3:.1f} ms (median of {len(execs)}): "
          f"{exec_med / session:.0f}x faster (goal >= 50x)")
    print(f"ready sandbox with a {args.size_mb} MB repository: {ready_med:.3f} s, bare docker run: "
          f"{bare_med:.3f} s (medians of {args.repeat}): ratio {ready_med / bare_med:.2f} (goal < 1.5)")
    print(f"  all ready: {' '.join(f'{x:.3f}' for x in ready)}; all bare: {' '.join(f'{x:.3f}' for x in bare)}")
    print(f"  copy mode {sandbox.copy_mode()}; the same through put_archive (copy mode archive, for a "
          f"remote engine; includes close): {statistics.median(ready_archive):.3f} s, "
          f"ratio {statistics.median(ready_archive) / bare_med:.2f}")
    print("  steps of a ready sandbox, seconds from its start (medians): "
          + ", ".join(f"{step} {statistics.median(at):.3f}" for step, at in steps.items()))
    print(f"  building the {len(archive) / 1e6:.0f} MB tar alone takes {statistics.median(tar_build):.3f} s; "
          f"the engine's put_archive of it alone {statistics.median(copy_only):.3f} s "
          f"({statistics.median(copy_only) / bare_med:.2f}x a bare run)")


if __name__ == "__main__":
    main()
