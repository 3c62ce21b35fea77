"""The ".." rule as CWM's release reads it (demos/cwmdbg.py `local_vars`, commit 7930e02):
a ".." value is the first real value of that name found walking back through the preceding
frames in trace order; the walk takes a call frame's values and stops there, and stops at a
return frame with nothing found.

Every ".." our tracer writes resolves, by that walk, to the true value (taken by an
independent settrace in this process); our reader (trace_metrics.replay) agrees with the
walk; and the release's own example (demos/README.md, the strawberry program) traced by our
tracer prints what the README's transcript shows.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from cwm_agent.world.trace import Frame, run_trace
from cwm_agent.world.trace_metrics import replay

PROGRAMS = {
    "nested calls": ("""
        def count_letters(s, letter):
            n = 0
            for c in s:
                n += int(c == letter)
            return n

        def f(c):
            word = "strawberry"
            num = count_letters(word, c)
            num = num + count_letters(word[:3], c)
            return num
        """, 'f("r")'),
    "generator": ("""
        def squares(n):
            for i in range(n):
                yield i * i

        def total(n):
            acc = 0
            for v in squares(n):
                acc += v
            return acc
        """, "total(3)"),
    "caught exception from a callee": ("""
        def div(a, b):
            return a // b

        def safe(a, b):
            tries = 0
            try:
                tries += 1
                q = div(a, b)
            except ZeroDivisionError:
                q = None
            return q, tries
        """, "safe(1, 0)"),
    "recursion": ("""
        def fact(n):
            if n <= 1:
                return 1
            rest = fact(n - 1)
            return n * rest
        """, "fact(4)"),
    "mutual recursion and a closure": ("""
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        def run(k):
            seen = []
            def note(x):
                seen.append(x)
            for i in range(k):
                note(is_even(i))
            return seen
        """, "run(3)"),
}


def program(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def settrace_states(path: Path, call: str) -> list[tuple[str, dict[str, str] | None]]:
    """The true locals of every frame of the program's functions: a plain settrace, here."""
    source = path.read_text()
    namespace: dict = {}
    exec(compile(source, str(path), "exec"), namespace)
    seen: list[tuple[str, dict[str, str] | None]] = []

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != str(path):
            return None
        locals_ = {k: repr(v) for k, v in frame.f_locals.items()} if event in ("call", "line") else None
        seen.append((event, locals_))
        return tracer

    sys.settrace(tracer)
    try:
        eval(call, namespace)
    except Exception:
        pass
    finally:
        sys.settrace(None)
    return seen


def unaddressed(state: dict[str, str] | None) -> dict[str, str] | None:
    """Memory addresses differ between the tracer's process and this one."""
    return None if state is None else {k: re.sub(r"0x[0-9a-f]+", "0x?", v) for k, v in state.items()}


def release_walk(frames: list[Frame], index: int) -> dict[str, str]:
    """The release's reader, literally: walk back from the frame, first real value wins,
    stop after a call frame and at a return frame."""
    resolved = dict(frames[index].locals)
    for name, value in resolved.items():
        if value != "..":
            continue
        back = index - 1
        while back >= 0:
            found = frames[back].locals.get(name, "..")
            if found != "..":
                resolved[name] = found
                break
            if frames[back].event in ("call", "return"):
                break
            back -= 1
    return resolved


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_dots_value_resolves_to_the_truth_by_the_release_walk(tmp_path, name):
    source, call = PROGRAMS[name]
    path = program(tmp_path, source)
    result = run_trace(path, call)
    truth = settrace_states(path, call)
    assert [event for event, _ in truth] == [f.event for f in result.frames]
    states, _ = replay(result.frames)
    dots = 0
    for index, (frame, (_, true_locals)) in enumerate(zip(result.frames, truth)):
        if frame.event not in ("call", "line"):
            continue
        dots += list(frame.locals.values()).count("..")
        assert unaddressed(release_walk(result.frames, index)) == unaddressed(true_locals), f"frame {index}: {frame}"
        assert states[index] == release_walk(result.frames, index)  # our reader reads it as the release does
        if index and result.frames[index - 1].event == "return":
            assert ".." not in frame.locals.values()  # after a return: every local in full
    assert dots > 0  # the rule was exercised


def test_a_prediction_is_read_by_the_same_walk():
    """".." after a return cannot be resolved (it does not match the true value); spelled
    out, or ".." where the walk allows, it scores as the truth."""
    from cwm_agent.world.trace_metrics import compare
    from cwm_agent.world.trace import render_frames

    truth = [Frame("call", {"x": "1"}, "def f(x):\n"), Frame("line", {"x": ".."}, "    y = g(x)\n"),
             Frame("call", {"a": "1"}, "def g(a):\n"), Frame("line", {"a": ".."}, "    return a\n"),
             Frame("return", {}, "    return a\n", "1"),
             Frame("line", {"x": "1", "y": "1"}, "    return y\n"), Frame("return", {}, "    return y\n", "1")]
    dots_after_return = truth[:5] + [Frame("line", {"x": "..", "y": "1"}, "    return y\n")] + truth[6:]
    spelled = [Frame("line", {"x": "1"}, f.line) if i == 1 else f for i, f in enumerate(truth)]
    text = render_frames(truth) + "<|end_of_text|>"
    assert compare(text, render_frames(spelled) + "<|end_of_text|>").state_exact == 1.0
    assert compare(text, render_frames(dots_after_return) + "<|end_of_text|>").state_exact < 1.0


# The release's own example: demos/README.md of facebookresearch/cwm (commit 7930e02), the program
# of the tech report's Fig. B.25, and its transcript: `-> def f(c):` then `print` shows
# {'c': "'a'"} (then 'r', 't', 's' after each `reset`).
README_PROGRAM = '''def count_letters(s, letter):
    n = 0
    for c in s:
        n += int(c == letter)
    return n

def format_answer(word, letter, count):
    parts = [
        "Found",
        f"{count:04d}",
        "occurrences of the letter",
        letter,
        "in",
        word
    ]
    return " ".join(parts)

def f(c):  # << START_OF_TRACE
    word = "strawberry"
    num = count_letters(word, c)
    ans = format_answer(word, c, num)
    return ans
'''


@pytest.mark.parametrize("letter", ["a", "r", "t", "s"])
def test_the_release_readme_example_prints_as_its_transcript(tmp_path, letter):
    path = tmp_path / "strawberry.py"
    path.write_text(README_PROGRAM)
    result = run_trace(path, f"f({letter!r})")
    first = result.frames[0]
    # What cwmdbg.py prints for the first frame and for `print`:
    assert "-> " + first.line.rstrip() == "-> def f(c):"
    assert str(release_walk(result.frames, 0)) == str({"c": repr(letter)})
    assert result.prompt.count("# << START_OF_TRACE") == 1
    # The rest of the session reads by the same walk: each frame's locals, as `print` would show them.
    expected = {"a": 1, "r": 3, "t": 1, "s": 1}[letter]
    assert result.return_value == repr(f"Found {expected:04d} occurrences of the letter {letter} in strawberry")
    after_format = next(i for i, fr in enumerate(result.frames) if fr.line == "    return ans\n" and fr.event == "line")
    assert release_walk(result.frames, after_format) == {
        "c": repr(letter), "word": "'strawberry'", "num": str(expected),
        "ans": repr(f"Found {expected:04d} occurrences of the letter {letter} in strawberry")}
