"""Ground-truth Python execution traces in CWM's trace format (spec section 8).

The model is prompted with ``trace_prompt(source, entry)`` and writes frames; this
module produces the frames the program really goes through, so the two can be put
side by side (``cwm_agent.world.trace_metrics`` scores them).

How a trace is taken (``run_trace``): the file is loaded as a module (its
``if __name__ == "__main__"`` block does not run), then the ``call`` expression is
evaluated under ``sys.settrace`` in a child process (``cwm_agent.world.trace_runner``)
whose stdin is /dev/null and whose stdout/stderr go to files, while frames travel
through a separate file, so a program's prints can never corrupt the trace.

What is traced, and how (the decisions the model's format leaves open):

- Only code objects compiled from the traced file, and only from the moment the
  *entry* function starts until that frame exits for good; every call into the
  file made meanwhile is traced, however it is reached (nested calls, recursion,
  callbacks from builtins like ``sorted``). The entry is the function the call
  expression names ('f("a")' -> f, 'Acc().push(5)' -> push; ``entry=`` overrides),
  or, when the file defines no such function ('list(gen(3))'), the first
  function of the file the call enters. File code that runs before the entry
  starts (``Acc.__init__`` above, a ``main`` that calls the entry), library code,
  and the call expression itself are not traced.
- Comprehensions and generator expressions (``<listcomp>``, ``<dictcomp>``,
  ``<setcomp>``, ``<genexpr>``) are NOT traced as calls: their line runs as one
  step of the enclosing function. Python 3.12 inlines comprehensions (PEP 709),
  so tracing them would make the ground truth depend on the interpreter, and their
  only local, ``.0``, is an iterator whose repr holds a memory address. Functions
  they call (``[g(x) for x in xs]``) are traced as usual. Lambdas are traced.
- Events are exactly those of ``sys.settrace``: a call frame when a function
  starts (and each time a generator resumes: its line is then the ``yield``
  line), a line frame before each line runs, a return frame when it returns
  (or yields; the value is what it returns or yields), an exception frame in
  every function an exception passes through (caught or not). A function left
  by an exception shows an exception frame followed by a return frame with
  value ``None``, as settrace reports it.
- A call frame's line is the ``def`` line (settrace reports the first decorator
  line for decorated functions; the def line is what the model sees marked).
- Locals are ``frame.f_locals`` (bound names only, closure variables included),
  each shown as ``repr()``. Call frames always show every local in full; a line
  frame shows ``".."`` for a local exactly where CWM's release reads it back
  (demos/cwmdbg.py ``local_vars``): walking back through the preceding frames in
  trace order, the first frame showing the name with a real value has the same
  repr; the walk takes a call frame's values and stops there, and stops at a
  return frame. So the first frame of a caller after a nested call returns shows
  every local in full. trace_metrics.replay reads frames by the same walk.
- A repr that raises is shown as ``<repr raised TYPE: message>``; one longer than
  ``repr_limit`` characters is cut there and ends with ``...[truncated]``
  (big lists/tuples/dicts/sets are cut without building the whole repr).
- Source lines keep their trailing newline (one is added to a last line that
  lacks it) and lose a ``  # << START_OF_TRACE`` marker if the file has one.
- The trace ends with ``<|end_of_text|>`` when the entry frame exits for good
  (returns, or is left by an exception), i.e. ``halted``. It stops without it
  after ``max_steps`` frames (one frame = one step) or ``timeout`` seconds.
- The child runs with PYTHONHASHSEED=0, so set reprs are the same on every run.
- Deep recursion: the tracer runs on the program's stack, so a settrace tracer
  cannot follow a RecursionError raised at the limit (its own call is always the
  deepest and fails first, which switches tracing off). The child gets 100 extra
  frames of limit for the tracer, and the trace stops cleanly (``stop_reason``
  "recursion_limit", not halted) where untraced Python would raise RecursionError.
- Frame lines and events are what this interpreter reports (the goldens in
  tests/test_trace.py were taken on CPython 3.11; 3.12 reports a few multi-line
  statements differently).
- Threads the program starts are not traced (settrace is per thread); a source
  line or value containing a special token such as ``<|frame_sep|>`` renders
  ambiguously as text (the model's tokenizer keeps them apart; parse_trace cannot).
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# --- the format's literals: all of them live in this block --------------------

START_MARKER = "  # << START_OF_TRACE"
TOKENS = {
    "begin": "<|begin_of_text|>",
    "end": "<|end_of_text|>",
    "context": "<|trace_context_start|>",
    "frame": "<|frame_sep|>",
    "action": "<|action_sep|>",
    "return": "<|return_sep|>",
    "call": "<|call_sep|>",
    "line": "<|line_sep|>",
    "exception": "<|exception_sep|>",
    "arg": "<|arg_sep|>",
}
TOKEN_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|frame_sep|>": 128100,
    "<|action_sep|>": 128101,
    "<|return_sep|>": 128102,
    "<|call_sep|>": 128103,
    "<|line_sep|>": 128104,
    "<|exception_sep|>": 128105,
    "<|arg_sep|>": 128106,
    "<|trace_context_start|>": 128107,
}
TEMPLATES = {
    "prompt": "<|begin_of_text|><|trace_context_start|>{source}<|frame_sep|>",
    "call": "<|call_sep|>{locals}<|action_sep|>{line}<|frame_sep|>",
    "line": "<|line_sep|>{locals}<|action_sep|>{line}<|frame_sep|>",
    "return": "<|return_sep|><|action_sep|>{line}<|arg_sep|>{value}<|frame_sep|>",
    "exception": "<|exception_sep|><|action_sep|>{line}<|arg_sep|>{value}<|frame_sep|>",
    "end": "<|end_of_text|>",
}
UNCHANGED = ".."
TRUNCATED = "...[truncated]"
REPR_RAISED = "<repr raised {type}: {message}>"
# The demo samples frames one at a time at these settings and stops on <|frame_sep|>.
FRAME_STOP_TOKEN_ID = TOKEN_IDS["<|frame_sep|>"]
FRAME_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 2048}

EVENTS = ("call", "line", "return", "exception")
INVALID = "invalid"  # parse_trace's event for a chunk of text that is not a frame
# About 500-700 tokens: a frame with a few capped values stays within the demo's
# 2,048 tokens per frame.
REPR_LIMIT = 2000
STDOUT_LIMIT = 1 << 20
# Seconds the parent waits past `timeout` before killing a child stuck in C code.
KILL_GRACE = 2.0


@dataclass
class Frame:
    """One trace frame. ``locals`` maps name -> repr (or ".."), for call/line frames;
    ``value`` is the repr of the returned value / raised exception, for return and
    exception frames. ``lineno`` is informative only (not compared, not rendered)."""

    event: str
    locals: dict[str, str] = field(default_factory=dict)
    line: str = ""
    value: str | None = None
    lineno: int | None = field(default=None, compare=False)


@dataclass
class TraceResult:
    """What ``run_trace`` saw. ``text`` is what the model would generate after
    ``trace_prompt``: the rendered frames, ending with <|end_of_text|> when halted."""

    path: Path
    call: str
    frames: list[Frame]
    text: str
    halted: bool  # the entry frame exited within max_steps frames
    steps: int  # frames recorded
    # returned | step_limit | timeout | recursion_limit | exited (os._exit) | unfinished
    # (a generator entry left suspended) | no_entry | load_error | tracer_error | crashed
    stop_reason: str
    entry_function: str | None  # qualified name of the entry frame's function
    return_value: str | None  # repr of what the entry returned (None if it did not return)
    raised: str | None  # repr of the exception that left the entry (None if none did)
    stdout: str
    stderr: str
    error: str | None  # uncaught exception / why the trace stopped early
    seconds: float | None  # time spent in the call itself, inside the child

    @property
    def prompt(self) -> str:
        """The model's prompt for this trace (needs an entry function)."""
        if self.entry_function is None:
            raise ValueError(f"no entry function: the call never entered {self.path}")
        with tokenize.open(self.path) as handle:  # honours a coding cookie
            return trace_prompt(handle.read(), self.entry_function)


# --- prompt -------------------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """Lines as Python's tokenizer counts them (\\n, \\r\\n, \\r), ends kept."""
    parts = re.split(r"(\r\n|\r|\n)", text)
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def clean_line(text: str) -> str:
    """A source line as frames show it: marker removed, exactly one trailing "\\n"."""
    body = text.rstrip("\r\n")
    if body.endswith(START_MARKER.strip()):
        body = body[: -len(START_MARKER.strip())].rstrip()
    return body + "\n"


def _def_lineno(source: str, entry: str) -> int | None:
    """1-based line of `entry`'s def: a qualified name ("Class.method",
    "outer.<locals>.inner") matches exactly, a plain name the shallowest first def."""
    wanted = entry.replace(".<locals>", "")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        name = re.escape(wanted.rsplit(".", 1)[-1])
        pattern = re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{name}\b")
        for number, line in enumerate(split_lines(source), 1):
            if pattern.match(line):
                return number
        return None
    found: list[tuple[int, int, str, int]] = []  # (depth, lineno, qualname, def line)

    def walk(node: ast.AST, prefix: str, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualname = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found.append((depth, child.lineno, qualname, child.lineno))
                walk(child, qualname + ".", depth + 1)
            else:
                walk(child, prefix, depth)

    walk(tree, "", 0)
    exact = [item for item in found if item[2] == wanted]
    by_name = sorted(item for item in found if item[2].rsplit(".", 1)[-1] == wanted)
    best = exact or by_name
    return best[0][3] if best else None


def unmark(source: str) -> str:
    """``source`` with the ``# << START_OF_TRACE`` marker taken off every line that ends with it."""
    marker = START_MARKER.strip()
    out = []
    for line in split_lines(source):
        body = line.rstrip("\r\n")
        if body.rstrip().endswith(marker):
            line = body.rstrip()[: -len(marker)].rstrip() + line[len(body):]
        out.append(line)
    return "".join(out)


def trace_prompt(source: str, entry_function: str) -> str:
    """`<|begin_of_text|><|trace_context_start|>{source}<|frame_sep|>` with the entry's
    def line ending in "  # << START_OF_TRACE", and no other marker: one a file puts on
    another function (or its own, spelled otherwise) is taken off first, so a prompt
    carries exactly one, as CWM's release has it."""
    source = unmark(source)
    number = _def_lineno(source, entry_function)
    if number is None:
        raise ValueError(
            f"no function named {entry_function!r} in the source; "
            "pass the name of a function defined there (e.g. 'f' or 'Class.method')"
        )
    lines = split_lines(source)
    line = lines[number - 1]
    body = line.rstrip("\r\n")
    if not body.rstrip().endswith(START_MARKER.strip()):
        lines[number - 1] = body + START_MARKER + line[len(body) :]
    return TEMPLATES["prompt"].format(source="".join(lines))


def call_entry_name(call: str) -> str | None:
    """The function a call expression names: 'f("a")' -> "f", 'A().m(1)' -> "m"."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            return node.func.id
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
    return None


# --- rendering ----------------------------------------------------------------


def render_frame(frame: Frame) -> str:
    if frame.event in ("call", "line"):
        return TEMPLATES[frame.event].format(locals=json.dumps(frame.locals), line=frame.line)
    if frame.event in ("return", "exception"):
        return TEMPLATES[frame.event].format(line=frame.line, value=json.dumps(frame.value))
    if frame.event == INVALID:  # junk read by parse_trace goes back out as it came
        return frame.line + TOKENS["frame"]
    raise ValueError(f"cannot render a frame with event {frame.event!r}; expected one of {EVENTS}")


def render_frames(frames: Iterable[Frame], *, end: bool | None = None) -> str:
    """Frames as the model writes them; `end` appends <|end_of_text|> (default: the
    `ended` flag of a parsed trace, else False)."""
    if end is None:
        end = bool(getattr(frames, "ended", False))
    return "".join(render_frame(f) for f in frames) + (TEMPLATES["end"] if end else "")


# --- running ------------------------------------------------------------------


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]\n" if len(data) > limit else "")


def _frame_from_record(record: Sequence) -> Frame:
    event, lineno, line, local_vars, value = record
    return Frame(event, dict(local_vars or {}), line, value, lineno)


def run_trace(
    path: Path | str,
    call: str,
    *,
    max_steps: int = 10_000,
    timeout: float = 10.0,
    repr_limit: int = REPR_LIMIT,
    python: str | None = None,
    stdout_limit: int = STDOUT_LIMIT,
    trace: bool = True,
    entry: str | None = None,
) -> TraceResult:
    """Run `call` (an expression such as 'f("a")') against the functions of `path`
    in a child process, traced; see the module docstring for what is recorded.
    The entry is `entry` (a function name or qualified name), else the function
    the call names when the file defines it ('f(1)' -> f, 'A().m()' -> m), else
    the first function of the file the call enters.
    `trace=False` runs the same child untraced (for timing comparisons)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass the Python file whose functions to trace")
    if max_steps < 0:
        raise ValueError("max_steps must be >= 0")
    with tempfile.TemporaryDirectory(prefix="cwm-trace-") as tmp:
        channel, out, err = Path(tmp, "frames.jsonl"), Path(tmp, "stdout"), Path(tmp, "stderr")
        config = {
            "path": str(path),
            "call": call,
            "max_steps": max_steps,
            "timeout": timeout,
            "repr_limit": repr_limit,
            "channel": str(channel),
            "trace": trace,
            "entry": entry,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
        )
        env.update(PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        argv = [python or sys.executable, "-m", "cwm_agent.world.trace_runner", json.dumps(config)]
        killed = False
        with open(out, "wb") as out_file, open(err, "wb") as err_file:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                env=env,
                start_new_session=True,  # so a timeout kills what the program spawned too
            )
            try:
                returncode = child.wait(timeout=timeout + KILL_GRACE)
            except subprocess.TimeoutExpired:
                killed = True
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                returncode = child.wait()
        frames: list[Frame] = []
        status: dict | None = None
        ended, outcome, entry_function = False, ["", None], None
        if channel.exists():
            with open(channel, encoding="utf-8") as handle:
                for raw in handle:
                    if not raw.endswith("\n"):
                        break  # cut off mid-write by a kill
                    record = json.loads(raw)
                    if isinstance(record, dict):
                        status = record
                    elif record[0] == "end":
                        ended, outcome = True, record[1:]
                    elif record[0] == "entry":
                        entry_function = record[1]
                    else:
                        frames.append(_frame_from_record(record))
        stdout = _read_capped(out, stdout_limit)
        stderr = _read_capped(err, stdout_limit)

    if status is not None:
        reason, error, seconds = status["reason"], status.get("error"), status.get("seconds")
    else:
        seconds = None
        if killed:
            reason = "timeout"
            error = (
                f"the program ran past {timeout:g} s outside traced code (blocked, in C code, "
                "or still loading the file); it was killed"
            )
        else:
            reason = "crashed"
            tail = stderr.strip().splitlines()[-3:]
            error = f"the traced process ended without a result (exit code {returncode})" + (
                ": " + " | ".join(tail) if tail else ""
            )
    return TraceResult(
        path=path,
        call=call,
        frames=frames,
        text=render_frames(frames, end=ended),
        halted=ended,
        steps=len(frames),
        stop_reason=reason,
        entry_function=entry_function,
        return_value=outcome[1] if outcome[0] == "return" else None,
        raised=outcome[1] if outcome[0] == "raise" else None,
        stdout=stdout,
        stderr=stderr,
        error=error,
        seconds=seconds,
    )


def halts_within(path: Path | str, call: str, steps: int, *, timeout: float = 10.0) -> bool:
    """Ground truth for `--halt-steps N`: does the entry call finish within `steps` frames?"""
    return run_trace(path, call, max_steps=steps, timeout=timeout).halted
