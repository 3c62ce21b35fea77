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

SEP, RET = "<|frame_sep|>", "<|return_sep|>"

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


@pytest.fixture()
def truth(demo):
    return run_trace(demo, 'f("r")')


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
    assert session.prompts == [truth.prompt + texts[0], truth.prompt + "".join(texts[:2])]
    assert session.server.generation_requests()[0][1]["stop_token_ids"] == [128100, 128001]
    assert "[2] line      line 9 in f" in out and "word = 'strawberry'" in out
    assert "   9 ->     num = count_letters(word, c)" in out
    assert out.count("✓ matches the real run") == 2


def test_next_forces_the_return_of_a_call(session, truth):
    session.run("step", "step")
    out = session.run("next")
    # the model entered count_letters; its return was forced by appending <|return_sep|>
    assert session.prompts[3].endswith(render_frame(truth.frames[3]) + RET)
    assert "[4] return    line 5 in count_letters  (return forced by next)" in out and "return 3" in out
    assert "[5] line      line 10 in f" in out and "num = 3" in out
    assert out.count("✓ matches the real run") == 3  # the forced return is matched to the real one
    assert len(session.prompts) == 5


def test_out_back_print_and_reset(session, truth):
    session.run("step", "step", "step")  # into count_letters
    out = session.run("out")
    assert "[27] return    line 5 in count_letters" in out and "✗" not in out
    out = session.run("back")
    assert "dropped [27] return" in out
    assert len(session.debugger.frames) == 27
    assert session.run("print") == "(cwmdbg) print\ns = 'strawberry'\nletter = 'r'\nn = 3\nc = 'y'\n"
    assert "c = 'y'" in session.run("p c") and "nope: not a local here" in session.run("print nope")
    before = len(session.prompts)
    session.run("step")
    texts = [render_frame(f) for f in truth.frames]
    assert session.prompts[before] == truth.prompt + "".join(texts[:27])  # the dropped frame is gone
    out = session.run("reset", "step")
    assert "reset to the start" in out and session.prompts[-1] == truth.prompt + texts[0]


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
        assert s.prompts[0] == trace_prompt(demo.read_text(), "f")  # nothing given: the model samples c
        assert "ground truth: ran f(c='r') for real (30 frames)" in out
        assert out.count("✓ matches the real run") == 2
        out = s.run("continue")
        assert "<|end_of_text|>: the model says the program ended" in out and "[29] return" in out
        assert "the program has ended" in s.run("step")
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
    assert len(server.generation_requests()) == 5  # step; next (1 frame); next (call, forced return, line)
    bad = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "debug", str(demo)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "the neural debugger needs CWM: pass --base-url" in bad.stderr
