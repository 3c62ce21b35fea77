"""The HTML page of a trajectory (cwm_agent/report/trajectory.py; `show RUN --html [FILE]`, and
RUN/trajectory.html after `solve`), checked as text: what a browser does with it is
tests/test_html.py's. Trajectories are built with the recorder itself (Trajectory, Step), in the
shapes the agent and imagination write; one comes from a whole `solve` (dream: no sandbox)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwm_agent import protocol
from cwm_agent.bench.tasks import DEMO_TASK
from cwm_agent.cli.optional_value import with_empty_values
from cwm_agent.report import trajectory as page
from cwm_agent.testing.scripted_server import ScriptedServer, think
from cwm_agent.trajectory import Step, Trajectory

CLI = [sys.executable, "-m", "cwm_agent.cli"]
FAKE_KEY = "sk-live-0123456789abcdef"
PATCH = ("diff --git a/slugkit/core.py b/slugkit/core.py\n--- a/slugkit/core.py\n+++ b/slugkit/core.py\n"
         "@@ -1 +1,2 @@\n import re\n+import unicodedata\n")
RED = "\x1b[31mFAILED\x1b[0m tests/test_core.py::test_accents"


def tool_message(tool: str, feedback: str, turns: int, tokens: int) -> str:
    """The prompt delta that opens the next turn: the tool message with CWM's budget."""
    body = protocol.tool_result_body(feedback, remaining_turns=turns, remaining_tokens=tokens)
    return protocol.render_message(f"tool: {tool}", body) + protocol.generation_prompt()


def step(index: int, tool: str | None, body: str, observation: str | None, *, delta: str = "", context: int,
         reasoning: str = "Let me look.", **extra) -> Step:
    completion = (f"{reasoning}\n</think>\n" + protocol.render_action(protocol.Action(tool, body)) if tool
                  else f"{reasoning}\n</think>\n{body}")
    return Step(index=index, prompt_delta=delta, completion=completion, stop="<|eot_id|>", finish_reason="stop",
                action={"tool": tool, "body": body} if tool else None, observation=observation,
                command_status="ok" if observation is not None else None,
                exit_code=0 if observation is not None else None,
                timings={"model": 1.5, "command": 0.25, "overhead": 0.05},
                tokens={"prompt": context - 100, "completion": 100, "context_used": context}, **extra)


def write_trajectory(folder: Path, *, repo: Path) -> Path:
    """A finished five-turn episode: bash (red test output, the repo's absolute path, the key
    echoed), edit, create, a turn imagined in log mode, submit, then the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trajectory.json"
    config = {"base_url": "http://alice:hunter2-password@gpu-box:8000/v1", "api_key": FAKE_KEY,
              "hf_token": "hf_abcdefghijklmnop", "max_turns": 128, "context_window": 131072, "turn_tokens": 65536}
    traj = Trajectory(path, config=config, model={"name": "facebook/cwm", "format": "cwm"},
                      task={"label": "slugify-accents", "repo": str(repo),
                            "issue": "slugify() drops accented letters\n\nExpected 'creme-brulee'."})
    imagined = {"mode": "log", "tool": "bash", "kind": "tests", "prediction": "1 failed\nFAILED test_a\n",
                "tokens": {"prompt": 900, "completion": 12, "requests": 1}, "seconds": 0.4,
                "scores": {"exact": False, "line_similarity": 0.5, "first_line": True, "error_agreement": True,
                           "predicted_kind": "error", "actual_kind": "error"}}
    steps = [
        step(1, "bash", f"cd {repo} && python -m pytest -q --color=yes", f"{RED}\nin {repo}/slugkit/core.py\n"
             f"API_KEY={FAKE_KEY}\n" + "".join(f"line {i}\n" for i in range(60)), delta="<prompt>", context=1200),
        step(2, "edit", "slugkit/core.py\n<<<<<<< SEARCH\nimport re\n=======\nimport re\nimport unicodedata\n"
             ">>>>>>> REPLACE", "Edit applied.\n", context=1500),
        step(3, "create", "tests/test_accents.py\ndef test_accents():\n    assert True\n", "Created.\n", context=1700),
        step(4, "bash", "python -m pytest -q", "1 failed\nFAILED test_accents\n", context=1900, imagined=imagined),
        step(5, "submit", "fix.patch", protocol.FEEDBACK["submit_success"].format(patch=PATCH.removesuffix("\n")),
             context=2300, submitted=True),
        step(6, None, "## Summary\n\nAccents are folded.", None, context=2400, reasoning="Done."),
    ]
    for i, s in enumerate(steps[1:], 2):  # each turn's prompt opens with the previous tool message
        s.prompt_delta = tool_message(steps[i - 2].action["tool"], "…", 128 - i + 1, 131072 - 300 * i)
    for s in steps:
        traj.add(s)
    traj.finish(exit="submitted", detail="submitted and summarised", turns=6, tokens=2400,
                timings={"model": 9.0, "command": 1.5, "overhead": 0.5, "wall": 12.0},
                submission=PATCH, patch=PATCH, patch_applies=True, summary="## Summary\n\nAccents are folded.")
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    write_trajectory(tmp_path / "run", repo=tmp_path / "repo")
    return tmp_path / "run"


def test_page_shows_every_turn_the_outcome_and_the_imagination(run):
    html = page.write_html(run).read_text(encoding="utf-8")
    assert (run / "trajectory.html").is_file() and html.startswith("<!DOCTYPE html>")
    assert html.count('<section class="turn') == 6
    assert [int(n) for n in re.findall(r'data-turn="(\d+)"', html)] == [1, 2, 3, 4, 5, 6]
    header = re.search(r'<header id="summary"[^>]*>', html).group(0)
    assert 'data-exit="submitted"' in header and 'data-turns="6"' in header and 'data-tokens="2400"' in header
    assert ">6 turns<" in html and "slugify-accents" in html and "facebook/cwm" in html
    # time split: model 9.0, commands 1.5, everything else = wall - model - commands
    assert "model 9.0s" in html and "commands 1.5s" in html and "everything else 1.5s" in html
    # the patch as a coloured diff, the summary
    assert '<span class="add">+import unicodedata</span>' in html and '<span class="hunk">@@ -1 +1,2 @@</span>' in html
    assert '<section id="final-summary">' in html and "Accents are folded." in html
    # ANSI red became a span; the escape itself is gone
    assert '<span style="color:#cf222e">FAILED</span>' in html and "\x1b" not in html
    # a long observation: 40 lines shown, the rest folded
    assert "more lines" in re.search(r'id="turn-1".*?</section>', html, re.S).group(0)
    # reasoning folded; bash highlighted (inline styles), edit as removed/added lines, create as code
    assert '<details class="reasoning"><summary>reasoning: Let me look.</summary>' in html
    assert '<span class="add">import unicodedata</span>' in html and '<div class="path">tests/test_accents.py</div>' in html
    # the budget the model saw after a turn (in the next prompt), the step's time
    assert "budget left: 127 turns, 130,472 tokens" in html and "model 1.5s · command 0.25s" in html
    # imagination: both sides, the differing lines marked, the scores
    turn4 = re.search(r'id="turn-4".*?</section>', html, re.S).group(0)
    assert '<span class="only-imagined">1 failed</span>' not in turn4  # the same first line on both sides
    assert '<span class="only-imagined">FAILED test_a</span>' in turn4
    assert '<span class="only-real">FAILED test_accents</span>' in turn4
    assert "line similarity <b>0.50</b>" in turn4 and "exact" in turn4
    # timeline: one linked bar group per turn; search box; keys wired in the inline script
    assert html.count('href="#turn-') == 12 and '<input id="search"' in html and "'j'" in html


def test_no_secret_and_no_path_of_this_machine(run, tmp_path):
    html = page.write_html(run).read_text(encoding="utf-8")
    for secret in (FAKE_KEY, "hf_abcdefghijklmnop", "hunter2-password"):
        assert secret not in html
    assert str(tmp_path) not in html and "…/slugkit/core.py" in html
    home = os.path.expanduser("~")
    assert home in ("", "/") or home not in html
    # nothing to fetch: no external resource of any kind
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', html)
    kept = page.render(json.loads((run / "trajectory.json").read_text()), absolute_paths=True, folder=run)
    assert f"{tmp_path}/repo/slugkit/core.py" in kept and FAKE_KEY not in kept  # secrets even then


def test_show_html_writes_the_page_and_prints_its_path(run, tmp_path):
    default = subprocess.run([*CLI, "show", str(run), "--html"], capture_output=True, text=True, timeout=120)
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == str(run / "trajectory.html") and (run / "trajectory.html").is_file()
    out = tmp_path / "elsewhere.html"
    chosen = subprocess.run([*CLI, "show", str(run / "trajectory.json"), "--html", str(out), "--absolute-paths"],
                            capture_output=True, text=True, timeout=120)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == str(out) and str(tmp_path / "repo") in out.read_text(encoding="utf-8")
    # followed by another option, --html still takes no value; without --html the terminal view is as it was
    flag = subprocess.run([*CLI, "show", str(run), "--html", "-v"], capture_output=True, text=True, timeout=120)
    assert flag.returncode == 0 and flag.stdout.strip() == str(run / "trajectory.html")
    terminal = subprocess.run([*CLI, "show", str(run)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "160"})
    assert terminal.returncode == 0 and "turn 6" in terminal.stdout and "<html" not in terminal.stdout
    lone = subprocess.run([*CLI, "show", str(run), "--absolute-paths"], capture_output=True, text=True, timeout=120)
    assert lone.returncode == 2 and "--absolute-paths goes with --html" in lone.stderr


def test_an_option_value_may_be_left_out():
    assert with_empty_values(["RUN", "--html"], ("--html",)) == ["RUN", "--html="]
    assert with_empty_values(["RUN", "--html", "-v"], ("--html",)) == ["RUN", "--html=", "-v"]
    assert with_empty_values(["RUN", "--html", "x.html"], ("--html",)) == ["RUN", "--html", "x.html"]
    assert with_empty_values(["--", "--html"], ("--html",)) == ["--", "--html"]


def test_dream_and_lookahead_turns_and_an_unfinished_trajectory(tmp_path):
    traj = Trajectory(None, config={}, task={"label": "t"})
    traj.header["imagination"] = {"mode": "dream", "note": "no sandbox: every observation was imagined"}
    traj.add(step(1, "bash", "ls", "README.md\n", context=500,
                  imagined={"mode": "dream", "kind": "ls/cat/grep", "prediction": "README.md\n", "tokens": {}}))
    lookahead = {"mode": "lookahead", "kind": "ls/cat/grep", "prediction": "a\n", "chosen": 2,
                 "choice": {"index": 2, "source": "tag"},
                 "candidates": [{"index": 1, "action": {"tool": "bash", "body": "cat a"}, "prediction": "x\n"},
                                {"index": 2, "action": {"tool": "bash", "body": "ls"}, "prediction": "a\n"},
                                {"index": 3, "error": "FormatError: No tool calls found"}]}
    traj.add(step(2, "bash", "ls", "a\n", context=900, imagined=lookahead))
    traj.add(Step(index=3, prompt_delta="", completion="<tool: bash>\nls", format_error="FormatError: cut",
                  cut_off=True))
    data = json.loads(traj.to_json())  # exit None: a run still going, or killed
    html = page.render(data)
    assert html.count('<section class="turn dream"') == 3 and 'data-exit=""' in html and "not finished" in html
    assert "imagined observation (dream: nothing ran)" in html
    assert "lookahead: 3 candidates, chose 2 by tag" in html and "No tool calls found" in html
    assert "FormatError: cut" in html and "no patch submitted" in html


def test_a_large_trajectory_renders_quickly_and_stays_lean(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    traj = Trajectory(folder / "trajectory.json", config={"max_turns": 128}, task={"label": "big"})
    context = 0
    for n in range(1, 129):  # ~100k tokens: 780 per turn, long observations every few turns
        context += 780
        output = "".join(f"{n}:{i} " + "x" * 40 + "\n" for i in range(120 if n % 4 == 0 else 12))
        traj.add(step(n, "bash", f"grep -rn 'needle{n}' src/ | head -n 50", output, context=context,
                      reasoning="I should look further. " * 40))
    traj.finish(exit="turn_limit", turns=128, tokens=context, timings={"model": 200.0, "command": 20.0, "wall": 230.0})
    started = time.perf_counter()
    path = page.write_html(folder)
    seconds = time.perf_counter() - started
    html = path.read_text(encoding="utf-8")
    assert html.count('<section class="turn"') == 128 and 'data-tokens="99840"' in html
    # highlighted: actions only (pygments' inline styles); observations stay plain text
    assert html.count("<span") < 128 * 60
    print(f"128 turns, {context:,} tokens: {len(html.encode()) / 1e6:.2f} MB of HTML in {seconds:.2f}s")


def test_solve_writes_the_page_next_to_the_trajectory(tmp_path):
    """A whole `solve` (dream: the model imagines every output, so no sandbox is needed)."""
    predictions = {"ls": "README.md\n", "fix.patch": protocol.FEEDBACK["submit_success"].format(
        patch=PATCH.removesuffix("\n"))}
    actions = [think("Look.", "bash", "ls"), think("Submit.", "submit", "fix.patch"), "Done.\n</think>\nFolded."]

    def reply(body: dict) -> str:
        if body["prompt"].endswith("<output>\n"):  # a prediction request: the imagined output
            return predictions[body["prompt"].rsplit("<tool: ", 1)[1].split(">\n", 1)[1].rsplit("\n</tool>", 1)[0]] + "\n"
        return actions.pop(0)

    out = tmp_path / "run"
    with ScriptedServer([reply] * 10) as server:
        done = subprocess.run([*CLI, "solve", "--base-url", server.base_url, "--task", DEMO_TASK, "--imagine", "dream",
                               "--out", str(out), "--json"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["html"] == str(out / "trajectory.html")
    html = (out / "trajectory.html").read_text(encoding="utf-8")
    assert html.count('<section class="turn') == 3 and 'data-exit="submitted"' in html and str(tmp_path) not in html


def test_a_page_that_cannot_be_written_does_not_fail_the_run(tmp_path, capsys):
    from cwm_agent.cli.solve import write_page

    (tmp_path / "trajectory.json").write_text("{not json")
    assert write_page(tmp_path / "trajectory.json") is None
    assert "could not write the HTML page" in capsys.readouterr().err
    assert not (tmp_path / "trajectory.html").exists()
