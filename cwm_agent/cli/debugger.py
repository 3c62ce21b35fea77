"""`cwm-agent debug FILE.py`: the neural debugger. pdb's commands; CWM predicts every frame.

The function to debug is the one whose ``def`` line ends with ``# << START_OF_TRACE``
(or ``--entry NAME``). The model gets the trace prompt (``trace_predict.entry_prompt``:
the marker on that def line only, any other marker in the file removed) and the
frames so far, and writes the next frame (``trace_predict.FramePredictor``: one
request per frame, stopped at ``<|frame_sep|>`` and at 128001/128008/128009).
Arguments: with ``--call EXPR`` the call frame is the real one (the program is run
once for the ground truth); without it the model samples them: the first frame
asked for (at the start, or after ``reset``) starts with ``<|call_sep|>``, forced.

Forcing a token (as CWM's demos/cwmdbg.py does): the prompt ends with it and the
model writes the rest of the frame from it. The commands, as in the demo (pdb's
names and one-letter forms; an empty line repeats the last one):

- ``step``/``s``: after a call frame, ``<|line_sep|>`` is forced (into the callee);
  otherwise the next frame as the model writes it.
- ``next``/``n``: the next frame; when it is a call, ``<|return_sep|>`` is forced
  (the model writes the callee's return without its body), then one more frame.
- ``out``/``o``: frames until the running function returns, then one more; after
  every call frame on the way ``<|return_sep|>`` is forced (nested calls are not
  entered).
- ``continue``/``c``: steps (as ``step``) until the program ends or a breakpoint
  (``break LINE``).
- ``back``/``b``: drop the last frame (the entry's call frame stays; ``reset``
  samples new arguments).
- ``print``/``p`` [NAME]: the current function's locals (".." resolved).
- ``set NAME VALUE``: edit a local in the last frame of the context (VALUE is a
  Python literal, or a repr written as the model would see it); the next frames
  continue from the edited state. The ground truth does not follow edits.
- ``reset``: back to the start: the real call frame with ``--call``, else no frame, and
  the next one starts with ``<|call_sep|>``. ``list``/``l`` [LINE], ``where``/``w``,
  ``help``, ``quit``/``q``.

Ground truth: when the program can run with the same arguments (``--call``, or
the model's sampled arguments are all Python literals of a top-level function),
it is traced for real (``trace.run_trace``) and every predicted frame gets a mark:
✓ where it agrees with the real frame, ✗ and the real line/values where they part.
Frames are matched step by step; a call whose return is forced (``next``, ``out``)
skips the real call's frames up to its return.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.text import Text

from cwm_agent.config import ConfigError
from cwm_agent.world.trace import (
    START_MARKER,
    TOKENS,
    UNCHANGED,
    Frame,
    TraceResult,
    clean_line,
    render_frame,
    run_trace,
    split_lines,
)
from cwm_agent.world.trace_metrics import parse_trace, replay
from cwm_agent.world.trace_predict import SEP, FramePredictor, entry_prompt, locate_lines

PROMPT = "(cwmdbg) "
CALL, LINE, RETURN = TOKENS["call"], TOKENS["line"], TOKENS["return"]
MAX_RUN = 500  # frames one out/continue may predict
WINDOW = 2  # source lines shown around the current one after a move
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
HELP = """commands (an empty line repeats the last one):
  s(tep)          the next frame; after a call frame, into the callee (<|line_sep|> forced)
  n(ext)          the next frame; a call's return is forced (<|return_sep|>), then one more frame
  o(ut)           frames until this function returns, then one more (nested calls' returns forced)
  c(ontinue)      steps until the program ends or a breakpoint
  b(ack)          drop the last frame (the entry's call frame stays)
  p(rint) [NAME]  the current function's locals
  set NAME VALUE  edit a local in the last frame (VALUE: a Python literal or a repr)
  reset           back to the start (the next frame starts with <|call_sep|>)
  break LINE      stop `continue` at LINE;  l(ist) [LINE];  w(here);  h(elp);  q(uit)"""


class DebuggerError(ConfigError):
    """The debugger cannot start; the message says what to change."""


@dataclass
class _Entry:
    frame: Frame
    forced: str = ""  # the token the debugger forced as its start ("" when the model wrote it all)
    truth: int | None = None  # index of the real frame it stands for
    given: bool = False  # not predicted: the call's real arguments
    by: str = ""  # the command that asked for it

    @property
    def text(self) -> str:
        """The frame as the model reads it, <|frame_sep|> included."""
        return render_frame(self.frame)


def marked_function(source: str) -> str | None:
    """Qualified name of the function whose def line carries the START_OF_TRACE marker."""
    marker = START_MARKER.strip()
    lines = split_lines(source)
    numbers = [i + 1 for i, line in enumerate(lines) if line.rstrip("\r\n").endswith(marker)]
    if not numbers:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise DebuggerError(f"the file does not parse ({exc.msg}, line {exc.lineno}); fix it first") from None
    found: dict[int, str] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found[child.lineno] = name
                walk(child, name + "." if isinstance(child, ast.ClassDef) else name + ".<locals>.")
            else:
                walk(child, prefix)

    walk(tree, "")
    for number in numbers:
        if number in found:
            return found[number]
    raise DebuggerError(f"line {numbers[0]} carries '{marker}' but is not a def line; put it after `def f(...):`")


def _literal_call(source: str, qualname: str, args: dict[str, str]) -> str | None:
    """A call expression that passes ``args`` (reprs) to a top-level function, when every
    parameter has a value and every value is a Python literal; else None."""
    if "." in qualname:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == qualname), None)
    if node is None or isinstance(node, ast.AsyncFunctionDef):
        return None
    a = node.args
    parts: list[str] = []
    plan = [(p.arg, "{}") for p in a.posonlyargs] + [(p.arg, p.arg + "={}") for p in a.args]
    if a.vararg:
        plan.append((a.vararg.arg, "*{}"))
    plan += [(p.arg, p.arg + "={}") for p in a.kwonlyargs]
    if a.kwarg:
        plan.append((a.kwarg.arg, "**{}"))
    for name, form in plan:
        value = args.get(name)
        if value is None or value == UNCHANGED:
            return None
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        parts.append(form.format(value))
    return f"{qualname}({', '.join(parts)})"


def _norm(value: object) -> object:
    if isinstance(value, str):
        return _ADDRESS.sub(" at 0x?", value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


class NeuralDebugger:
    def __init__(self, predictor: FramePredictor, path: Path | str, *, console: Console, entry: str | None = None,
                 call: str | None = None, timeout: float = 10.0, max_steps: int = 10_000) -> None:
        self.predictor, self.console = predictor, console
        self.path = Path(path)
        try:
            self.source = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DebuggerError(f"cannot read {path}: {exc.strerror}; pass the Python file to debug") from None
        self.entry = entry or marked_function(self.source)
        if self.entry is None:
            raise DebuggerError(f"no function in {path} is marked: end the def line of the function to debug with "
                                f"'{START_MARKER.strip()}', or pass --entry NAME")
        try:
            self.prompt = entry_prompt(self.source, self.entry)
        except ValueError as exc:
            raise DebuggerError(str(exc)) from None
        self.lines = [clean_line(line).rstrip("\n") for line in split_lines(self.source)]
        self.timeout, self.max_steps = timeout, max_steps
        self.truth: TraceResult | None = None
        self._truth_states: list = []
        self.given: list[_Entry] = []
        if call:
            truth = run_trace(self.path, call, entry=self.entry, timeout=timeout, max_steps=max_steps)
            if not truth.frames or truth.frames[0].event != "call":
                raise DebuggerError(f"the call {call} never entered {self.entry} "
                                    f"({truth.error or truth.stop_reason}); pass a call that reaches it")
            self._set_truth(truth)
            self.given = [_Entry(truth.frames[0], truth=0, given=True)]
        self.truth_from_call = call is not None
        self.frames: list[_Entry] = self._fresh()
        self.ended = False
        self.edited_from: int | None = None  # first frame changed by `set`: no ground truth from there
        self.breakpoints: set[int] = set()
        self.last_command = ""
        self.tried_truth = call is not None
        self.quit = False
        self._later: list[tuple[str, str]] = []  # notices shown after the frames of a command

    # -- state -------------------------------------------------------------------------------
    def _set_truth(self, truth: TraceResult | None) -> None:
        self.truth = truth
        self._truth_states = replay(truth.frames)[0] if truth else []

    def _fresh(self) -> list[_Entry]:
        """Copies of the given frames (set edits entries in place; the originals stay)."""
        return [replace(e, frame=replace(e.frame)) for e in self.given]

    @property
    def context(self) -> str:
        """Exactly what the model continues: the prompt and every frame so far."""
        return self.prompt + "".join(e.text for e in self.frames)

    @property
    def depth(self) -> int:
        depth = 0
        for e in self.frames:
            depth += {"call": 1, "return": -1}.get(e.frame.event, 0)
        return depth

    def _states(self) -> list:
        return replay([e.frame for e in self.frames])[0]

    def _linenos(self) -> list[int | None]:
        return locate_lines(self.source, [e.frame for e in self.frames])

    def _function(self, index: int) -> str:
        """Name of the function frame ``index`` runs in."""
        depth = 0
        for e in reversed(self.frames[: index + 1]):
            if e.frame.event == "return" and e is not self.frames[index]:
                depth += 1
            elif e.frame.event == "call":
                if depth == 0:
                    match = re.match(r"\s*(?:async\s+)?def\s+(\w+)", e.frame.line)
                    return match.group(1) if match else "?"
                depth -= 1
        return self.entry

    # -- the model ---------------------------------------------------------------------------
    def _predict(self, prefill: str = "", by: str = "") -> _Entry | None:
        """One frame request; ``prefill`` is the token forced as the frame's start. With no frame
        yet, the entry's call: <|call_sep|> is forced (the model writes the arguments)."""
        if self.ended:
            self._later.append(("the program has ended (back, reset or quit)", "yellow"))
            return None
        if not self.frames:
            prefill = CALL
        reply = self.predictor.next(self.context, prefill)
        if reply.ended and not reply.text:
            self.ended = True
            self._later.append((f"{TOKENS['end']}: the model says the program ended", "bold"))
            return None
        if reply.cut_off:
            self._later.append((f"the model's frame was cut off at {self.predictor.max_tokens} tokens; not added",
                                "red"))
            return None
        parsed = parse_trace(reply.text + SEP)
        frame = parsed[0] if parsed else Frame("invalid", {}, reply.text, None)
        entry = _Entry(frame, forced=prefill, truth=self._truth_index(frame, prefill), by=by)
        self.frames.append(entry)
        if reply.ended:
            self.ended = True
        if self.truth is None and not self.tried_truth and frame.event == "call" and len(self.frames) == 1:
            self._truth_from_sample(frame)
        return entry

    def _truth_index(self, frame: Frame, forced: str) -> int | None:
        if self.truth is None or self.edited_from is not None or not self.frames:
            return None
        last = self.frames[-1].truth
        if last is None:
            return None
        if forced != RETURN:
            return last + 1 if last + 1 < len(self.truth.frames) else None
        # a forced return: skip the real callee's frames up to its return
        if self.truth.frames[last].event != "call":
            return None
        depth = 0
        for i in range(last, len(self.truth.frames)):
            depth += {"call": 1, "return": -1}.get(self.truth.frames[i].event, 0)
            if depth == 0:
                return i
        return None

    def _truth_from_sample(self, frame: Frame) -> None:
        self.tried_truth = True
        call = _literal_call(self.source, self.entry, frame.locals)
        if call is None:
            self.say("no ground truth: the sampled arguments are not all Python literals", "dim")
            return
        truth = run_trace(self.path, call, entry=self.entry, timeout=self.timeout, max_steps=self.max_steps)
        if truth.frames and truth.frames[0].event == "call" and _norm(truth.frames[0].locals) == _norm(frame.locals):
            self._set_truth(truth)
            self.frames[0].truth = 0
            self.say(f"ground truth: ran {call} for real ({truth.steps} frames)", "dim")
        elif not truth.frames:
            self.say(f"no ground truth: {call} did not run ({truth.error or truth.stop_reason})", "dim")
        else:
            self.say(f"no ground truth: {call} did not start with these arguments", "dim")

    # -- showing -----------------------------------------------------------------------------
    def say(self, text: str | Text, style: str | None = None) -> None:
        self.console.print(text if isinstance(text, Text) else Text(text, style=style or ""), highlight=False)

    def _mark(self, index: int, states: list) -> Text | None:
        entry = self.frames[index]
        if self.truth is None:
            return None
        if self.edited_from is not None and index >= self.edited_from:
            return Text("  · edited: the real run does not follow", style="dim")
        if entry.truth is None:
            return Text("  ✗ the real run has no such frame (it ended, or the prediction went astray)", style="red")
        real = self.truth.frames[entry.truth]
        problems: list[str] = []
        if real.event != entry.frame.event:
            problems.append(f"real frame is a {real.event} at line {real.lineno}: {real.line.strip()}")
        else:
            if clean_line(real.line) != clean_line(entry.frame.line):
                problems.append(f"real line {real.lineno}: {real.line.strip()}")
            if real.event in ("return", "exception"):
                if _norm(real.value) != _norm(entry.frame.value):
                    problems.append(f"real value {real.value}")
            else:
                want, got = self._truth_states[entry.truth] or {}, states[index] or {}
                for name in list(want) + [n for n in got if n not in want]:
                    if _norm(want.get(name)) != _norm(got.get(name)):
                        problems.append(f"{name}: real {want.get(name, '(unbound)')}, predicted "
                                        f"{got.get(name, '(unbound)')}")
        if not problems:
            return Text("  ✓ matches the real run", style="green")
        return Text("  ✗ " + "; ".join(problems), style="bold red")

    def _show(self, index: int, *, window: bool, numbers: list[int | None] | None = None,
              states: list | None = None) -> None:
        numbers = numbers if numbers is not None else self._linenos()
        states = states if states is not None else self._states()
        entry, number = self.frames[index], numbers[index]
        frame = entry.frame
        where = f"line {number}" if number else "line ?"
        head = Text(f"[{index}] {frame.event:<9} {where} in {self._function(index)}", style="bold cyan")
        if entry.forced == RETURN:
            head.append(f"  (return forced by {entry.by})", style="magenta")
        if entry.given:
            head.append("  (real arguments)", style="dim")
        self.say(head)
        if frame.event in ("call", "line"):
            shown = {k: v for k, v in frame.locals.items() if v != UNCHANGED}
            if shown:
                self.say("    " + ", ".join(f"{k} = {v}" for k, v in shown.items()))
        elif frame.event == "return":
            self.say(f"    return {frame.value}", "bold")
        elif frame.event == "exception":
            self.say(f"    raise {frame.value}", "bold red")
        else:
            self.say(f"    not a frame: {frame.line[:120]!r}", "red")
        mark = self._mark(index, states)
        if mark is not None:
            self.say(mark)
        if window:
            self._listing(number, WINDOW)

    def _listing(self, current: int | None, around: int) -> None:
        if current is None:
            self.say(f"    -> {self.frames[-1].frame.line.rstrip() if self.frames else ''}  (not in the source)",
                     "yellow")
            return
        first, last = max(1, current - around), min(len(self.lines), current + around)
        for n in range(first, last + 1):
            arrow = "->" if n == current else ("B " if n in self.breakpoints else "  ")
            self.say(f"{n:4} {arrow} {self.lines[n - 1]}", "bold" if n == current else "dim")

    def show_start(self) -> None:
        self.say(Text.assemble(("neural debugger", "bold"), f": {self.path.name}, from {self.entry}"))
        start = next((i + 1 for i, line in enumerate(split_lines(self.prompt)) if START_MARKER.strip() in line), None)
        for n, line in enumerate(self.lines, 1):
            self.say(f"{n:4} {'>>' if n == start else '  '} {line}", "bold" if n == start else "dim")
        if self.given:
            args = ", ".join(f"{k}={v}" for k, v in self.given[0].frame.locals.items())
            self.say(f"arguments (real): {args}")
            self._show(0, window=False)
        else:
            self.say("arguments: unbound; the model samples them on the first step (<|call_sep|> forced)", "dim")
        self.say("type help for the commands", "dim")

    # -- commands ----------------------------------------------------------------------------
    def execute(self, line: str) -> bool:
        """Run one command line; False once the user quits."""
        line = line.strip() or self.last_command
        if not line:
            return True
        self.last_command = line
        name, _, rest = line.partition(" ")
        handler = self._commands().get(name.lower())
        if handler is None:
            self.say(f"unknown command {name!r}; type help", "red")
            return True
        handler(rest.strip())
        return not self.quit

    def run(self, commands: Iterable[str], *, echo: bool = True) -> None:
        for command in commands:
            if echo:
                self.say(PROMPT + command.rstrip("\n"), "bold")
            if not self.execute(command):
                return

    def interact(self, read: Callable[[str], str] = input) -> None:
        while not self.quit:
            try:
                line = read(PROMPT)
            except EOFError:
                return
            self.execute(line)

    def _commands(self) -> dict[str, Callable[[str], None]]:
        table = {
            "step": self.do_step, "next": self.do_next, "out": self.do_out, "continue": self.do_continue,
            "back": self.do_back, "print": self.do_print, "set": self.do_set, "reset": self.do_reset,
            "list": self.do_list, "where": self.do_where, "break": self.do_break, "help": self.do_help,
            "quit": self.do_quit,
        }
        short = {"s": "step", "n": "next", "o": "out", "c": "continue", "b": "back", "p": "print", "l": "list",
                 "w": "where", "h": "help", "q": "quit", "cont": "continue", "exit": "quit", "finish": "out",
                 "up": "out", "?": "help"}
        return {**table, **{k: table[v] for k, v in short.items()}}

    def _after_move(self, added: int) -> None:
        if added > 0:
            numbers, states = self._linenos(), self._states()
            for index in range(len(self.frames) - added, len(self.frames)):
                self._show(index, window=index == len(self.frames) - 1, numbers=numbers, states=states)
        for text, style in self._later:
            self.say(text, style)
        self._later.clear()

    def _step(self, by: str = "step") -> _Entry | None:
        """The demo's step: after a call frame, into the callee (<|line_sep|> forced); else the
        next frame as the model writes it (with no frame yet, the entry's call)."""
        if self.frames and self.frames[-1].frame.event == "call":
            return self._predict(LINE, by)
        return self._predict(by=by)

    def do_step(self, arg: str = "") -> None:
        before = len(self.frames)
        self._step()
        self._after_move(len(self.frames) - before)

    def do_next(self, arg: str = "") -> None:
        before = len(self.frames)
        if not self.frames:  # the entry's call frame (its arguments) is the whole move
            self._predict(by="next")
        else:
            entry = self._predict(by="next")
            if entry is not None and entry.frame.event == "call":
                if self._predict(RETURN, "next") is not None:  # the callee's return, without its body
                    self._predict(by="next")
        self._after_move(len(self.frames) - before)

    def do_out(self, arg: str = "") -> None:
        before = len(self.frames)
        if not self.frames:
            self._predict(by="out")
        else:
            start = self.depth  # the running function's depth; a return below it leaves the function
            for _ in range(MAX_RUN):
                if self.frames[-1].frame.event == "call":
                    entry = self._predict(RETURN, "out")  # nested calls are not entered
                else:
                    entry = self._predict(by="out")
                if entry is None:
                    break
                if entry.frame.event == "return" and self.depth < start:
                    self._predict(by="out")
                    break
        self._after_move(len(self.frames) - before)

    def do_continue(self, arg: str = "") -> None:
        before = len(self.frames)
        for _ in range(MAX_RUN):
            entry = self._step("continue")
            if entry is None:
                break
            if self.breakpoints and entry.frame.event == "line" and self._linenos()[-1] in self.breakpoints:
                self.say(f"breakpoint at line {self._linenos()[-1]}", "magenta")
                break
        self._after_move(len(self.frames) - before)

    def do_back(self, arg: str = "") -> None:
        if len(self.frames) <= max(len(self.given), 1):
            self.say("nothing to drop: " + ("no frame yet" if not self.frames else
                     "the entry's call frame stays (reset samples new arguments)" if not self.given else
                     "no predicted frame yet"), "yellow")
            return
        dropped = self.frames.pop()
        self.ended = False
        if self.edited_from is not None and len(self.frames) <= self.edited_from:
            self.edited_from = None
        self.say(f"dropped [{len(self.frames)}] {dropped.frame.event} {dropped.frame.line.strip()}", "dim")
        self._show(len(self.frames) - 1, window=True)

    def _current_state(self) -> tuple[dict[str, str] | None, int | None]:
        """The locals of the running function (its last call/line frame) and that frame's index."""
        states = self._states()
        depth = 0
        for i in range(len(self.frames) - 1, -1, -1):
            event = self.frames[i].frame.event
            if event == "return":
                depth += 1
            elif event == "call" and depth > 0:
                depth -= 1
            elif event in ("call", "line") and depth == 0:
                return states[i], i
        return None, None

    def do_print(self, arg: str = "") -> None:
        state, _ = self._current_state()
        if state is None:
            self.say("no locals yet: step first", "yellow")
            return
        names = arg.split() or list(state)
        for name in names:
            self.say(f"{name} = {state[name]}" if name in state else f"{name}: not a local here", None)

    def do_set(self, arg: str) -> None:
        name, _, value = arg.partition(" ")
        value = value.strip()
        if not name.isidentifier() or not value:
            self.say("usage: set NAME VALUE   (VALUE a Python literal, e.g. set n 3 or set s 'abc')", "red")
            return
        if not self.frames or self.frames[-1].frame.event not in ("call", "line"):
            self.say("set edits the locals of a call or line frame: step to one first", "yellow")
            return
        try:
            shown = repr(ast.literal_eval(value))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            shown = value  # not a literal: taken as the repr the model should see
        last = self.frames[-1]
        last.frame = replace(last.frame, locals={**last.frame.locals, name: shown})
        index = len(self.frames) - 1
        self.edited_from = index if self.edited_from is None else min(self.edited_from, index)
        self.say(f"{name} = {shown}  (edited in frame [{index}]; the next frames continue from it)", "magenta")

    def do_reset(self, arg: str = "") -> None:
        self.frames = self._fresh()
        self.ended, self.edited_from = False, None
        if not self.truth_from_call:
            self._set_truth(None)
            self.tried_truth = False
            self.say("reset to the start: the next frame is the entry's call (<|call_sep|> forced)", "dim")
        else:
            self.say("reset to the start", "dim")

    def do_list(self, arg: str = "") -> None:
        if arg.isdigit():
            self._listing(int(arg), 5)
            return
        numbers = self._linenos()
        self._listing(numbers[-1] if numbers else None, 5) if self.frames else self.show_start()

    def do_where(self, arg: str = "") -> None:
        numbers, stack = self._linenos(), []
        for i, e in enumerate(self.frames):
            if e.frame.event == "call":
                stack.append(i)
            elif e.frame.event == "return" and stack and i < len(self.frames) - 1:
                stack.pop()  # a function that has just returned is still shown, at its return
        if not stack:
            self.say("no function is running", "yellow")
        for depth, i in enumerate(stack):
            current = numbers[-1] if depth == len(stack) - 1 else None
            self.say(f"{'  ' * depth}{self._function(i)} (def at line {numbers[i]})"
                     + (f", now at line {current}" if current else ""))

    def do_break(self, arg: str = "") -> None:
        if arg.isdigit():
            self.breakpoints.add(int(arg))
            self.say(f"breakpoint at line {arg}", "magenta")
        else:
            self.say("breakpoints: " + (", ".join(map(str, sorted(self.breakpoints))) or "none"))

    def do_help(self, arg: str = "") -> None:
        self.say(HELP)

    def do_quit(self, arg: str = "") -> None:
        self.quit = True
