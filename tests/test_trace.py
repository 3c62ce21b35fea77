"""`cwm-agent trace`: ground-truth traces in CWM's format (spec section 8), the
trace prompt, parsing trace text back, and scoring a predicted trace.

The golden traces below are written by hand from the spec's grammar (the token
literals are spelled out here, not taken from the module under test)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwm_agent.world.trace import Frame, halts_within, render_frames, run_trace, trace_prompt, unmark
from cwm_agent.world.trace_metrics import DECODING_ERROR, Divergence, ParsedTrace, compare, parse_trace
from cwm_agent.world.trace_predict import FRAME_STOP_IDS, entry_prompt
from cwm_agent.world.trace_runner import bounded_repr

CALL, LINE, RET, EXC = "<|call_sep|>", "<|line_sep|>", "<|return_sep|>", "<|exception_sep|>"
ACT, ARG, SEP, END = "<|action_sep|>", "<|arg_sep|>", "<|frame_sep|>", "<|end_of_text|>"


def program(tmp_path: Path, source: str, name: str = "prog.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return path


# --- the prompt -----------------------------------------------------------------

STRAWBERRY = """
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


def test_prompt_marks_the_entry_def_line():
    source = textwrap.dedent(STRAWBERRY).lstrip("\n")
    assert trace_prompt(source, "f") == (
        "<|begin_of_text|><|trace_context_start|>"
        "def count_letters(s, letter):\n"
        "    n = 0\n"
        "    for c in s:\n"
        "        n += int(c == letter)\n"
        "    return n\n"
        "\n"
        "def f(c):  # << START_OF_TRACE\n"
        '    word = "strawberry"\n'
        "    num = count_letters(word, c)\n"
        "    return num\n"
        "<|frame_sep|>"
    )


def test_prompt_finds_methods_decorated_and_unterminated_defs():
    source = (
        "class A:\n"
        "    def m(self):\n"
        "        return 1\n"
        "@staticmethod\n"
        "def m(x):\n"
        "    return x\n"
        "def last(): return 2"
    )
    marked_method = trace_prompt(source, "A.m")
    assert "    def m(self):  # << START_OF_TRACE\n" in marked_method
    assert marked_method.count("START_OF_TRACE") == 1
    # a plain name prefers the shallowest def; the def line, not the decorator, is marked
    assert "def m(x):  # << START_OF_TRACE\n" in trace_prompt(source, "m")
    assert trace_prompt(source, "last").endswith("def last(): return 2  # << START_OF_TRACE<|frame_sep|>")
    already = trace_prompt(source, "last")[len("<|begin_of_text|><|trace_context_start|>") : -len(SEP)]
    assert trace_prompt(already, "last").count("START_OF_TRACE") == 1


def test_the_model_gets_one_marker_on_the_entry_only():
    source = textwrap.dedent(STRAWBERRY).lstrip("\n")
    other = source.replace("def count_letters(s, letter):", "def count_letters(s, letter):  # << START_OF_TRACE")
    both = other.replace("def f(c):", "def f(c):  # << START_OF_TRACE")
    loose = source.replace("def f(c):", "def f(c):# << START_OF_TRACE  ").replace("\n", "\r\n")
    assert unmark(other) == source and unmark(both) == source
    assert unmark(loose) == source.replace("\n", "\r\n")  # line ends kept
    assert entry_prompt(other, "f") == entry_prompt(both, "f") == trace_prompt(source, "f")
    assert trace_prompt(other, "f") == trace_prompt(source, "f")  # what `trace --raw` prints too
    assert entry_prompt(loose, "f") == trace_prompt(source, "f").replace("\n", "\r\n")
    assert entry_prompt(both, "count_letters") == (
        "<|begin_of_text|><|trace_context_start|>def count_letters(s, letter):  # << START_OF_TRACE\n"
        + source.split("\n", 1)[1] + SEP)
    # one frame per request: <|frame_sep|>, and the ids CWM's server always stops on
    assert FRAME_STOP_IDS == (128100, 128001, 128008, 128009)


def test_prompt_for_a_missing_function_says_what_to_pass():
    with pytest.raises(ValueError, match="no function named 'g'"):
        trace_prompt("def f():\n    pass\n", "g")


# --- golden traces ------------------------------------------------------------------

BODY = "        n += int(c == letter)\n"
FOR = "    for c in s:\n"
STRAWBERRY_R = (
    CALL + '{"c": "\'r\'"}' + ACT + "def f(c):\n" + SEP
    + LINE + '{"c": ".."}' + ACT + '    word = "strawberry"\n' + SEP
    + LINE + '{"c": "..", "word": "\'strawberry\'"}' + ACT + "    num = count_letters(word, c)\n" + SEP
    + CALL + '{"s": "\'strawberry\'", "letter": "\'r\'"}' + ACT + "def count_letters(s, letter):\n" + SEP
    + LINE + '{"s": "..", "letter": ".."}' + ACT + "    n = 0\n" + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "0"}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'s\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'t\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'r\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "1", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'a\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'w\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'b\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'e\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'r\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "2", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + BODY + SEP  # the second r
    + LINE + '{"s": "..", "letter": "..", "n": "3", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": "\'y\'"}' + ACT + BODY + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + FOR + SEP
    + LINE + '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + "    return n\n" + SEP
    + RET + ACT + "    return n\n" + ARG + '"3"' + SEP
    # back in f after a return: every local in full (the release's walk stops at a return frame)
    + LINE + '{"c": "\'r\'", "word": "\'strawberry\'", "num": "3"}' + ACT + "    return num\n" + SEP
    + RET + ACT + "    return num\n" + ARG + '"3"' + SEP
    + END
)


def test_strawberry_demo_golden(tmp_path):
    result = run_trace(program(tmp_path, STRAWBERRY), 'f("r")')
    assert result.text == STRAWBERRY_R
    assert (result.halted, result.stop_reason, result.steps) == (True, "returned", 30)
    assert (result.entry_function, result.return_value, result.raised) == ("f", "3", None)
    assert result.error is None and result.stdout == ""
    assert result.prompt.endswith("def f(c):  # << START_OF_TRACE\n" + '    word = "strawberry"\n'
                                  "    num = count_letters(word, c)\n    return num\n" + SEP)


FACTORIAL = """
def fact(n):
    if n <= 1:
        return 1
    return n * fact(n - 1)
"""

FACT_3 = (
    CALL + '{"n": "3"}' + ACT + "def fact(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    if n <= 1:\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    return n * fact(n - 1)\n" + SEP
    + CALL + '{"n": "2"}' + ACT + "def fact(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    if n <= 1:\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    return n * fact(n - 1)\n" + SEP
    + CALL + '{"n": "1"}' + ACT + "def fact(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    if n <= 1:\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "        return 1\n" + SEP
    + RET + ACT + "        return 1\n" + ARG + '"1"' + SEP
    + RET + ACT + "    return n * fact(n - 1)\n" + ARG + '"2"' + SEP
    + RET + ACT + "    return n * fact(n - 1)\n" + ARG + '"6"' + SEP
    + END
)


def test_recursion_golden(tmp_path):
    result = run_trace(program(tmp_path, FACTORIAL), "fact(3)")
    assert result.text == FACT_3
    assert result.halted and result.return_value == "6"


def test_halt_steps_is_exact_at_the_boundary(tmp_path):
    path = program(tmp_path, FACTORIAL)
    assert halts_within(path, "fact(3)", 12)  # FACT_3 has 12 frames
    assert not halts_within(path, "fact(3)", 11)
    cut = run_trace(path, "fact(3)", max_steps=11)
    assert (cut.halted, cut.stop_reason, cut.steps) == (False, "step_limit", 11)
    assert cut.text == FACT_3[: -len(RET + ACT + "    return n * fact(n - 1)\n" + ARG + '"6"' + SEP + END)]


GENERATOR = """
def squares(n):
    for i in range(n):
        yield i * i

def total(n):
    acc = 0
    for v in squares(n):
        acc += v
    return acc
"""

YIELD = "        yield i * i\n"
RANGE = "    for i in range(n):\n"
LOOP = "    for v in squares(n):\n"
TOTAL_2 = (
    CALL + '{"n": "2"}' + ACT + "def total(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + "    acc = 0\n" + SEP
    + LINE + '{"n": "..", "acc": "0"}' + ACT + LOOP + SEP
    + CALL + '{"n": "2"}' + ACT + "def squares(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + RANGE + SEP
    + LINE + '{"n": "..", "i": "0"}' + ACT + YIELD + SEP
    + RET + ACT + YIELD + ARG + '"0"' + SEP  # a yield is a return frame
    + LINE + '{"n": "2", "acc": "0", "v": "0"}' + ACT + "        acc += v\n" + SEP  # after a return: in full
    + LINE + '{"n": "..", "acc": "..", "v": ".."}' + ACT + LOOP + SEP
    + CALL + '{"n": "2", "i": "0"}' + ACT + YIELD + SEP  # resumed at the yield, locals in full
    + LINE + '{"n": "..", "i": ".."}' + ACT + RANGE + SEP
    + LINE + '{"n": "..", "i": "1"}' + ACT + YIELD + SEP
    + RET + ACT + YIELD + ARG + '"1"' + SEP
    + LINE + '{"n": "2", "acc": "0", "v": "1"}' + ACT + "        acc += v\n" + SEP
    + LINE + '{"n": "..", "acc": "1", "v": ".."}' + ACT + LOOP + SEP
    + CALL + '{"n": "2", "i": "1"}' + ACT + YIELD + SEP
    + LINE + '{"n": "..", "i": ".."}' + ACT + RANGE + SEP
    + RET + ACT + RANGE + ARG + '"None"' + SEP
    + LINE + '{"n": "2", "acc": "1", "v": "1"}' + ACT + "    return acc\n" + SEP
    + RET + ACT + "    return acc\n" + ARG + '"1"' + SEP
    + END
)


def test_generator_golden(tmp_path):
    path = program(tmp_path, GENERATOR)
    assert run_trace(path, "total(2)").text == TOTAL_2


def test_a_generator_entry_ends_when_exhausted_not_at_its_first_yield(tmp_path):
    result = run_trace(program(tmp_path, GENERATOR), "list(squares(2))")
    assert result.entry_function == "squares" and result.halted
    assert [f.event for f in result.frames] == [
        "call", "line", "line", "return", "call", "line", "line", "return", "call", "line", "return",
    ]
    assert result.text.endswith(RET + ACT + RANGE + ARG + '"None"' + SEP + END)


CAUGHT = """
def safe_div(a, b):
    try:
        q = a // b
    except ZeroDivisionError:
        q = None
    return q
"""

SAFE_DIV = (
    CALL + '{"a": "1", "b": "0"}' + ACT + "def safe_div(a, b):\n" + SEP
    + LINE + '{"a": "..", "b": ".."}' + ACT + "    try:\n" + SEP
    + LINE + '{"a": "..", "b": ".."}' + ACT + "        q = a // b\n" + SEP
    + EXC + ACT + "        q = a // b\n" + ARG + "\"ZeroDivisionError('integer division or modulo by zero')\"" + SEP
    + LINE + '{"a": "..", "b": ".."}' + ACT + "    except ZeroDivisionError:\n" + SEP
    + LINE + '{"a": "..", "b": ".."}' + ACT + "        q = None\n" + SEP
    + LINE + '{"a": "..", "b": "..", "q": "None"}' + ACT + "    return q\n" + SEP
    + RET + ACT + "    return q\n" + ARG + '"None"' + SEP
    + END
)


def test_caught_exception_golden(tmp_path):
    result = run_trace(program(tmp_path, CAUGHT), "safe_div(1, 0)")
    assert result.text == SAFE_DIV
    assert (result.return_value, result.raised, result.error) == ("None", None, None)


UNCAUGHT = """
def check(x):
    if x < 0:
        raise ValueError("negative")
    return x

def run(x):
    y = check(x)
    return y + 1
"""

RUN_NEG = (
    CALL + '{"x": "-1"}' + ACT + "def run(x):\n" + SEP
    + LINE + '{"x": ".."}' + ACT + "    y = check(x)\n" + SEP
    + CALL + '{"x": "-1"}' + ACT + "def check(x):\n" + SEP
    + LINE + '{"x": ".."}' + ACT + "    if x < 0:\n" + SEP
    + LINE + '{"x": ".."}' + ACT + '        raise ValueError("negative")\n' + SEP
    + EXC + ACT + '        raise ValueError("negative")\n' + ARG + "\"ValueError('negative')\"" + SEP
    + RET + ACT + '        raise ValueError("negative")\n' + ARG + '"None"' + SEP
    + EXC + ACT + "    y = check(x)\n" + ARG + "\"ValueError('negative')\"" + SEP
    + RET + ACT + "    y = check(x)\n" + ARG + '"None"' + SEP
    + END
)


def test_uncaught_exception_golden(tmp_path):
    result = run_trace(program(tmp_path, UNCAUGHT), "run(-1)")
    assert result.text == RUN_NEG
    # the entry was left by the exception: it halted, but returned nothing
    assert (result.halted, result.return_value, result.raised) == (True, None, "ValueError('negative')")
    assert result.error.endswith("ValueError: negative") and 'line 3, in check' in result.error


COMPREHENSION = """
def double(x):
    return 2 * x

def process(xs):
    evens = [x for x in xs if x % 2 == 0]
    doubled = {x: double(x) for x in evens}
    return len(doubled)
"""

PROCESS = (
    CALL + '{"xs": "[1, 2, 4]"}' + ACT + "def process(xs):\n" + SEP
    + LINE + '{"xs": ".."}' + ACT + "    evens = [x for x in xs if x % 2 == 0]\n" + SEP
    + LINE + '{"xs": "..", "evens": "[2, 4]"}' + ACT + "    doubled = {x: double(x) for x in evens}\n" + SEP
    # the comprehension itself is not a call frame; what it calls is
    + CALL + '{"x": "2"}' + ACT + "def double(x):\n" + SEP
    + LINE + '{"x": ".."}' + ACT + "    return 2 * x\n" + SEP
    + RET + ACT + "    return 2 * x\n" + ARG + '"4"' + SEP
    + CALL + '{"x": "4"}' + ACT + "def double(x):\n" + SEP
    + LINE + '{"x": ".."}' + ACT + "    return 2 * x\n" + SEP
    + RET + ACT + "    return 2 * x\n" + ARG + '"8"' + SEP
    + LINE + '{"xs": "[1, 2, 4]", "evens": "[2, 4]", "doubled": "{2: 4, 4: 8}"}' + ACT + "    return len(doubled)\n" + SEP
    + RET + ACT + "    return len(doubled)\n" + ARG + '"2"' + SEP
    + END
)


def test_comprehension_golden(tmp_path):
    assert run_trace(program(tmp_path, COMPREHENSION), "process([1, 2, 4])").text == PROCESS


BAD_REPR = """
class Opaque:
    def __repr__(self):
        raise RuntimeError("no repr for you")

def make():
    o = Opaque()
    return o
"""

MAKE = (
    CALL + "{}" + ACT + "def make():\n" + SEP
    + LINE + "{}" + ACT + "    o = Opaque()\n" + SEP
    # __repr__ is defined in the file, but runs inside the tracer: never traced
    + LINE + '{"o": "<repr raised RuntimeError: no repr for you>"}' + ACT + "    return o\n" + SEP
    + RET + ACT + "    return o\n" + ARG + '"<repr raised RuntimeError: no repr for you>"' + SEP
    + END
)


def test_repr_that_raises_golden(tmp_path):
    assert run_trace(program(tmp_path, BAD_REPR), "make()").text == MAKE


HUGE = """
def build(n):
    text = "ab" * n
    nums = list(range(n))
    return len(text) + len(nums)
"""

BUILD = (
    CALL + '{"n": "1000"}' + ACT + "def build(n):\n" + SEP
    + LINE + '{"n": ".."}' + ACT + '    text = "ab" * n\n' + SEP
    + LINE + '{"n": "..", "text": "\'abababababababababa...[truncated]"}' + ACT + "    nums = list(range(n))\n" + SEP
    + LINE + '{"n": "..", "text": "..", "nums": "[0, 1, 2, 3, 4, 5, 6...[truncated]"}' + ACT
    + "    return len(text) + len(nums)\n" + SEP
    + RET + ACT + "    return len(text) + len(nums)\n" + ARG + '"3000"' + SEP
    + END
)


def test_huge_repr_is_capped_and_marked_golden(tmp_path):
    assert run_trace(program(tmp_path, HUGE), "build(1000)", repr_limit=20).text == BUILD


def test_capped_reprs_are_prefixes_of_the_real_repr():
    looped = list(range(1000))
    looped.insert(0, looped)
    keyed = {"me": None, **{i: str(i) for i in range(1000)}}
    keyed["me"] = keyed
    values = [
        list(range(10_000)),
        tuple(range(10_000)),
        {i: [i] * 3 for i in range(5_000)},
        set(range(10_000)),
        frozenset(range(10_000)),
        [list(range(3_000)) for _ in range(3)],
        looped,
        keyed,
        "x'\"\n" * 5_000,
        "it's" * 5_000,  # quoted with " as a whole, with ' as a prefix
        "ab" * 5_000 + "'",
        "\u00e9\U0001f600\x00" * 1_000,
        b"\x00'" * 5_000,
        [f"word{i}" for i in range(5_000)],
        {i: f"v{i}" for i in range(5_000)},
        {f"k{i}" for i in range(5_000)},
        tuple(i / 7 for i in range(5_000)),
        ["x" * 10_000] * 50,
        [None, True, 1.5, 2j, "s"] * 1_000,
    ]
    for value in values:
        assert bounded_repr(value, 50) == repr(value)[:50] + "...[truncated]"
    for small in ([1, [2]], (1,), {"a": {1, 2}}, set(), frozenset(), "short", None):
        assert bounded_repr(small, 50) == repr(small)


INFINITE = """
def spin():
    i = 0
    while True:
        i += 1
"""

SPIN_6 = (
    CALL + "{}" + ACT + "def spin():\n" + SEP
    + LINE + "{}" + ACT + "    i = 0\n" + SEP
    + LINE + '{"i": "0"}' + ACT + "    while True:\n" + SEP
    + LINE + '{"i": ".."}' + ACT + "        i += 1\n" + SEP
    + LINE + '{"i": "1"}' + ACT + "    while True:\n" + SEP
    + LINE + '{"i": ".."}' + ACT + "        i += 1\n" + SEP
)


def test_infinite_loop_stops_cleanly_at_the_step_limit(tmp_path):
    result = run_trace(program(tmp_path, INFINITE), "spin()", max_steps=6)
    assert result.text == SPIN_6  # no <|end_of_text|>
    assert (result.halted, result.stop_reason, result.steps) == (False, "step_limit", 6)
    assert "step limit" in result.error
    assert not halts_within(program(tmp_path, INFINITE), "spin()", 1_000)


def test_infinite_loop_stops_cleanly_at_the_time_limit(tmp_path):
    result = run_trace(program(tmp_path, INFINITE), "spin()", max_steps=10**9, timeout=1.0)
    assert (result.halted, result.stop_reason) == (False, "timeout")
    assert result.steps > 6 and result.text.startswith(SPIN_6) and END not in result.text


def test_a_program_blocked_outside_python_is_killed_and_keeps_its_frames(tmp_path):
    path = program(tmp_path, "import time\n\ndef nap():\n    x = 1\n    time.sleep(60)\n")
    result = run_trace(path, "nap()", timeout=1.0)
    assert (result.halted, result.stop_reason) == (False, "timeout")
    assert [f.line for f in result.frames] == ["def nap():\n", "    x = 1\n", "    time.sleep(60)\n"]
    assert result.entry_function == "nap" and "nap():  # << START_OF_TRACE" in result.prompt


GREET = """
def greet():
    print("what is your name? <|frame_sep|>")
    try:
        name = input()
    except EOFError:
        name = "nobody"
    print("hello", name)
    return name
"""

GREET_TRACE = (
    CALL + "{}" + ACT + "def greet():\n" + SEP
    + LINE + "{}" + ACT + '    print("what is your name? <|frame_sep|>")\n' + SEP
    + LINE + "{}" + ACT + "    try:\n" + SEP
    + LINE + "{}" + ACT + "        name = input()\n" + SEP
    + EXC + ACT + "        name = input()\n" + ARG + "\"EOFError('EOF when reading a line')\"" + SEP
    + LINE + "{}" + ACT + "    except EOFError:\n" + SEP
    + LINE + "{}" + ACT + '        name = "nobody"\n' + SEP
    + LINE + '{"name": "\'nobody\'"}' + ACT + '    print("hello", name)\n' + SEP
    + LINE + '{"name": ".."}' + ACT + "    return name\n" + SEP
    + RET + ACT + "    return name\n" + ARG + "\"'nobody'\"" + SEP
    + END
)


def test_prints_and_stdin_golden(tmp_path):
    result = run_trace(program(tmp_path, GREET), "greet()")
    assert result.text == GREET_TRACE  # stdin is /dev/null: input() raises EOFError
    assert result.stdout == "what is your name? <|frame_sep|>\nhello nobody\n"


def test_deep_recursion_stops_cleanly_at_the_recursion_limit(tmp_path):
    path = program(tmp_path, "def down(n):\n    return down(n + 1)\n")
    result = run_trace(path, "down(0)")
    assert (result.halted, result.stop_reason) == (False, "recursion_limit")
    assert "RecursionError" in result.error
    assert {f.event for f in result.frames} == {"call", "line"}
    calls = [f for f in result.frames if f.event == "call"]
    assert len(calls) > 900 and calls[-1].locals == {"n": str(len(calls) - 1)}


def test_os_exit_keeps_the_frames_so_far(tmp_path):
    path = program(tmp_path, "import os\n\ndef quit_now():\n    print('bye')\n    os._exit(3)\n")
    result = run_trace(path, "quit_now()")
    assert (result.halted, result.stop_reason, result.steps) == (False, "exited", 3)
    assert result.stdout == "bye\n" and "os._exit(3)" in result.error


def test_the_entry_is_the_function_the_call_names(tmp_path):
    path = program(
        tmp_path,
        """
        def deco(fn):
            def wrapper(*args):
                return fn(*args)
            return wrapper

        class Acc:
            def __init__(self):
                self.items = []

            def push(self, x):
                self.items.append(x)
                return len(self.items)

        @deco
        def add(a, b):
            return a + b

        if __name__ == "__main__":
            print("the main block must not run")
        """,
    )
    pushed = run_trace(path, "Acc().push(5)")
    assert pushed.entry_function == "Acc.push"  # __init__ ran before the entry: untraced
    assert [f.line.strip() for f in pushed.frames] == [
        "def push(self, x):", "self.items.append(x)", "return len(self.items)", "return len(self.items)",
    ]
    assert pushed.frames[0].locals["self"].startswith("<prog.Acc object at 0x")
    added = run_trace(path, "add(1, 2)")
    assert added.frames[0] == Frame("call", {"a": "1", "b": "2"}, "def add(a, b):\n")
    assert added.stdout == "" and added.return_value == "3"
    assert "def add(a, b):  # << START_OF_TRACE" in added.prompt
    built = run_trace(path, "Acc()")  # names a class: the entry is the first function entered
    assert built.entry_function == "Acc.__init__" and built.return_value == "None"
    via_map = run_trace(path, "list(map(add, [1], [2]))")  # no file function named "list"
    assert via_map.entry_function == "deco.<locals>.wrapper"
    assert via_map.frames[0].line == "    def wrapper(*args):\n"


def test_set_reprs_are_the_same_on_every_run(tmp_path):
    path = program(tmp_path, "def tags():\n    s = {'alpha', 'beta', 'gamma', 'delta'}\n    return s\n")
    assert run_trace(path, "tags()").text == run_trace(path, "tags()").text


def test_problems_before_the_trace_are_reported(tmp_path):
    broken = program(tmp_path, "def f(:\n    pass\n", name="broken.py")
    assert run_trace(broken, "f()").stop_reason == "load_error"
    path = program(tmp_path, FACTORIAL)
    missing = run_trace(path, "nope(1)")
    assert (missing.stop_reason, missing.halted) == ("no_entry", False)
    assert "NameError" in missing.error
    untouched = run_trace(path, "len([1])")
    assert untouched.stop_reason == "no_entry" and "never entered" in untouched.error
    assert run_trace(path, "fact(").stop_reason == "load_error"
    with pytest.raises(FileNotFoundError):
        run_trace(tmp_path / "absent.py", "f()")


# --- parsing ----------------------------------------------------------------------


def test_parse_inverts_render_on_real_traces(tmp_path):
    for source, call in ((STRAWBERRY, 'f("r")'), (UNCAUGHT, "run(-1)"), (GENERATOR, "total(2)")):
        result = run_trace(program(tmp_path, source), call)
        parsed = parse_trace(result.text)
        assert parsed == result.frames and parsed.ended and parsed.errors == []
        assert render_frames(parsed) == result.text


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(lambda s: "<|" not in s)
_line = _text.map(lambda s: s.replace("\n", " ") + "\n")
_frames = st.one_of(
    st.builds(Frame, st.sampled_from(["call", "line"]), st.dictionaries(_text, _text, max_size=4), _line),
    st.builds(Frame, st.sampled_from(["return", "exception"]), st.just({}), _line, _text),
)


@given(st.lists(_frames, max_size=8), st.booleans())
def test_parse_inverts_render(frames, end):
    parsed = parse_trace(render_frames(frames, end=end))
    assert parsed == frames and parsed.ended == end and parsed.errors == []


def test_parse_accepts_a_whole_prompt_and_completion():
    source = textwrap.dedent(FACTORIAL).lstrip("\n")
    parsed = parse_trace(trace_prompt(source, "fact") + FACT_3)
    assert len(parsed) == 12 and parsed.ended and parsed.errors == []


def test_parse_is_tolerant_and_says_what_was_wrong():
    text = (
        CALL + '{"n": 3}' + ACT + "def fact(n):\n" + SEP  # a number, not a JSON string
        + LINE + "{not json" + ACT + "    if n <= 1:\n" + SEP
        + "garbage" + SEP
        + RET + ACT + "    return 1\n" + ARG + "1" + SEP  # value not JSON-encoded
        + LINE + '{"n": ".."}' + ACT + "    retu"  # cut off mid-frame
    )
    parsed = parse_trace(text)
    assert [f.event for f in parsed] == ["call", "line", "invalid", "return"]
    assert parsed[0].locals == {"n": "3"}
    assert parsed[1].locals == {DECODING_ERROR: "{not json"}
    assert parsed[3].value == "1"
    assert not parsed.ended and len(parsed.errors) == 5
    assert "truncated last frame dropped" in parsed.errors[-1]
    # an unterminated but complete last frame is kept (vLLM drops the stop token)
    kept = parse_trace(CALL + '{"n": "3"}' + ACT + "def fact(n):\n" + SEP + LINE + '{"n": ".."}' + ACT + "    x\n")
    assert len(kept) == 2 and "not terminated" in kept.errors[0]
    assert parse_trace("") == [] and parse_trace("").errors == []


# --- metrics --------------------------------------------------------------------------


def test_a_perfect_prediction_scores_one():
    score = compare(STRAWBERRY_R, STRAWBERRY_R)
    assert (score.state_exact, score.line_exact, score.return_match, score.exact) == (1.0, 1.0, True, True)
    assert score.first_divergence is None and (score.n_truth, score.n_pred) == (30, 30)


def test_one_wrong_local():
    # frame 26 is count_letters' last line frame: n is "..", i.e. 3
    at_return = '{"s": "..", "letter": "..", "n": "..", "c": ".."}' + ACT + "    return n\n"
    wrong = STRAWBERRY_R.replace(at_return, at_return.replace('"n": ".."', '"n": "4"'))
    assert wrong.count('"n": "4"') == 1
    score = compare(STRAWBERRY_R, wrong)
    assert (score.state_matches, score.line_matches) == (29, 30)
    assert score.state_exact == pytest.approx(29 / 30) and score.line_exact == 1.0
    d = score.first_divergence
    assert (d.step, d.field, d.expected, d.got) == (26, "locals", "n=3", "n=4")
    assert score.return_match  # the returned value is still right


def test_a_wrong_local_carries_through_the_dots_that_follow():
    # n=2 claimed at frame 11 is what the next ".." frames mean, up to frame 21's explicit "2"
    wrong = STRAWBERRY_R.replace('"n": "1", "c": ".."', '"n": "2", "c": ".."', 1)
    score = compare(STRAWBERRY_R, wrong)
    assert (score.state_matches, score.line_matches) == (20, 30)
    assert score.first_divergence == Divergence(11, "locals", "n=1", "n=2")


def test_one_wrong_line():
    wrong = STRAWBERRY_R.replace(ACT + "    n = 0\n", ACT + "    n = 1\n", 1)
    score = compare(STRAWBERRY_R, wrong)
    assert score.line_exact == pytest.approx(29 / 30) and score.state_exact == 1.0
    assert (score.first_divergence.step, score.first_divergence.field) == (4, "line")


def test_a_truncated_prediction():
    cut = STRAWBERRY_R[: STRAWBERRY_R.index(BODY) + 10]  # stops inside frame 6
    score = compare(STRAWBERRY_R, cut)
    assert (score.n_pred, score.state_matches, score.line_matches) == (6, 6, 6)
    assert score.state_exact == pytest.approx(6 / 30)
    assert (score.first_divergence.step, score.first_divergence.field) == (6, "missing")
    assert not score.return_match and "truncated" in score.pred_errors[0]


def test_garbage():
    score = compare(STRAWBERRY_R, "The answer is 3.")
    assert (score.state_exact, score.line_exact, score.return_match) == (0.0, 0.0, False)
    assert (score.first_divergence.step, score.first_divergence.field) == (0, "event")
    assert score.n_pred == 1 and score.pred_errors
    junk = "I think it prints 3" + SEP + CALL + "{}" + ACT + "def f(c):\n" + SEP
    assert render_frames(parse_trace(junk)) == junk  # junk goes back out as it came
    assert compare(STRAWBERRY_R, junk).first_divergence.field == "event"


def test_writing_out_unchanged_values_is_not_an_error():
    spelled = STRAWBERRY_R.replace('{"s": "..", "letter": "..", "n": "0"}', '{"s": "\'strawberry\'", "letter": "\'r\'", "n": "0"}')
    assert spelled != STRAWBERRY_R
    assert compare(STRAWBERRY_R, spelled).state_exact == 1.0


def test_wrong_return_value_and_wrong_ending():
    wrong = STRAWBERRY_R.replace(ARG + '"3"' + SEP + END, ARG + '"4"' + SEP + END)
    score = compare(STRAWBERRY_R, wrong)
    assert not score.return_match and score.first_divergence.field == "value"
    assert score.state_exact == pytest.approx(29 / 30)
    unended = compare(STRAWBERRY_R, STRAWBERRY_R[: -len(END)])
    assert unended.first_divergence.field == "end" and unended.state_exact == 1.0 and unended.return_match
    longer = compare(FACT_3, FACT_3[: -len(END)] + LINE + '{"n": ".."}' + ACT + "    x\n" + SEP)
    assert longer.first_divergence.field == "extra" and longer.first_divergence.step == 12


def test_an_uncaught_exception_must_be_predicted_as_one():
    as_return = RUN_NEG.replace(
        EXC + ACT + "    y = check(x)\n" + ARG + "\"ValueError('negative')\"" + SEP, ""
    )
    assert compare(RUN_NEG, RUN_NEG).return_match
    assert not compare(RUN_NEG, as_return).return_match


def test_memory_addresses_are_not_held_against_the_model():
    truth = CALL + '{"o": "<A object at 0x7f3a1c2b>"}' + ACT + "def f(o):\n" + SEP
    guess = CALL + '{"o": "<A object at 0x7f0000ff>"}' + ACT + "def f(o):\n" + SEP
    assert compare(truth, guess).state_exact == 1.0
    assert compare(truth, guess, normalize_addresses=False).state_exact == 0.0


def test_compare_takes_a_trace_result_and_frame_lists(tmp_path):
    result = run_trace(program(tmp_path, FACTORIAL), "fact(3)")
    assert compare(result, FACT_3).exact
    assert compare(ParsedTrace(result.frames, ended=True), list(parse_trace(FACT_3))).state_exact == 1.0
    assert compare(result, "").n_truth == 12
