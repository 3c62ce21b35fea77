"""Imagination (`--imagine log|lookahead|dream`): prompts, scores, kinds, reports, and whole episodes.

The model is the scripted server, answering action, prediction and selection requests
differently (a callable script entry routes on the request's prompt). log and lookahead
run their commands in real Docker sandboxes; dream runs with Docker unreachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cwm_agent import protocol

from cwm_agent.world import imagine
from cwm_agent.world.imagine import ImagineSpec, ImaginationError
from cwm_agent.models.connect import connect
from cwm_agent.tools import RESTART_FEEDBACK

TIMEOUT_FEEDBACK = RESTART_FEEDBACK["timeout"]
from cwm_agent.bench.tasks import DEMO_TASK
from cwm_agent.testing.scripted_server import ScriptedServer, think

CLI = [sys.executable, "-m", "cwm_agent.cli"]
PREFILL = "<|start_header_id|>tool: bash<|end_header_id|>\n\n<output>\n"
SELECTION_MARK = "candidate tool calls for your next step"


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160", **(env or {})})


def kind_of(body: dict[str, Any]) -> str:
    prompt = body["prompt"]
    if prompt.endswith("<output>\n"):
        return "prediction"
    last_user = prompt.rsplit("<|start_header_id|>user<|end_header_id|>", 1)[-1]
    if SELECTION_MARK in last_user and "<|start_header_id|>tool:" not in last_user:
        return "selection"
    return "action"


def last_action(prompt: str) -> str:
    """The body of the tool call a prediction prompt is about."""
    return prompt.rsplit("<tool: ", 1)[1].split(">\n", 1)[1].rsplit("\n</tool>", 1)[0]


class Router:
    """One script entry for every request: actions in order, predictions by command, selections in order."""

    def __init__(self, actions: list[str], predictions: dict[str, str], selections: list[str] = ()):
        self.actions, self.predictions, self.selections = list(actions), dict(predictions), list(selections)

    def __call__(self, body: dict[str, Any]) -> str:
        kind = kind_of(body)
        if kind == "prediction":
            return self.predictions[last_action(body["prompt"])] + "\n"  # the newline before </output>
        if kind == "selection":
            return self.selections.pop(0)
        return self.actions.pop(0)

    def script(self, n: int = 60) -> list[Callable]:
        return [self] * n


def requests_of(server: ScriptedServer, kind: str) -> list[dict[str, Any]]:
    return [body for _, body in server.generation_requests() if kind_of(body) == kind]


# --- prompts ----------------------------------------------------------------------------------


def test_prediction_prompt_is_the_transcript_the_reply_and_the_tool_header():
    transcript = protocol.Transcript.start("S", "U")
    reply = "I look.\n</think>\n<tool: bash>\nls\n</tool>"
    assert imagine.prediction_prompt(transcript.prompt, reply, "bash") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nI look.\n</think>\n<tool: bash>\nls\n</tool>"
        "<|eot_id|><|start_header_id|>tool: bash<|end_header_id|>\n\n<output>\n"
    )
    # a reply that already ends with <|eot_id|> gets no second one; the real transcript is the same text
    assert imagine.prediction_prompt(transcript.prompt, reply + "<|eot_id|>", "edit").endswith(
        "</tool><|eot_id|><|start_header_id|>tool: edit<|end_header_id|>\n\n<output>\n")
    transcript.add_assistant(reply)
    transcript.add_tool_result("bash", "<output>\nx\n</output>")
    assert transcript.text.startswith(imagine.prediction_prompt(
        protocol.Transcript.start("S", "U").prompt, reply, "bash"))


@pytest.mark.parametrize("feedback", ["", "hello\n", "a\nb", "no newline", "\n\n", TIMEOUT_FEEDBACK, "x</outpu"])
def test_predicted_feedback_inverts_the_tool_result_template(feedback):
    body = protocol.tool_result_body(feedback, remaining_turns=3, remaining_tokens=99)
    after_prefill = body.removeprefix("<output>\n")
    completion = after_prefill.split("</output>")[0]  # what vLLM returns when it stops at </output>
    assert imagine.predicted_feedback(completion) == feedback
    assert imagine.predicted_feedback(after_prefill) == feedback  # a server that ignored the stop string


def test_selection_message_and_prompt_golden():
    message = imagine.selection_message([(1, protocol.Action("bash", "ls"), "a\nb"),
                                         (2, protocol.Action("bash", "pwd"), "/testbed")])
    assert message == (
        "Before you act, here are 2 candidate tool calls for your next step. None of them has been run: "
        "the output shown for each is a prediction of what the environment would return.\n"
        "\n"
        "<candidate 1>\n<tool: bash>\nls\n</tool>\n<predicted_output>\na\nb\n</predicted_output>\n</candidate 1>\n"
        "\n"
        "<candidate 2>\n<tool: bash>\npwd\n</tool>\n<predicted_output>\n/testbed\n</predicted_output>\n</candidate 2>\n"
        "\n"
        "Which candidate makes the most progress towards resolving the issue? "
        "Answer with its number in the form <choice>N</choice>."
    )
    assert imagine.selection_prompt("T", message) == (
        "T<|start_header_id|>user<|end_header_id|>\n\n" + message
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")


@pytest.mark.parametrize("reply,expected", [
    ("Two looks best.\n</think>\n<choice>2", (2, "tag")),
    ("hmm <choice>1</choice> no wait\n</think>\n<choice> 3 ", (3, "tag")),
    ("<choice>1</choice>\n</think>\nI pick 2", (2, "number")),  # only the answer after </think> counts
    ("\n</think>\n<choice>9", (1, "default")),  # out of range
    ("no idea", (1, "default")),
])
def test_parse_choice(reply, expected):
    assert imagine.parse_choice(reply, 3) == expected


# --- scores ----------------------------------------------------------------------------------


def test_scores_on_known_pairs():
    same = imagine.score("hello\n", "hello\n")
    assert same == {"exact": True, "line_similarity": 1.0, "first_line": True, "error_agreement": True,
                    "predicted_kind": "ok", "actual_kind": "ok"}
    assert imagine.score("hello", "hello\n\n")["exact"] is True  # trailing newlines do not count
    assert imagine.score(" hello", "hello")["exact"] is False
    half = imagine.score("hello\nworld\n", "hello\nthere\n")
    assert (half["exact"], half["line_similarity"], half["first_line"]) == (False, 0.5, True)
    assert imagine.score("", "")["line_similarity"] == 1.0
    assert imagine.score("a\n", "")["line_similarity"] == 0.0
    assert imagine.score("\n\nfirst  \nx", "first\ny")["first_line"] is True
    wrong_error = imagine.score("ok\n", "Traceback (most recent call last):\n  ...\nValueError: bad\n")
    assert (wrong_error["error_agreement"], wrong_error["actual_kind"]) == (False, "error")
    timeout = imagine.score(TIMEOUT_FEEDBACK, TIMEOUT_FEEDBACK)
    assert timeout["error_agreement"] and timeout["actual_kind"] == "timeout"
    assert imagine.score("done\n", TIMEOUT_FEEDBACK)["error_agreement"] is False


@pytest.mark.parametrize("text,kind", [
    ("cat: x: No such file or directory\n", "error"),
    ("bash: foo: command not found\n", "error"),
    ("ModuleNotFoundError: No module named 'x'\n", "error"),
    ("FAILED tests/test_a.py::test_b - assert 1 == 2\n", "error"),
    ("===== 1 failed, 3 passed in 0.1s =====\n", "error"),
    ("fatal: not a git repository\n", "error"),
    ("No replacement was performed, the search lines did not appear verbatim in a.py.", "error"),
    ("===== 4 passed in 0.1s =====\n", "ok"),
    ("errors are handled in handle_errors()\n", "ok"),
    ("", "ok"),
])
def test_outcome_kind(text, kind):
    assert imagine.outcome_kind(text) == kind


@pytest.mark.parametrize("tool,body,kind", [
    ("bash", "ls -la", "ls/cat/grep"),
    ("bash", "cd /testbed && grep -rn 'def slugify' .", "ls/cat/grep"),
    ("bash", "cat setup.py | head -n 20", "ls/cat/grep"),
    ("bash", "sed -n '1,40p' a.py", "ls/cat/grep"),
    ("bash", "sed -i 's/a/b/' a.py", "other"),
    ("bash", "python -m pytest -q tests/test_x.py", "tests"),
    ("bash", "cd /testbed && PYTHONPATH=. pytest tests", "tests"),
    ("bash", "python3 runtests.py", "tests"),
    ("bash", "python3 -c 'import x; print(x)'", "python"),
    ("bash", "PYTHONPATH=src /usr/bin/python3.11 repro.py", "python"),
    ("bash", "git diff > fix.patch", "git"),
    ("bash", "timeout 30 git status", "git"),
    ("bash", "pip install -e .", "other"),
    ("bash", "echo hi", "other"),
    ("edit", "a.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE", "edit/create/submit"),
    ("submit", "fix.patch", "edit/create/submit"),
])
def test_command_kind(tool, body, kind):
    assert imagine.command_kind(tool, body) == kind


def test_spec_parsing():
    assert ImagineSpec.parse(None).mode == "off" and not ImagineSpec.parse("off").on
    assert ImagineSpec.parse("lookahead") == ImagineSpec("lookahead", 3)
    assert ImagineSpec.parse("lookahead:5").candidates == 5
    assert ImagineSpec.parse("Lookahead 2").candidates == 2
    assert ImagineSpec.parse("dream", max_tokens=100).max_tokens == 100
    for bad in ("sometimes", "log:3", "lookahead:1", "lookahead:99"):
        with pytest.raises(ImaginationError):
            ImagineSpec.parse(bad)


def test_imagined_submission_reads_the_patch_back():
    patch = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    feedback = protocol.FEEDBACK["submit_success"].format(patch=patch.removesuffix("\n"))
    assert imagine.imagined_submission(feedback) == patch
    assert imagine.imagined_submission("Failed to submit fix.patch. It is an empty file.") is None


def test_summaries_merge_by_weight():
    rec = [{"kind": "git", "scores": imagine.score("a", "a"), "tokens": {"prompt": 100, "completion": 10}},
           {"kind": "git", "scores": imagine.score("a", "b"), "tokens": {"prompt": 300, "completion": 30}},
           {"kind": "tests", "scores": None, "tokens": {"prompt": 0, "completion": 0}}]
    summary = imagine.summarize(rec)
    assert summary["turns"] == 3 and summary["scored"] == 2 and summary["exact"] == 0.5
    assert summary["prompt_tokens_per_turn"] == round(400 / 3, 1)
    by_kind = imagine.summarize_by_kind(rec)
    assert list(by_kind) == ["tests", "git"] and by_kind["tests"]["exact"] is None
    merged = imagine.merge([imagine.summarize(rec[:1]), imagine.summarize(rec[1:])])
    assert merged["exact"] == 0.5 and merged["turns"] == 3 and merged["scored"] == 2


# --- model requests, byte for byte -----------------------------------------------------------


def test_prediction_request_shape_byte_for_byte():
    with ScriptedServer(["hello\n"]) as server:
        model = connect(base_url=server.base_url)
        imagination = imagine.Imagination(model, ImagineSpec("log"))
        got = imagination.predict("PROMPT" + PREFILL, room=10_000)
    assert got == {"prediction": "hello", "finish_reason": "stop", "cut_off": False}
    assert server.generation_requests() == [("/v1/completions", {
        "model": "cwm-scripted", "prompt": "PROMPT" + PREFILL, "max_tokens": 4096, "temperature": 0.2,
        "top_p": 0.95, "stop_token_ids": [128001, 128008, 128009], "add_special_tokens": False,
        "skip_special_tokens": False, "stream": True, "stream_options": {"include_usage": True},
        "stop": ["</output>"]})]
    assert imagination._turn.tally.requests == 1 and imagination._turn.tally.completion > 0


def test_prediction_is_capped_by_the_room_left_and_skipped_without_room():
    with ScriptedServer(["x"]) as server:
        imagination = imagine.Imagination(connect(base_url=server.base_url), ImagineSpec("log", max_tokens=500))
        imagination.predict("P", room=120)
        assert imagination.predict("P", room=0)["prediction"] is None
    assert [b["max_tokens"] for _, b in server.generation_requests()] == [120]


def test_chat_format_models_are_refused_with_the_fix(tmp_path):
    with ScriptedServer([], model_id="llama-chat") as server:
        with pytest.raises(ImaginationError, match="needs CWM served over /v1/completions"):
            imagine.Imagination(connect(base_url=server.base_url), ImagineSpec("log"))
        out = run_cli("solve", "--base-url", server.base_url, "--task", DEMO_TASK, "--imagine", "dream",
                      "--out", str(tmp_path / "run"), "--json")
        assert server.generation_requests() == []
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "--imagine dream needs CWM" in out.stderr and "--format cwm" in out.stderr
    bad = run_cli("solve", "--task", DEMO_TASK, "--imagine", "sometimes", "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "--imagine must be off, log, lookahead[:K] or dream" in bad.stderr


# --- dream: whole episodes with no sandbox -----------------------------------------------------

PATCH = ("diff --git a/slugkit/core.py b/slugkit/core.py\n--- a/slugkit/core.py\n+++ b/slugkit/core.py\n"
         "@@ -1 +1,2 @@\n import re\n+import unicodedata\n")
DREAM_ACTIONS = [
    think("Look around.", "bash", "ls"),
    think("Write the patch.", "bash", "git diff > fix.patch"),
    think("Submit.", "submit", "fix.patch"),
    "Done.\n</think>\n## Issue Summary\n\nAccents are folded now.",
]
DREAM_PREDICTIONS = {
    "ls": "README.md\nslugkit\ntests\n",
    "git diff > fix.patch": "",
    "fix.patch": protocol.FEEDBACK["submit_success"].format(patch=PATCH.removesuffix("\n")),
}
NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_dream_episode_runs_without_any_sandbox_and_is_marked_imagined(tmp_path):
    out = tmp_path / "run"
    router = Router(DREAM_ACTIONS, DREAM_PREDICTIONS)
    with ScriptedServer(router.script()) as server:
        result = run_cli("solve", "--base-url", server.base_url, "--task", DEMO_TASK, "--imagine", "dream",
                         "--sandbox", "docker", "--out", str(out), "--json", env=NO_DOCKER)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["exit"] == "submitted" and report["imagined"] is True and report["patch_applies"] is None
    data = json.loads((out / "trajectory.json").read_text())
    assert data["imagination"]["mode"] == "dream" and "imagined" in data["imagination"]["note"]
    assert all(step["imagined"]["mode"] == "dream" for step in data["steps"])
    steps = data["steps"]
    assert steps[0]["observation"] == "README.md\nslugkit\ntests\n"
    assert steps[0]["imagined"]["kind"] == "ls/cat/grep" and steps[0]["command_status"] is None
    assert steps[2]["submitted"] is True
    assert (out / "patch.diff").read_text() == PATCH
    assert "dream: no sandbox" in (out / "summary.md").read_text()
    # the imagined observation went back to the model exactly as a real one would
    actions = requests_of(server, "action")
    predictions = requests_of(server, "prediction")
    assert len(actions) == 4 and len(predictions) == 3
    assert predictions[0]["prompt"] == actions[0]["prompt"] + DREAM_ACTIONS[0] + "<|eot_id|>" + PREFILL
    body = protocol.tool_result_body("README.md\nslugkit\ntests\n", remaining_turns=127, remaining_tokens=0)
    head = body.split("* Remaining tokens:")[0]
    assert actions[1]["prompt"].startswith(actions[0]["prompt"] + DREAM_ACTIONS[0] + "<|eot_id|>"
                                           + "<|start_header_id|>tool: bash<|end_header_id|>\n\n" + head)
    assert all(p["temperature"] == 0.2 and p["stop"] == ["</output>"] for p in predictions)
    # `show` marks it everywhere
    shown = run_cli("show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "DREAM: no sandbox ran" in shown.stdout
    assert shown.stdout.count("imagined (dream)") == 4
    assert shown.stdout.count("imagined observation (dream: nothing ran)") == 3


def test_dream_model_failure_is_an_infrastructure_exit(tmp_path):
    def answer(body):
        return DREAM_ACTIONS[0] if kind_of(body) == "action" else None  # a bad entry: HTTP 500 every time

    with ScriptedServer([answer] * 20) as server:
        result = run_cli("solve", "--base-url", server.base_url, "--task", DEMO_TASK, "--imagine", "dream",
                         "--out", str(tmp_path / "run"), "--json", env=NO_DOCKER)
    assert result.returncode == 2, result.stdout + result.stderr
    assert json.loads(result.stdout)["exit"] == "model_error"


def test_eval_in_dream_needs_no_docker_and_skips_grading(tmp_path):
    router = Router(DREAM_ACTIONS, DREAM_PREDICTIONS)
    tasks = Path(__file__).resolve().parent.parent / "tasks" / DEMO_TASK
    with ScriptedServer(router.script()) as server:
        result = run_cli("eval", str(tasks), "--base-url", server.base_url, "--imagine", "dream",
                         "--out", str(tmp_path / "ev"), env=NO_DOCKER)
    assert result.returncode == 0, result.stdout + result.stderr
    row = json.loads((tmp_path / "ev" / "results.jsonl").read_text().splitlines()[0])
    assert row["exit"] == "submitted" and row["resolved"] is None and row["patch"] == PATCH
    assert row["imagination"]["mode"] == "dream" and row["imagination"]["turns"] == 3
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["imagination"]["per_task"][DEMO_TASK]["turns"] == 3


# --- log and lookahead: real sandboxes -----------------------------------------------------------

LOG_ACTIONS = [
    think("Say hello.", "bash", "echo hello"),
    think("Three lines.", "bash", "printf 'a\\nb\\nc\\n'"),
    think("A missing file.", "bash", "cat /nonexistent"),
    think("Python.", "bash", "python3 -c \"raise SystemExit('boom')\""),
    think("Wait.", "bash", "sleep 20"),
]
# The reply that meets the turn limit: never run, never imagined (at most max_turns - 1 actions run).
LAST_REPLY = think("One more look.", "bash", "true")
LOG_PREDICTIONS = {
    "echo hello": "hello\n",
    "printf 'a\\nb\\nc\\n'": "a\nx\nc\n",
    "cat /nonexistent": "cat: /nonexistent: No such file or directory\n",
    "python3 -c \"raise SystemExit('boom')\"": "Traceback (most recent call last):\nSystemExit: boom\n",
    "sleep 20": TIMEOUT_FEEDBACK,
}


def _solve(server: ScriptedServer, out: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("solve", "--base-url", server.base_url, "--task", DEMO_TASK, "--out", str(out), "--json",
                   "--command-timeout", "3", "--max-turns", "6", *args)


@pytest.mark.docker
def test_log_episode_scores_every_prediction_and_is_otherwise_identical_to_off(tmp_path, sandbox_image):
    with ScriptedServer([*LOG_ACTIONS, LAST_REPLY]) as plain:
        off = _solve(plain, tmp_path / "off")
    assert off.returncode == 1, off.stderr
    router = Router([*LOG_ACTIONS, LAST_REPLY], LOG_PREDICTIONS)
    with ScriptedServer(router.script()) as server:
        result = _solve(server, tmp_path / "log", "--imagine", "log")
    assert result.returncode == 1, result.stdout + result.stderr
    # the same episode: every action request is byte for byte the one of `off`
    assert requests_of(server, "action") == [body for _, body in plain.generation_requests()]
    predictions = requests_of(server, "prediction")
    actions = requests_of(server, "action")
    assert [p["prompt"] for p in predictions] == [a["prompt"] + reply + "<|eot_id|>" + PREFILL
                                                  for a, reply in zip(actions, LOG_ACTIONS)]
    data = json.loads((tmp_path / "log" / "trajectory.json").read_text())
    assert data["imagination"]["mode"] == "log"
    *steps, last = data["steps"]
    assert last["action"] is None and last["imagined"] is None  # the turn-limit reply: not run, not imagined
    off_steps = json.loads((tmp_path / "off" / "trajectory.json").read_text())["steps"][:-1]
    assert [s["observation"] for s in steps] == [s["observation"] for s in off_steps]
    got = [(s["imagined"]["kind"], s["imagined"]["prediction"], s["imagined"]["scores"]) for s in steps]
    hello, lines, missing, boom, sleep = got
    assert hello[0] == "other" and hello[2]["exact"] and hello[2]["line_similarity"] == 1.0
    assert lines[2]["exact"] is False and lines[2]["line_similarity"] == pytest.approx(2 / 3, abs=1e-4)
    assert lines[2]["first_line"] is True
    assert missing[0] == "ls/cat/grep" and missing[2]["exact"] and missing[2]["actual_kind"] == "error"
    assert boom[0] == "python" and boom[2]["error_agreement"] is False  # it printed "boom", no traceback
    assert steps[4]["command_status"] == "timeout" and sleep[2]["error_agreement"] and sleep[2]["exact"]
    assert all(s["imagined"]["tokens"]["requests"] == 1 and s["imagined"]["tokens"]["completion"] > 0 for s in steps)
    summary = json.loads(result.stdout)["imagination"]
    assert summary["scored"] == 5 and summary["exact"] == 0.6
    # show: predicted next to actual
    shown = run_cli("show", str(tmp_path / "log"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("predicted") >= 5 and shown.stdout.count("actual") >= 5
    assert "✗ exact" in shown.stdout and "✓ exact" in shown.stdout
    # imagine-report: by command kind
    report = run_cli("imagine-report", str(tmp_path), "--json")
    assert report.returncode == 0, report.stderr
    table = json.loads(report.stdout)
    assert table["trajectories"] == 2 and table["with_imagination"] == 1
    assert table["by_kind"]["ls/cat/grep"]["exact"] == 1.0 and table["by_kind"]["python"]["exact"] == 0.0
    assert table["by_kind"]["other"]["turns"] == 3 and table["overall"]["exact"] == 0.6
    pretty = run_cli("imagine-report", str(tmp_path / "log" / "trajectory.json"))
    assert "ls/cat/grep" in pretty.stdout and "60%" in pretty.stdout


@pytest.mark.docker
def test_lookahead_imagines_each_candidate_and_runs_only_the_chosen_one(tmp_path, sandbox_image):
    one, two = think("One.", "bash", "echo one"), think("Two.", "bash", "echo two")
    three = think("Three.", "bash", "echo three")
    actions = [one, two, one,  # turn 1: three candidates, the third a duplicate of the first
               three, "I ramble without a tool call.\n</think>\nnothing", three,  # turn 2: one usable action
               LAST_REPLY]  # turn 3 meets the turn limit: one request, no candidates, nothing imagined
    router = Router(actions, {"echo one": "one\n", "echo two": "two\n", "echo three": "3\n"},
                    ["Two tells us more.\n</think>\n<choice>2"])
    with ScriptedServer(router.script()) as server:
        result = _solve(server, tmp_path / "la", "--imagine", "lookahead:3", "--max-turns", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    kinds = [kind_of(body) for _, body in server.generation_requests()]
    assert kinds == (["action"] * 3 + ["prediction"] * 2 + ["selection"] + ["action"] * 3 + ["prediction"]
                     + ["action"])
    data = json.loads((tmp_path / "la" / "trajectory.json").read_text())
    first, second, last = data["steps"]
    assert last["action"] is None and last["imagined"] is None and data["exit"] == "turn_limit"
    assert first["completion"] == two and first["action"] == {"tool": "bash", "body": "echo two"}
    assert first["observation"] == "two\n" and first["imagined"]["scores"]["exact"] is True
    candidates = first["imagined"]["candidates"]
    assert [c.get("prediction") for c in candidates] == ["one\n", "two\n", "one\n"]
    assert candidates[2]["duplicate_of"] == 1 and first["imagined"]["choice"]["index"] == 2
    assert first["imagined"]["choice"]["source"] == "tag" and first["imagined"]["chosen"] == 2
    assert first["imagined"]["tokens"]["requests"] == 5  # 2 more candidates, 2 predictions, 1 selection
    # the selection prompt: the real transcript, then the candidates with their imagined outputs
    action_1, selection = requests_of(server, "action")[0], requests_of(server, "selection")[0]
    message = imagine.selection_message([(1, protocol.Action("bash", "echo one"), "one\n"),
                                         (2, protocol.Action("bash", "echo two"), "two\n")])
    transcript_text = action_1["prompt"].removesuffix(protocol.generation_prompt())
    assert selection["prompt"] == imagine.selection_prompt(transcript_text, message)
    assert selection["stop"] == ["</choice>"] and selection["temperature"] == 1.0
    assert requests_of(server, "action")[1]["prompt"] == action_1["prompt"]  # candidates share one prompt
    # only the chosen reply entered the transcript
    turn_2 = requests_of(server, "action")[3]["prompt"]
    assert turn_2.startswith(action_1["prompt"] + two + "<|eot_id|>") and "echo one" not in turn_2
    assert second["imagined"]["choice"]["source"] == "only candidate"
    assert second["imagined"]["candidates"][1]["error"] == "FormatError: No tool calls found"
    assert second["observation"] == "three\n" and second["imagined"]["scores"]["exact"] is False
    shown = run_cli("show", str(tmp_path / "la"))
    assert "lookahead: 3 candidates" in shown.stdout and "▶2" in shown.stdout


@pytest.mark.docker
def test_eval_reports_imagination_accuracy_per_task(tmp_path, sandbox_image):
    router = Router([*LOG_ACTIONS[:3], LAST_REPLY], LOG_PREDICTIONS)
    tasks = Path(__file__).resolve().parent.parent / "tasks" / DEMO_TASK
    with ScriptedServer(router.script()) as server:
        result = run_cli("eval", str(tasks), "--base-url", server.base_url, "--imagine", "log", "--no-grade",
                         "--max-turns", "4", "--out", str(tmp_path / "ev"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    task = report["imagination"]["per_task"][DEMO_TASK]
    assert task["scored"] == 3 and task["exact"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["imagination"]["overall"]["exact"] == task["exact"]
    assert "imagination (all tasks)" in result.stdout and "exact 67%" in result.stdout
