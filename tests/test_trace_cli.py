"""`cwm-agent trace`: the ground truth shown, the model asked frame by frame, CWM's metrics reported.

The model is the scripted server answering with the real frames (tests/trace_oracle.py),
sometimes with known errors put in, so every metric has a value known in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cwm_agent.models.connect import connect
from cwm_agent.world.trace import Frame, render_frame, run_trace
from cwm_agent.world.trace_predict import FramePredictor, locate_lines, predict_free
from cwm_agent.testing.scripted_server import Reply, ScriptedServer
from trace_oracle import replies

CLI = [sys.executable, "-m", "cwm_agent.cli"]
SEP, END = "<|frame_sep|>", "<|end_of_text|>"

DEMO = """
def count_letters(s, letter):
    n = 0
    for c in s:
        n += int(c == letter)
    return n

def f(c):
    word = "strawberry"
    num = count_letters(word, c)
    return num
"""


@pytest.fixture()
def demo(tmp_path) -> Path:
    path = tmp_path / "demo.py"
    path.write_text(textwrap.dedent(DEMO).lstrip("\n"))
    return path


@pytest.fixture()
def truth(demo):
    result = run_trace(demo, 'f("r")')
    assert result.halted and result.steps == 30 and result.return_value == "3"
    return result


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160"})


def wrong_n(truth, step: int, value: str) -> dict[int, str]:
    """The real frame `step` with local n set to `value`: a known error in a prediction."""
    frame = truth.frames[step]
    bad = Frame(frame.event, {**frame.locals, "n": value}, frame.line, frame.value)
    return {step: render_frame(bad).removesuffix(SEP)}


def test_ground_truth_json_and_raw(demo, truth):
    out = cli("trace", str(demo), "--call", 'f("r")', "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["truth"]["steps"] == 30 and data["truth"]["return_value"] == "3"
    assert data["truth"]["frames"][3] == {"event": "call", "lineno": 1, "line": "def count_letters(s, letter):\n",
                                          "locals": {"s": "'strawberry'", "letter": "'r'"}, "value": None}
    assert data["truth"]["text"] == truth.text and "metrics" not in data
    raw = cli("trace", str(demo), "--call", 'f("r")', "--raw")
    assert raw.stdout == truth.prompt + truth.text + "\n"
    assert raw.stdout.startswith("<|begin_of_text|><|trace_context_start|>def count_letters")
    pretty = cli("trace", str(demo), "--call", 'f("r")')
    assert "returned 3" in pretty.stdout and "letter='r'" in pretty.stdout


def test_predict_asks_frame_by_frame_with_the_exact_request(demo, truth):
    with ScriptedServer(replies(truth.frames, 40)) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url, "--json")
    assert out.returncode == 0, out.stderr
    requests = [body for _, body in server.generation_requests()]
    assert len(requests) == 30  # 29 frames after the given call frame, then <|end_of_text|>
    call_frame = '<|call_sep|>{"c": "\'r\'"}<|action_sep|>def f(c):\n<|frame_sep|>'
    assert requests[0] == {
        "model": "cwm-scripted", "prompt": truth.prompt + call_frame, "max_tokens": 2048, "temperature": 0.6,
        "top_p": 0.95, "stop_token_ids": [128100, 128001, 128008, 128009], "add_special_tokens": False,
        "skip_special_tokens": False, "stream": True, "stream_options": {"include_usage": True},
        "include_stop_str_in_output": True}
    # each request is the previous prompt plus the frame the model wrote, then one <|frame_sep|>
    texts = [render_frame(f) for f in truth.frames]
    assert all(requests[i]["prompt"] == truth.prompt + "".join(texts[: i + 1]) for i in range(30))
    data = json.loads(out.stdout)
    m = data["metrics"]
    assert (m["state_exact"], m["line_exact"], m["return_match"], m["exact"]) == (1.0, 1.0, True, True)
    assert m["first_divergence"] is None and m["scored_steps"] == 29 and m["given_steps"] == 1
    assert data["prediction"]["ended"] is True and data["prediction"]["tokens"]["requests"] == 30
    assert data["prediction"]["text"] == "".join(texts[1:]) + END
    assert [f["lineno"] for f in data["prediction"]["frames"]] == [f.lineno for f in truth.frames]


def test_known_error_free_running_carries_the_wrong_state_until_it_changes(demo, truth):
    # frame 11 shows n=1 (after the first 'r'); say 5 instead. The next frames show n as "..",
    # so the wrong 5 stands until frame 21 writes n=2: steps 11..20 are wrong (10 of 29).
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong_n(truth, 11, "5"))) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url, "--json")
    m = json.loads(out.stdout)["metrics"]
    assert m["state_matches"] == 19 and m["state_exact"] == round(19 / 29, 4)
    assert m["line_exact"] == 1.0 and m["return_match"] is True and m["exact"] is False
    assert m["first_divergence"]["step"] == 11 and m["first_divergence"]["field"] == "locals"
    assert m["first_divergence"]["expected"] == "n=1" and m["first_divergence"]["got"] == "n=5"
    assert [i + 1 for i, s in enumerate(m["per_step"]) if not s["state"]] == list(range(11, 21))


def test_known_error_with_teacher_forcing_costs_one_step(demo, truth):
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong_n(truth, 11, "5"))) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--teacher-forcing",
                  "--base-url", server.base_url, "--json")
    m = json.loads(out.stdout)["metrics"]
    assert m["setting"] == "teacher_forcing" and m["state_matches"] == 28 and m["line_matches"] == 29
    assert m["first_divergence"]["step"] == 11 and m["return_match"] is True and m["ends_match"] is True
    requests = [body["prompt"] for _, body in server.generation_requests()]
    texts = [render_frame(f) for f in truth.frames]
    assert requests[11] == truth.prompt + "".join(texts[:12])  # the true frame 11 follows, not the wrong one


def test_wrong_return_value_and_an_early_end(demo, truth):
    wrong = {29: render_frame(Frame("return", {}, truth.frames[29].line, "4")).removesuffix(SEP)}
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong)) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url, "--json")
    m = json.loads(out.stdout)["metrics"]
    assert m["return_match"] is False and m["state_matches"] == 28
    assert m["first_divergence"]["field"] == "value"
    with ScriptedServer(replies(truth.frames, 40, end_after=5)) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url,
                  "--json", "--halt-steps", "10")
    data = json.loads(out.stdout)
    assert data["metrics"]["first_divergence"]["field"] == "missing"
    assert data["metrics"]["state_matches"] == 4 and data["metrics"]["return_match"] is False
    assert data["halt"] == {"steps": 10, "truth": False, "predicted": True}


def test_halt_steps_truth_alone_and_next_to_the_model(demo, truth):
    alone = json.loads(cli("trace", str(demo), "--call", 'f("r")', "--halt-steps", "30", "--json").stdout)
    assert alone["halt"] == {"steps": 30, "truth": True}
    assert json.loads(cli("trace", str(demo), "--call", 'f("r")', "--halt-steps", "29", "--json").stdout)["halt"][
        "truth"] is False
    with ScriptedServer(replies(truth.frames, 80)) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--halt-steps", "10", "--base-url",
                  server.base_url)
    assert out.returncode == 0, out.stderr
    assert "within 10 steps: ground truth does not halt · model does not halt ✓" in out.stdout
    assert "state exact 100.0% (29/29)" in out.stdout and "return value matches" in out.stdout


def test_side_by_side_view_marks_the_divergence(demo, truth):
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong_n(truth, 11, "5"))) as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url)
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.count("│") > 5}
    assert "✓" in rows["10"] and "~" in rows["11"] and "n=5" in rows["11"] and "n=1" in rows["11"]
    assert "first divergence: step 11: locals differs: expected n=1, got n=5" in out.stdout


def test_frame_predictor_handles_a_kept_stop_token_and_the_end(demo, truth):
    with ScriptedServer(replies(truth.frames, 40, keep_sep=True)) as server:
        predictor = FramePredictor(connect(base_url=server.base_url))
        given = [render_frame(truth.frames[0])]
        predicted = predict_free(predictor, truth.prompt, given, max_frames=100)
    assert predicted.ended and predicted.stop_reason == "ended" and len(predicted.frames) == 29
    assert "".join(given) + predicted.text == truth.text
    with ScriptedServer(replies(truth.frames, 40)) as server:
        capped = predict_free(FramePredictor(connect(base_url=server.base_url)), truth.prompt, given, max_frames=5)
    assert (len(capped.frames), capped.ended, capped.stop_reason) == (4, False, "max_frames")


def test_frame_predictor_forces_a_token_and_knows_the_end(truth):
    line = render_frame(truth.frames[1]).removesuffix(SEP)
    rest = line.removeprefix("<|line_sep|>")
    script = [
        rest,                                       # after a forced <|line_sep|>: the rest of the frame
        Reply(END),                                 # <|end_of_text|> first: the trace is done
        Reply(line, stop_token=END),                # a frame, then <|end_of_text|> without <|frame_sep|>
        Reply(line + SEP + "<|line_sep|>{}"),        # a server that ignored the stop id: one frame
        Reply("", stop_token="<|eot_id|>"),         # nothing of its own: done too
        Reply(line[:9], finish_reason="length"),    # cut off
        Reply(line),                                # a frame (the scripted model stops on <|eot_id|>)
    ]
    context = truth.prompt + render_frame(truth.frames[0])
    with ScriptedServer(script) as server:
        predictor = FramePredictor(connect(base_url=server.base_url))
        replies_ = [predictor.next(context, "<|line_sep|>")] + [predictor.next(context) for _ in script[1:]]
        bodies = [body for _, body in server.generation_requests()]
    assert [(r.text, r.ended, r.cut_off) for r in replies_] == [
        (line, False, False), ("", True, False), (line, True, False), (line, False, False), ("", True, False),
        (line[:9], False, True), (line, False, False)]
    assert bodies[0]["prompt"] == context + "<|line_sep|>" and bodies[1]["prompt"] == context
    assert all(b["stop_token_ids"] == [128100, 128001, 128008, 128009] for b in bodies)
    assert all(b["include_stop_str_in_output"] is True for b in bodies)


def test_predict_sends_one_marker_when_the_file_marks_another_function(tmp_path, truth):
    path = tmp_path / "marked.py"
    path.write_text(textwrap.dedent(DEMO).lstrip("\n").replace(
        "def count_letters(s, letter):", "def count_letters(s, letter):  # << START_OF_TRACE"))
    with ScriptedServer(replies(truth.frames, 40)) as server:
        out = cli("trace", str(path), "--call", 'f("r")', "--predict", "--base-url", server.base_url, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    prompts = [body["prompt"] for _, body in server.generation_requests()]
    assert data["prompt"] == truth.prompt and len(prompts) == 30  # the prompt of the unmarked file
    assert all(p.count("START_OF_TRACE") == 1 and p.startswith(truth.prompt) for p in prompts)
    assert data["metrics"]["exact"] is True


def test_locate_lines_follows_loops_and_calls(demo, truth):
    assert locate_lines(demo.read_text(), truth.frames) == [f.lineno for f in truth.frames]


def test_predict_needs_a_cwm_server(demo, tmp_path):
    out = cli("trace", str(demo), "--call", 'f("r")', "--predict")
    assert out.returncode == 2 and "--predict needs CWM: pass --base-url" in out.stderr
    with ScriptedServer([], model_id="some-chat-model") as server:
        out = cli("trace", str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url)
    assert out.returncode == 2 and "speaks the chat format" in out.stderr and "Traceback" not in out.stderr
    out = cli("trace", str(demo), "--call", 'g(1)')
    assert out.returncode == 2 and "never entered a function" in out.stderr
    assert cli("trace", str(tmp_path / "none.py"), "--call", "f()").returncode == 2
