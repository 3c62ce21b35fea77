"""Whole episodes through `cwm-agent solve`: real CLI process, real Docker, real HTTP.

The model is the scripted server (the one stand-in); everything else is real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwm_agent import protocol
from cwm_agent.bench.tasks import DEMO_TASK, load_tasks
from cwm_agent.paths import TASKS_DIR
from cwm_agent.testing.scripted_server import Failure, Reply, ScriptedServer, think

pytestmark = pytest.mark.docker
CLI = [sys.executable, "-m", "cwm_agent.cli"]


def solve(server: ScriptedServer, out: Path, *args: str, timeout: float = 300, **popen):
    cmd = [*CLI, "solve", "--base-url", server.base_url, "--out", str(out), "--json", "--command-timeout", "30", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def trajectory(out: Path) -> dict:
    return json.loads((out / "trajectory.json").read_text())


def containers(client, run_id: str | None = None) -> list:
    labels = ["cwm-agent"] if run_id is None else [f"cwm-agent={run_id}"]
    return client.containers.list(all=True, ignore_removed=True, filters={"label": labels})


DEMO_SCRIPT = [
    think("Let me look at how slugify splits words.", "bash", "grep -n 'text = ' slugkit/core.py"),
    think("Accents must be folded before splitting. Import unicodedata first.", "edit",
          "slugkit/core.py\n<<<<<<< SEARCH\nimport re\nfrom typing import Iterable, Optional\n=======\n"
          "import re\nimport unicodedata\nfrom typing import Iterable, Optional\n>>>>>>> REPLACE"),
    think("Now normalise before the apostrophes are removed.", "edit",
          'slugkit/core.py\n<<<<<<< SEARCH\n    text = _APOSTROPHES.sub("", text).lower()\n=======\n'
          '    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")\n'
          '    text = _APOSTROPHES.sub("", text).lower()\n>>>>>>> REPLACE'),
    think("A regression test.", "create",
          "tests/test_accents.py\nfrom slugkit import slugify\n\n\ndef test_accents():\n"
          "    assert slugify(\"Crème Brûlée\") == \"creme-brulee\"\n"),
    think("Run the tests.", "bash", "python3 -m pytest -q tests 2>&1 | tail -n 2"),
    think("Write the patch.", "bash", "git diff > fix.patch && wc -l fix.patch"),
    think("Submit it.", "submit", "fix.patch"),
    "The patch is in.\n</think>\n## Issue Summary\n\nAccents split words.\n\n## Solution and Code Changes\n\n"
    "Fold accents with NFKD before splitting.",
]


def test_demo_episode_produces_a_patch_that_passes_the_hidden_tests(tmp_path, docker_client, sandbox_image):
    task = load_tasks(TASKS_DIR / DEMO_TASK)[0]
    with ScriptedServer(DEMO_SCRIPT) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["exit"] == "submitted" and report["patch_applies"] is True
    data = trajectory(tmp_path / "run")
    steps = data["steps"]
    assert [s["action"]["tool"] for s in steps[:-1]] == ["bash", "edit", "edit", "create", "bash", "bash", "submit"]
    assert steps[1]["observation"].startswith("File slugkit/core.py has been successfully updated at line 5")
    assert steps[3]["observation"] == "File created successfully at: tests/test_accents.py (6 lines).\n"
    assert "passed" in steps[4]["observation"]
    assert data["summary"].startswith("## Issue Summary")
    # the prompt of turn 2 extends the prompt of turn 1 by exactly the completion and the new messages
    requests = [body for path, body in server.generation_requests()]
    assert requests[1]["prompt"].startswith(requests[0]["prompt"] + DEMO_SCRIPT[0])
    assert all(r["add_special_tokens"] is False and r["stop_token_ids"] == [128001, 128008, 128009] for r in requests)
    # the hidden tests pass with the produced patch, in a fresh container
    patch = (tmp_path / "run" / "patch.diff").read_text()
    assert "unicodedata" in patch
    checkout = tmp_path / "fresh"
    task.checkout(checkout)
    for diff in (patch, task.test_patch):
        subprocess.run(["git", "apply", "-"], input=diff, text=True, cwd=checkout, check=True)
    container = docker_client.containers.run(
        sandbox_image, ["python3", "-m", "pytest", "-q", *task.FAIL_TO_PASS, *task.PASS_TO_PASS],
        working_dir="/testbed", volumes={str(checkout): {"bind": "/testbed", "mode": "rw"}},
        network_mode="none", detach=True)
    try:
        status = container.wait(timeout=120)
        assert status["StatusCode"] == 0, container.logs().decode()
    finally:
        container.remove(force=True)
    assert containers(docker_client, data["task"]["run_id"]) == []


def test_malformed_replies_get_the_spec_errors_then_the_episode_recovers(tmp_path, sandbox_image):
    script = [
        "I will just talk.\n</think>\nNo tool here.",
        think("two", "bash", "ls") + "\n" + protocol.render_action(protocol.Action("bash", "pwd")),
        think("unknown", "python", "print(1)"),
        "no think end <tool: bash>\nls\n</tool>",
        think("Fine.", "bash", "echo recovered"),
        Reply("rambling on and on without end", finish_reason="length"),
        think("Submit nothing real.", "bash", "echo 'not a diff' > p.txt"),
        think("Try.", "submit", "p.txt"),
        think("Out of turns.", "bash", "echo never runs"),
    ]
    # --max-turns 9: replies 1-8 run, reply 9 meets the turn limit before its action runs
    with ScriptedServer(script) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK, "--max-turns", "9")
    assert result.returncode == 1, result.stderr
    data = trajectory(tmp_path / "run")
    steps = data["steps"]
    assert steps[0]["format_error"] == "FormatError: No tool calls found"
    assert steps[1]["format_error"] == ("FormatError: Expected one tool call, but found 2: bash, bash. "
                                        "Ensure only one <tool:...></tool> block is present in the response.")
    assert steps[2]["format_error"] == "NoSuchToolError: Tool 'python' not found."
    assert steps[3]["format_error"] == "FormatError: Expected exactly one thinking end token, got 0"
    assert steps[4]["observation"] == "recovered\n"
    assert steps[5]["cut_off"] is True
    assert steps[5]["format_error"] == "FormatError: Expected exactly one thinking end token, got 0"
    assert steps[7]["observation"] == "Failed to submit p.txt. It is not a valid diff file."
    assert data["exit"] == "turn_limit"
    # the error went back to the model as a user message holding just that line
    second_prompt = server.generation_requests()[1][1]["prompt"]
    assert second_prompt.endswith(protocol.render_message("user", "FormatError: No tool calls found")
                                  + protocol.generation_prompt())


def test_consecutive_format_errors_end_the_episode(tmp_path, sandbox_image):
    with ScriptedServer(["no tool\n</think>\nhello"] * 5) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK)
    assert result.returncode == 1
    assert json.loads(result.stdout)["exit"] == "format_errors"
    data = trajectory(tmp_path / "run")
    assert len(data["steps"]) == 5
    assert data["config"]["max_format_errors"] == 5  # solve's default, recorded


def test_server_errors_are_retried_and_the_episode_continues(tmp_path, sandbox_image):
    script = [Failure(500, "boom"), Failure(500, "boom again"), think("ok", "bash", "echo alive"),
              think("go on", "bash", "echo two"), think("stop", "bash", "echo never runs")]
    with ScriptedServer(script) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK, "--max-turns", "3")
    assert result.returncode == 1, result.stderr
    data = trajectory(tmp_path / "run")
    assert data["exit"] == "turn_limit"
    assert [s["observation"] for s in data["steps"] if s["observation"] is not None] == ["alive\n", "two\n"]
    assert len(server.generation_requests()) == 5


def test_unreachable_model_mid_episode_is_an_infrastructure_exit(tmp_path, sandbox_image):
    script = [think("ok", "bash", "echo alive")] + [Failure(503, "down")] * 10
    with ScriptedServer(script) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK)
    assert result.returncode == 2
    assert json.loads(result.stdout)["exit"] == "model_error"


def test_context_limit_ends_the_episode(tmp_path, sandbox_image):
    script = [think("flood", "bash", "seq 1 3000")] + [think("more", "bash", "echo hi")] * 3
    with ScriptedServer(script, max_model_len=4000) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK)
    assert result.returncode == 1, result.stderr
    data = trajectory(tmp_path / "run")
    assert data["exit"] == "context_limit"
    # the flood filled the window; no prompt longer than the window was ever sent
    assert data["tokens"] > 4000
    assert len(server.generation_requests()) == 1
    assert len(data["steps"]) == 1 and data["steps"][0]["observation"].startswith("1\n2\n3\n")


def test_server_side_context_error_is_a_context_limit(tmp_path, sandbox_image):
    overflow = Failure(400, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.")
    with ScriptedServer([think("ok", "bash", "echo one"), overflow]) as server:
        result = solve(server, tmp_path / "run", "--task", DEMO_TASK)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["exit"] == "context_limit"
    assert len(server.generation_requests()) == 2  # not retried


def test_sigint_mid_command_saves_the_trajectory_and_leaves_no_container(tmp_path, docker_client, sandbox_image):
    script = [think("ok", "bash", "echo first"), think("wait", "bash", "sleep 60")]
    out = tmp_path / "run"
    with ScriptedServer(script) as server:
        proc = subprocess.Popen([*CLI, "solve", "--base-url", server.base_url, "--out", str(out), "--json",
                                 "--task", DEMO_TASK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(server.generation_requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the second command (sleep 60) is now running in the sandbox
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    data = trajectory(out)
    assert data["exit"] == "interrupted"
    assert data["steps"][0]["observation"] == "first\n"
    assert containers(docker_client, data["task"]["run_id"]) == []


def test_host_repo_is_untouched_without_apply_and_patched_with_it(tmp_path, sandbox_image):
    task = load_tasks(TASKS_DIR / DEMO_TASK)[0]
    repo = tmp_path / "repo"
    task.checkout(repo)
    before = (repo / "slugkit" / "core.py").read_text()
    issue = tmp_path / "issue.md"
    issue.write_text(task.problem_statement)
    with ScriptedServer(DEMO_SCRIPT) as server:
        result = solve(server, tmp_path / "a", "--repo", str(repo), "--issue", str(issue))
    assert result.returncode == 0, result.stderr
    assert (repo / "slugkit" / "core.py").read_text() == before
    assert not (repo / "fix.patch").exists()
    with ScriptedServer(DEMO_SCRIPT) as server:
        result = solve(server, tmp_path / "b", "--repo", str(repo), "--issue", str(issue), "--apply")
    assert result.returncode == 0, result.stderr
    assert "unicodedata" in (repo / "slugkit" / "core.py").read_text()


def submit_then_run_out(patch: str) -> list[str]:
    """--max-turns 3: reply 1 writes the patch, reply 2 submits it, reply 3 meets the turn limit."""
    return [think("Write the fix.", "bash", f"cat > fix.patch <<'EOF_PATCH'\n{patch}EOF_PATCH"),
            think("Submit it.", "submit", "fix.patch"),
            think("One more look before the summary.", "bash", "git status --short")]


def test_an_episode_the_turn_limit_ended_is_not_a_solution_whatever_it_submitted(tmp_path, sandbox_image):
    gold = load_tasks(TASKS_DIR / DEMO_TASK)[0].patch
    out = tmp_path / "run"
    with ScriptedServer(submit_then_run_out(gold)) as server:
        result = subprocess.run([*CLI, "solve", "--base-url", server.base_url, "--out", str(out), "--task", DEMO_TASK,
                                 "--max-turns", "3"], capture_output=True, text=True, timeout=300,
                                env={**__import__("os").environ, "COLUMNS": "250"})
    assert result.returncode == 1, result.stderr + result.stdout
    assert "the episode did not finish (turn_limit)" in result.stdout and "not counted" in result.stdout
    assert (out / "patch.diff").read_text().strip() == gold.strip()  # still there for the user to look at
    summary = (out / "summary.md").read_text()
    assert "applies to the base" in summary and "did not finish (turn_limit)" in summary and "not counted" in summary
    data = trajectory(out)
    assert (data["exit"], data["finished"], data["counted"], data["patch_applies"]) == ("turn_limit", False, False, True)
    assert data["config"]["grade_unfinished"] is False

    # --grade-unfinished: today's rule, for comparisons with harnesses that submit on exit
    with ScriptedServer(submit_then_run_out(gold)) as server:
        again = solve(server, tmp_path / "again", "--task", DEMO_TASK, "--max-turns", "3", "--grade-unfinished")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["exit"], report["finished"], report["counted"], report["patch_applies"]) == (
        "turn_limit", False, True, True)
    assert trajectory(tmp_path / "again")["config"]["grade_unfinished"] is True


def pyc_noise_script(gold: str) -> list[str]:
    """Run pytest, then `git add -A && git diff --cached`: in a repository without a .gitignore
    the patch carries __pycache__/*.pyc as "Binary files ... differ" with no data."""
    return [
        think("Apply the fix and run the tests.", "bash",
              f"cat > /tmp/gold.patch <<'EOF_PATCH'\n{gold}EOF_PATCH\ngit apply /tmp/gold.patch && "
              "unset PYTHONDONTWRITEBYTECODE && python3 -m pytest -q tests 2>&1 | tail -n 1"),
        think("Write the patch.", "bash", "git add -A && git diff --cached > fix.patch && grep -c '^Binary files' fix.patch"),
        think("Submit it.", "submit", "fix.patch"),
        "Done.\n</think>\nFolded accents before splitting.",
    ]


def test_binary_files_without_data_are_named_and_skipped_not_a_failure(tmp_path, sandbox_image):
    task = load_tasks(TASKS_DIR / DEMO_TASK)[0]
    repo = tmp_path / "repo"
    task.checkout(repo)
    subprocess.run(["git", "rm", "-q", ".gitignore"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no .gitignore"], cwd=repo,
                   check=True)
    issue = tmp_path / "issue.md"
    issue.write_text(task.problem_statement)
    with ScriptedServer(pyc_noise_script(task.patch)) as server:
        result = solve(server, tmp_path / "a", "--repo", str(repo), "--issue", str(issue))
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    patch = (tmp_path / "a" / "patch.diff").read_text()
    assert "Binary files /dev/null and b/slugkit/__pycache__/" in patch  # the noise is really there
    skipped = report["skipped_binary_files"]
    assert skipped and all("__pycache__/" in path and path.endswith(".pyc") for path in skipped)
    assert report["patch_applies"] is True and report["exit"] == "submitted"
    assert report["patch_applied_with"] == "patch --batch --forward --fuzz=5 -p1 -i"  # the grader's chain
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "skipped binary files with no data" in summary and skipped[0] in summary

    # --apply: the same chain, on the host; the .pyc files are skipped, named, not created empty
    with ScriptedServer(pyc_noise_script(task.patch)) as server:
        applied = subprocess.run([*CLI, "solve", "--base-url", server.base_url, "--out", str(tmp_path / "b"),
                                  "--repo", str(repo), "--issue", str(issue), "--apply"],
                                 capture_output=True, text=True, timeout=300,
                                 env={**__import__("os").environ, "COLUMNS": "400"})
    assert applied.returncode == 0, applied.stderr + applied.stdout
    assert f"applied to {repo}" in applied.stdout and "skipped binary files with no data" in applied.stdout
    assert "unicodedata" in (repo / "slugkit" / "core.py").read_text()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    assert status == " M slugkit/core.py\n"


def test_a_latin1_patch_is_kept_byte_for_byte_and_sampling_follows_the_flags(tmp_path, sandbox_image):
    # A file in Latin-1: the model's patch carries a byte that is not UTF-8. CWM's submit reads the
    # file's bytes (`cat`), so the patch on disk must be those bytes and must still apply.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "menu.txt").write_bytes(b"caf\xe9 au lait\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "b"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    script = [think("Latin-1 edit.", "bash", "printf 'caf\\xe9 noir\\n' > menu.txt && git diff > fix.diff"),
              think("Submit.", "submit", "$PWD/fix.diff"),
              "Done.\n</think>\n## Issue Summary\n\nNoir."]
    with ScriptedServer(script) as server:
        result = solve(server, tmp_path / "run", "--repo", str(repo), "--issue", "Serve it black.",
                       "--temperature", "0.3", "--top-p", "0.5")
    assert result.returncode == 0, result.stderr + result.stdout
    patch = (tmp_path / "run" / "patch.diff").read_bytes()
    assert b"-caf\xe9 au lait\n+caf\xe9 noir\n" in patch
    check = subprocess.run(["git", "apply", "--check", "-"], input=patch, cwd=repo, capture_output=True)
    assert check.returncode == 0, check.stderr
    data = trajectory(tmp_path / "run")  # the trajectory still loads, the patch's bytes escaped in it
    assert data["submission"].encode("utf-8", "surrogateescape") == patch
    assert (data["config"]["temperature"], data["config"]["top_p"]) == (0.3, 0.5)
    assert all((body["temperature"], body["top_p"]) == (0.3, 0.5) for _, body in server.generation_requests())
