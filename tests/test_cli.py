"""The command line as users drive it: real subprocesses, real exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cwm_agent.paths import SCRIPTS_DIR

CLI = [sys.executable, "-m", "cwm_agent.cli"]
COMMANDS = ["solve", "show", "doctor", "sandbox", "cleanup"]


def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", [["solve"], ["show"], ["doctor"], ["sandbox", "build"], ["cleanup"]])
def test_each_command_help_has_an_example(command):
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Example:" in out.stdout


def assert_clean_failure(out, *needles: str):
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    for needle in needles:
        assert needle in out.stdout + out.stderr


def test_missing_repo_is_one_line_and_exit_2(tmp_path):
    out = run("solve", "--repo", str(tmp_path / "nope"), "--issue", "x", "--out", str(tmp_path / "o"))
    assert_clean_failure(out, "does not exist", "--repo")


def test_missing_issue_file_is_exit_2(tmp_path):
    out = run("solve", "--repo", str(tmp_path), "--issue", "issues/missing.md", "--out", str(tmp_path / "o"))
    assert_clean_failure(out, "issue file issues/missing.md does not exist")


def test_unreadable_issue_file_is_exit_2(tmp_path):
    if os.geteuid() == 0:  # root reads everything; a directory named like a file is unreadable as text
        issue = tmp_path / "issue.md"
        issue.mkdir()
    else:
        issue = tmp_path / "issue.md"
        issue.write_text("x")
        issue.chmod(0)
    out = run("solve", "--repo", str(tmp_path), "--issue", str(issue), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_unreachable_endpoint_is_exit_2(tmp_path):
    out = run("solve", "--repo", str(tmp_path), "--issue", "fix it", "--base-url", "http://127.0.0.1:9/v1",
              "--out", str(tmp_path / "o"))
    assert_clean_failure(out, "127.0.0.1:9")


def test_no_docker_daemon_is_exit_2_with_the_fix(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    out = run("cleanup", env=env)
    assert_clean_failure(out, "install-docker.sh")


def test_debug_shows_the_traceback(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    out = run("--debug", "cleanup", env=env)
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_bad_format_flag_is_exit_2(tmp_path):
    out = run("solve", "--repo", str(tmp_path), "--issue", "x", "--format", "xml")
    assert_clean_failure(out, "--format must be cwm or chat")


def test_doctor_names_the_fix_when_docker_is_down(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock", "COLUMNS": "250"}
    out = run("doctor", env=env)
    assert out.returncode == 1
    assert f"bash {SCRIPTS_DIR / 'install-docker.sh'}" in out.stdout  # the script that ships with the package


@pytest.mark.docker
def test_doctor_is_all_green_after_setup(docker_client, sandbox_image):
    out = run("doctor", env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stdout
    assert "All green" in out.stdout


@pytest.mark.docker
def test_sandbox_build_is_cached_by_recipe(docker_client, sandbox_image):
    out = run("sandbox", "build", env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    assert sandbox_image in out.stdout and "MB" in out.stdout


@pytest.mark.slow
@pytest.mark.docker
def test_readme_main_command_runs_to_a_named_exit_with_the_embedded_model(tmp_path, docker_client, sandbox_image):
    # The README's first command, shortened to two turns: the toy model will not solve the task,
    # but the episode must end cleanly with a named exit and a trajectory.
    out = run("solve", "--task", "demo", "--max-turns", "2", "--json", "--out", str(tmp_path / "run"), timeout=1500)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["exit"] in ("turn_limit", "format_errors")
    trajectory = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    assert trajectory["model"]["name"].startswith("SmolLM2") and len(trajectory["steps"]) == 2
    assert docker_client.containers.list(all=True, ignore_removed=True, filters={"label": f"cwm-agent={trajectory['task']['run_id']}"}) == []


@pytest.mark.parametrize("command, default", [("solve", "default 5"), ("eval", "default 0")])
def test_solve_and_eval_take_the_scoring_and_format_error_flags(command, default):
    out = run(command, "--help", env={"COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    assert "--grade-unfinished" in out.stdout and "--no-grade-unfinished" in out.stdout
    assert "--max-format-errors" in out.stdout and default in out.stdout
