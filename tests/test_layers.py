"""The house's layers (pyproject.toml [tool.importlinter]): checked on every run, so CI fails when
an import crosses them (the loop importing a screen, the sandbox importing the model, a cycle)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and done.stdout.count("KEPT") == 5


def test_the_loop_and_the_runner_load_no_screen():
    # Not just declared: importing the loop, the runner and the grader loads none of our views and
    # no CLI library. (rich and click may load: httpx imports its own command line when they are there.)
    code = ("import sys; import cwm_agent.agent, cwm_agent.episode, cwm_agent.bench.runner, cwm_agent.bench.grade; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'prompt_toolkit') "
            "or m.startswith('cwm_agent.cli')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
