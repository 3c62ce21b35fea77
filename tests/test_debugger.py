"""`cwm-agent debug`: the neural debugger driven by command lists, against the scripted server.

The model answers with the real frames (tests/trace_oracle.py), or with known errors, so
every request the debugger makes and every mark it shows can be checked exactly.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from cwm_agent.cli.debugger import DebuggerError, NeuralDebugger, marked_function
from cwm_agent.models.connect import connect
from cwm_agent.world.trace import Frame, render_frame, run_trace, trace_prompt
from cwm_agent.world.trace_predict import FramePredictor
from cwm_agent.testing.scripted_server import ScriptedServer
from trace_oracle import replies

SEP, RET, CALL, LINE = "<|frame_sep|>", "<|return_sep|>", "<|call_sep|>", "<|line_sep|>"
STOPS = [128100, 128001, 128008, 128009]  # <|frame_sep|>, then what CWM's server always stops on

MARKED = """
def count_letters(s, letter):
    n = 0
    for c in s:
        n += int(c == letter)
    return n

def f(c):  # << START_OF_TRACE
    word = "strawberry"
    num = count_letters(word, c)
    return num
"""


@pytest.fixture()
def demo(tmp_path) -> Path:
    path = tmp_path / "demo.py"
    path.write_text(textwrap.dedent(MARKED).lstrip("\n"))
    return path


NESTED = """
def inc(x):
    return x + 1

def twice(x):
    y = inc(x)
    z = inc(y)
    return z

def f(a):  # << START_OF_TRACE
    b = twice(a)
    return b
"""


@pytest.fixture()
def truth(demo):
    return run_trace(demo, 'f("r")')


@pytest.fixture()
def nested(tmp_path) -> Path:
    path = tmp_path / "nested.py"
    path.write_text(textwrap.dedent(NESTED).lstrip("\n"))
    return path


class Session:
    """A debugger on a scripted server, its output captured."""

    def __init__(self, demo: Path, script: list, **kw):
        self.server = ScriptedServer(script)
        self.server.start()
        self.out = io.StringIO()
        console = Console(file=self.out, width=120, color_system=None)
        self.debugger = NeuralDebugger(FramePredictor(connect(base_url=self.server.base_url)), demo,
                                       console=console, **kw)

    def run(self, *commands: str) -> str:
        start = len(self.out.getvalue())
        self.debugger.run(commands)
        return self.out.getvalue()[start:]

    @property
    def prompts(self) -> list[str]:
        return [body["prompt"] for _, body in self.server.generation_requests()]

    def sent(self, since: int, base: str) -> list[str]:
        """The prompts from request ``since`` on, each with ``base`` (asserted) taken off its front."""
        out = []
        for prompt in self.prompts[since:]:
            assert prompt.startswith(base), prompt
            out.append(prompt[len(base):])
        return out

    def close(self) -> None:
        self.server.close()


@pytest.fixture()
def session(demo, truth):
    s = Session(demo, replies(truth.frames, 200), call='f("r")')
    yield s
    s.close()


def test_the_marked_function_and_the_prompt(demo, session, truth):
    assert marked_function(demo.read_text()) == "f"
    assert session.debugger.prompt == trace_prompt(demo.read_text(), "f")
    assert session.debugger.context == truth.prompt + render_frame(truth.frames[0])
    session.debugger.show_start()
    shown = session.out.getvalue()
    assert "   7 >> def f(c):" in shown and "arguments (real): c='r'" in shown


def test_step_sends_the_context_and_marks_agreement(session, truth):
    out = session.run("step", "step")
    texts = [render_frame(f) for f in truth.frames]
    # after the call frame, step forces <|line_sep|> (into the function); after a line, nothing is forced
    assert session.prompts == [truth.prompt + texts[0] + LINE, truth.prompt + "".join(texts[:2])]
    body = session.server.generation_requests()[0][1]
    assert body["stop_token_ids"] == STOPS and body["include_stop_str_in_output"] is True
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.95, 2048)
    assert "[2] line      line 9 in f" in out and "word = 'strawberry'" in out
    assert "   9 ->     num = count_letters(word, c)" in out
    assert out.count("✓ matches the real run") == 2


def test_step_forces_a_line_after_every_call_frame(session, truth):
    session.run("step", "step", "step")  # [3] is the call of count_letters, as the model wrote it
    assert session.prompts[2] == truth.prompt + "".join(render_frame(f) for f in truth.frames[:3])
    out = session.run("step")
    texts = [render_frame(f) for f in truth.frames]
    assert session.prompts[3] == truth.prompt + "".join(texts[:4]) + LINE
    assert "[4] line      line 2 in count_letters" in out and "✓ matches the real run" in out
    assert all(body["stop_token_ids"] == STOPS for _, body in session.server.generation_requests())


def test_next_forces_the_return_of_a_call(session, truth):
    session.run("step", "step")
    out = session.run("next")
    texts = [render_frame(f) for f in truth.frames]
    # the model entered count_letters; its return was forced by appending <|return_sep|>, then one more frame
    assert session.sent(2, truth.prompt) == ["".join(texts[:3]), "".join(texts[:4]) + RET,
                                             "".join(texts[:4]) + texts[27]]
    assert "[4] return    line 5 in count_letters  (return forced by next)" in out and "return 3" in out
    assert "[5] line      line 10 in f" in out and "num = 3" in out
    assert out.count("✓ matches the real run") == 3  # the forced return is matched to the real one
    assert len(session.prompts) == 5


def test_next_takes_the_frame_as_written_and_forces_nothing_without_a_call(session, truth):
    texts = [render_frame(f) for f in truth.frames]
    out = session.run("next")  # at the call frame: the next frame as the model writes it (no <|line_sep|>)
    assert session.prompts == [truth.prompt + texts[0]] and "[1] line      line 8 in f" in out
    session.run("next")
    assert session.prompts[1] == truth.prompt + "".join(texts[:2]) and len(session.debugger.frames) == 3


def test_out_back_print_and_reset(session, truth):
    session.run("step", "step", "step", "step")  # [3] the call of count_letters, [4] its first line
    out = session.run("out")
    assert "[27] return    line 5 in count_letters" in out and "✗" not in out
    assert "[28] line      line 10 in f" in out  # out takes one more frame after the return
    out = session.run("back", "back")
    assert "dropped [28] line" in out and "dropped [27] return" in out
    assert len(session.debugger.frames) == 27
    assert session.run("print") == "(cwmdbg) print\ns = 'strawberry'\nletter = 'r'\nn = 3\nc = 'y'\n"
    assert "c = 'y'" in session.run("p c") and "nope: not a local here" in session.run("print nope")
    before = len(session.prompts)
    session.run("step")
    texts = [render_frame(f) for f in truth.frames]
    assert session.prompts[before] == truth.prompt + "".join(texts[:27])  # the dropped frame is gone
    out = session.run("reset", "step")
    # back at the real call frame: step forces <|line_sep|> after it
    assert "reset to the start" in out and session.prompts[-1] == truth.prompt + texts[0] + LINE


def test_out_forces_the_return_of_every_nested_call_until_its_function_returns(nested):
    truth = run_trace(nested, "f(1)")
    texts = [render_frame(f) for f in truth.frames]
    assert [f.event for f in truth.frames[2:13:2]] == ["call", "call", "return", "call", "return", "return"]
    s = Session(nested, replies(truth.frames, 40), call="f(1)")
    try:
        s.run("step", "step", "step")  # [3] y = inc(x), in twice
        before = len(s.prompts)
        out = s.run("out")
        c = "".join(texts[:4])
        assert s.sent(before, truth.prompt) == [
            c,                                       # the model writes the call of inc
            c + texts[4] + RET,                      # its return forced: inc is not entered
            c + texts[4] + texts[6],                 # z = inc(y)
            c + texts[4] + texts[6] + texts[7],      # the second call of inc
            c + texts[4] + texts[6] + texts[7] + texts[8] + RET,  # forced again
            c + texts[4] + texts[6] + texts[7] + texts[8] + texts[10],  # return z
            c + texts[4] + texts[6] + texts[7] + texts[8] + texts[10] + texts[11],  # twice returns
            c + texts[4] + texts[6] + texts[7] + texts[8] + texts[10] + texts[11] + texts[12],  # one more
        ]
        assert out.count("(return forced by out)") == 2 and "✗" not in out
        assert out.count("✓ matches the real run") == 8
        assert "[11] line      line 11 in f" in out and "a = 1, b = 3" in out
        # out at a call frame forces that call's return at once, then one more frame (here the end)
        s.run("reset")
        before = len(s.prompts)
        out = s.run("out")
        assert s.sent(before, truth.prompt) == [texts[0] + RET, texts[0] + texts[14]]
        assert "[1] return    line 11 in f  (return forced by out)" in out and "return 3" in out
        assert "<|end_of_text|>: the model says the program ended" in out
    finally:
        s.close()


def test_next_over_a_call_takes_exactly_three_frames(nested):
    truth = run_trace(nested, "f(1)")
    texts = [render_frame(f) for f in truth.frames]
    s = Session(nested, replies(truth.frames, 40), call="f(1)")
    try:
        s.run("next", "next")  # [1] b = twice(a); [2] the call of twice, its return forced, [4] return b
        assert s.sent(0, truth.prompt) == [texts[0], "".join(texts[:2]), "".join(texts[:3]) + RET,
                                           "".join(texts[:3]) + texts[12]]
        assert [e.frame for e in s.debugger.frames] == truth.frames[:3] + truth.frames[12:14]
    finally:
        s.close()


def test_set_edits_the_context_and_the_ground_truth_stops_following(session, truth):
    session.run("step", "step", "step", "step", "step")  # [5] line 3 in count_letters, n = 0
    out = session.run("set n 40")
    assert "n = 40  (edited in frame [5]" in out
    session.run("step")
    assert '"n": "40"' in session.prompts[-1].rsplit(SEP, 2)[-2]
    assert "edited: the real run does not follow" in session.out.getvalue()
    out = session.run("set word 'x'", "set 1x 2", "set")
    assert "usage: set NAME VALUE" in out
    session.run("back", "back")  # drop the frame after the edit and the edited frame
    assert session.debugger.edited_from is None


def test_divergence_is_marked_with_the_real_values(demo, truth):
    frame = truth.frames[5]
    bad = render_frame(Frame(frame.event, {**frame.locals, "n": "7"}, frame.line, None)).removesuffix(SEP)
    s = Session(demo, replies(truth.frames, 50, wrong={5: bad}), call='f("r")')
    try:
        out = s.run("step", "step", "step", "step", "step")
    finally:
        s.close()
    assert "✗ n: real 0, predicted 7" in out
    assert out.count("✓ matches the real run") == 4


def test_sampled_arguments_get_a_ground_truth_when_they_are_literals(demo, truth):
    s = Session(demo, replies(truth.frames, 50), timeout=60)  # a loaded machine starts Python slowly
    try:
        out = s.run("step", "step")
        prompt = trace_prompt(demo.read_text(), "f")
        # nothing given: the model samples c after a forced <|call_sep|>; then step forces <|line_sep|>
        assert s.prompts == [prompt + CALL, prompt + render_frame(truth.frames[0]) + LINE]
        assert "ground truth: ran f(c='r') for real (30 frames)" in out
        assert out.count("✓ matches the real run") == 2
        out = s.run("continue")
        assert "<|end_of_text|>: the model says the program ended" in out and "[29] return" in out
        assert "the program has ended" in s.run("step")
    finally:
        s.close()


def test_reset_forces_the_call_token_without_call(demo, truth):
    s = Session(demo, replies(truth.frames, 50), timeout=60)
    prompt = trace_prompt(demo.read_text(), "f")
    texts = [render_frame(f) for f in truth.frames]
    try:
        out = s.run("next")  # with no frame yet, any move writes the entry's call frame and stops there
        assert s.prompts == [prompt + CALL] and "[0] call      line 7 in f" in out
        out = s.run("back")  # the demo keeps the first frame
        assert "nothing to drop: the entry's call frame stays" in out and len(s.debugger.frames) == 1
        s.run("step", "step")
        out = s.run("reset")
        assert "<|call_sep|> forced" in out and s.debugger.frames == []
        for command in ("out", "reset", "step"):
            s.run(command)
        assert s.prompts[3:] == [prompt + CALL, prompt + CALL]  # out and step alike: the call, forced
        s.run("step")
        assert s.prompts[-1] == prompt + texts[0] + LINE
        assert all(body["stop_token_ids"] == STOPS for _, body in s.server.generation_requests())
    finally:
        s.close()


def test_one_marker_when_the_file_marks_another_function(tmp_path, truth):
    path = tmp_path / "other.py"
    source = textwrap.dedent(MARKED).lstrip("\n").replace("def count_letters(s, letter):",
                                                          "def count_letters(s, letter):  # << START_OF_TRACE")
    path.write_text(source.replace("def f(c):  # << START_OF_TRACE", "def f(c):"))
    assert marked_function(path.read_text()) == "count_letters"
    s = Session(path, replies(truth.frames, 10), entry="f", call='f("r")')
    try:
        s.run("step")
        (sent,) = s.prompts
        assert sent.count("START_OF_TRACE") == 1
        assert "def count_letters(s, letter):\n    n = 0\n" in sent
        assert sent.startswith(truth.prompt) and "def f(c):  # << START_OF_TRACE\n" in sent
        s.debugger.show_start()
        assert "   7 >> def f(c):" in s.out.getvalue()
    finally:
        s.close()
    # both marked, the entry named: still one marker, on the entry
    path.write_text(source)
    s = Session(path, replies(truth.frames, 10), entry="f", call='f("r")')
    try:
        s.run("step")
        assert s.prompts[0].count("START_OF_TRACE") == 1 and s.prompts[0].startswith(truth.prompt)
    finally:
        s.close()


def test_breakpoints_stop_continue(session):
    out = session.run("break 5", "continue")
    assert "breakpoint at line 5" in out and "[26] line      line 5 in count_letters" in out
    assert "   5 ->     return n" in out


def test_unmarked_file_needs_entry(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text("def g(x):\n    return x\n")
    with ScriptedServer([]) as server:
        predictor = FramePredictor(connect(base_url=server.base_url))
        with pytest.raises(DebuggerError, match="START_OF_TRACE"):
            NeuralDebugger(predictor, path, console=Console(file=io.StringIO()))
        debugger = NeuralDebugger(predictor, path, console=Console(file=io.StringIO()), entry="g")
        assert debugger.prompt.endswith("def g(x):  # << START_OF_TRACE\n    return x\n<|frame_sep|>")


def test_cli_reads_commands_from_stdin(demo, truth):
    with ScriptedServer(replies(truth.frames, 50)) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "cwm_agent.cli", "debug", str(demo), "--call", 'f("r")', "--base-url",
             server.base_url, "-x", "step"],
            input="next\nnext\nprint\nquit\nstep\n", capture_output=True, text=True, timeout=120,
            env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert "(cwmdbg) next" in proc.stdout and "(return forced by next)" in proc.stdout
    assert "num = 3" in proc.stdout and proc.stdout.rstrip().endswith("(cwmdbg) quit")
    # step (<|line_sep|> forced); next (1 frame); next (call, forced return, line)
    assert len(server.generation_requests()) == 5
    assert server.generation_requests()[0][1]["prompt"].endswith(render_frame(truth.frames[0]) + LINE)
    bad = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "debug", str(demo)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "the neural debugger needs CWM: pass --base-url" in bad.stderr
