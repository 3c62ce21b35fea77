"""The in-subprocess half of ``run_trace``: load a file, evaluate a call under
``sys.settrace``, write each frame as one JSON line to a channel file.

Run as ``python -m cwm_agent.world.trace_runner CONFIG_JSON`` (``run_trace`` does it).
Channel records: ``[event, lineno, line, locals|null, value|null]`` per frame,
``["entry", qualname]`` when the entry starts, ``["end", "return"|"raise", repr]``
when it exits for good, and a final status object
``{"reason", "error", "entry", "steps", "seconds"}``. The program's own stdout and
stderr are the process's; nothing of ours is written there.
"""

from __future__ import annotations

import ast
import dis
import inspect
import io
import itertools
import json
import os
import sys
import threading
import time
import tokenize
import traceback
import types
from collections.abc import Iterable
from typing import Any

from cwm_agent.world.trace import REPR_RAISED, TRUNCATED, UNCHANGED, call_entry_name, clean_line, split_lines

# Comprehension scopes run as one step of their line (see cwm_agent.world.trace).
SKIPPED_CODE = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_YIELD_OPS = frozenset(dis.opmap[name] for name in ("YIELD_VALUE",) if name in dis.opmap)
# The tracer runs on the program's stack: it gets this many frames above the
# program's recursion limit, and the trace stops cleanly when the program itself
# reaches that limit (a settrace tracer cannot follow a RecursionError raised at
# the limit: the trace call is always the deepest frame, so it fails first).
STACK_HEADROOM = 100
FLUSH_EVERY = 0.1  # seconds

_real_exit = os._exit  # the program's os._exit is replaced by Tracer.exit_hook

_CONTAINERS: dict[type, str] = {list: "[", tuple: "(", set: "{", frozenset: "frozenset({", dict: "{"}
_RECURSIVE: dict[type, str] = {list: "[...]", tuple: "(...)", dict: "{...}", set: "set(...)"}
_BOUNDED = frozenset(_CONTAINERS) | {str, bytes}
_ATOMIC = frozenset({int, float, complex, bool, type(None)})


def _raised(exc: BaseException, limit: int) -> str:
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ on the exception too
        message = "?"
    return REPR_RAISED.format(type=type(exc).__name__, message=message[:limit])


def bounded_repr(value: Any, limit: int) -> str:
    """repr(value), cut to `limit` characters + TRUNCATED, or marked when it raises.
    Big strings and builtin containers are cut without building their whole repr."""
    try:
        text = _prefix_repr(value, limit + 1, set()) if type(value) in _BOUNDED else repr(value)
    except BaseException as exc:
        return _raised(exc, limit)
    return text[:limit] + TRUNCATED if len(text) > limit else text


def _double_quoted(value: str | bytes) -> bool:
    """Python quotes a str/bytes repr with " only when it holds ' and no "."""
    single, double = ("'", '"') if type(value) is str else (b"'", b'"')
    return single in value and double not in value  # type: ignore[operator]


def _plain(items: Iterable[Any], budget: int) -> bool:
    """Items whose reprs are short and self-contained, so Python may join them."""
    kinds = set(map(type, items))
    return kinds <= _ATOMIC or (kinds == {str} and max(map(len, items)) < budget)


def _prefix_repr(value: Any, budget: int, active: set[int]) -> str:
    """A prefix of repr(value) at least `budget` long, or all of it. Safe because a
    str/bytes repr escapes character by character, and an exact list/tuple/set/dict
    repr is its items' reprs joined by ", "."""
    kind = type(value)
    if kind is str or kind is bytes:
        if len(value) < budget:
            return repr(value)
        head = value[:budget]
        return repr(head) if _double_quoted(head) == _double_quoted(value) else repr(value)
    if kind not in _CONTAINERS or len(value) <= budget // 3:
        return repr(value)
    if id(value) in active:
        return _RECURSIVE.get(kind, "...")
    opening = _CONTAINERS[kind]
    # Fast path: the first items (enough to pass the budget: each takes >= 3
    # characters) written by Python itself; what follows them is cut off anyway.
    count = budget // 3 + 2
    if kind is dict:
        head_map = dict(itertools.islice(value.items(), count))
        if _plain(head_map, budget) and _plain(head_map.values(), budget):
            return repr(head_map)
    elif kind is list or kind is tuple:
        head = value[:count]
        if _plain(head, budget):
            return repr(head)
    else:
        items = list(itertools.islice(value, count))
        if _plain(items, budget):
            return opening + repr(items)[1:]
    active.add(id(value))
    pieces = [opening]
    size = len(opening)
    try:
        for index, item in enumerate(value.items() if kind is dict else value):
            if index:
                pieces.append(", ")
                size += 2
            if kind is dict:
                key = item[0]
                text = _prefix_repr(key, budget - size, active) if type(key) in _BOUNDED else repr(key)
                pieces.append(text)
                size += len(text)
                if size > budget:
                    break
                pieces.append(": ")
                size += 2
                item = item[1]
            text = _prefix_repr(item, budget - size, active) if type(item) in _BOUNDED else repr(item)
            pieces.append(text)
            size += len(text)
            if size > budget:
                break
        else:
            return repr(value)  # never got past the budget: let Python write it all
    finally:
        active.discard(id(value))
    return "".join(pieces)


def _is_suspension(frame: types.FrameType) -> bool:
    """A 'return' event that is really a yield (or an await) of a generator/coroutine."""
    if not frame.f_code.co_flags & _SUSPENDABLE:
        return False
    code, lasti = frame.f_code.co_code, frame.f_lasti
    return 0 <= lasti < len(code) and code[lasti] in _YIELD_OPS


def _stack_depth(frame: types.FrameType | None) -> int:
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


class Channel:
    """The trace file: JSON lines. A daemon thread flushes it every FLUSH_EVERY
    seconds, so a child killed while blocked (sleep, I/O) keeps its frames."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb", buffering=1 << 16)  # BufferedWriter: thread-safe
        self._closed = False
        threading.Thread(target=self._flush_loop, name="trace-channel-flush", daemon=True).start()

    def _flush_loop(self) -> None:
        while not self._closed:
            time.sleep(FLUSH_EVERY)
            try:
                self._file.flush()
            except (ValueError, OSError):  # closed under us: the run is over
                return

    def write(self, record: Any) -> None:
        self._file.write(json.dumps(record).encode("ascii") + b"\n")  # json.dumps escapes non-ASCII

    def close(self) -> None:
        self._closed = True
        self._file.flush()
        self._file.close()


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # the program may have replaced or closed them
            pass


class Tracer:
    """The settrace callbacks. `on_call` is the global trace function; each traced
    activation gets an `_Activation` whose `on_event` is its local trace function."""

    def __init__(
        self,
        *,
        filename: str,
        lines: list[str],
        def_lines: dict[tuple[int, str], int],
        channel: Channel,
        max_steps: int,
        deadline: float,
        repr_limit: int,
        started: float,
        entry_name: str | None = None,
    ) -> None:
        self.filename = filename
        self.wanted = entry_name  # None: the first function of the file entered
        self.lines = lines
        self.def_lines = def_lines
        self.channel = channel
        self.max_steps = max_steps
        self.deadline = deadline
        self.repr_limit = repr_limit
        self.started = started
        self.entry: types.FrameType | None = None
        self.entry_name: str | None = None
        self.ended = False
        self.steps = 0
        self.broken: BaseException | None = None
        self.seen: dict[str, str] = {}  # name -> the value the release's ".." walk finds from the next frame

    # -- settrace callbacks --

    def on_call(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if self.ended or code.co_filename != self.filename or code.co_name in SKIPPED_CODE:
            return None
        try:
            if self.broken is not None:
                self._stop_broken()
            back = frame.f_back
            caller = getattr(back.f_trace, "__self__", None) if back is not None else None
            if isinstance(caller, _Activation):
                depth = caller.depth + 1
            else:
                depth = _stack_depth(frame)
            if depth > sys.getrecursionlimit() - STACK_HEADROOM:
                self.stop(
                    "recursion_limit",
                    f"the program recursed to Python's recursion limit ({depth} frames deep); "
                    "untraced it would raise RecursionError here, but a settrace tracer cannot "
                    "follow that, so the trace stops (trace a smaller input to see it return)",
                )
            if self.entry is None:
                qualname = getattr(code, "co_qualname", code.co_name)
                if self.wanted is not None and self.wanted not in (code.co_name, qualname):
                    return None  # not traced: runs before (or around) the entry
                self.entry = frame
                self.entry_name = qualname
                self.channel.write(["entry", qualname])
            lineno = frame.f_lineno
            lineno = self.def_lines.get((lineno, code.co_name), lineno)
            state = self._reprs(frame)
            self._emit("call", lineno, state, None)
            return _Activation(self, depth).on_event
        except BaseException as exc:  # never let our failure reach the program
            self.broken = exc
            return None

    def _reprs(self, frame: types.FrameType) -> dict[str, str]:
        limit = self.repr_limit
        return {name: bounded_repr(value, limit) for name, value in frame.f_locals.items()}

    def _emit(self, event: str, lineno: int | None, local_vars: dict | None, value: str | None) -> None:
        if self.steps >= self.max_steps:
            self.stop(
                "step_limit",
                f"stopped after {self.max_steps} steps (frames) before the entry call returned; "
                "raise the step limit if the program should halt",
            )
        if time.monotonic() >= self.deadline:
            self.stop("timeout", "the program ran past its time limit while being traced; it was stopped")
        self.steps += 1
        line = self.lines[lineno - 1] if lineno and 0 < lineno <= len(self.lines) else "\n"
        if event == "call":
            self.seen = dict(local_vars)
        elif event == "line":
            # ".." exactly where the release's reader (cwmdbg.py local_vars) finds the same value
            # walking back through the frames before this one: `seen` is what that walk finds.
            shown = {k: UNCHANGED if self.seen.get(k) == v else v for k, v in local_vars.items()}
            self.seen.update(local_vars)
            local_vars = shown
        elif event == "return":
            self.seen = {}  # the walk stops at a return frame: the caller's next frame is in full
        self.channel.write([event, lineno, line, local_vars, value])

    def end_entry(self, raised: str | None, value: str) -> None:
        self.ended = True
        self.channel.write(["end", "raise", raised] if raised is not None else ["end", "return", value])

    def exit_hook(self, code: int) -> None:
        """Stands in for os._exit in the program, so the frames so far are kept."""
        self.stop("exited", f"the program called os._exit({code!r})", exit_code=code if isinstance(code, int) else 1)

    def _stop_broken(self) -> None:
        exc = self.broken
        self.stop("tracer_error", f"the tracer failed ({type(exc).__name__}: {exc}); the trace is incomplete")

    # -- finishing --

    def status(self, reason: str, error: str | None) -> dict:
        return {
            "reason": reason,
            "error": error,
            "entry": self.entry_name,
            "steps": self.steps,
            "seconds": time.perf_counter() - self.started,
        }

    def stop(self, reason: str, error: str, exit_code: int = 0) -> None:
        """End the run from inside the trace function: nothing the program does
        (a bare except, a finally) can resume it."""
        sys.settrace(None)
        sys.setrecursionlimit(sys.getrecursionlimit() + STACK_HEADROOM)  # room to report
        self.channel.write(self.status(reason, error))
        self.channel.close()
        _flush_std()
        _real_exit(exit_code)


class _Activation:
    """One run of one function (a generator gets one per resumption): its depth, and
    the exception that is leaving it, if one is."""

    __slots__ = ("tracer", "depth", "raised")

    def __init__(self, tracer: Tracer, depth: int) -> None:
        self.tracer = tracer
        self.depth = depth
        self.raised: str | None = None  # set by an exception frame, cleared by a line frame

    def on_event(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        tracer = self.tracer
        if tracer.ended:
            return None
        try:
            if tracer.broken is not None:
                tracer._stop_broken()
            if event == "line":
                self.raised = None
                tracer._emit("line", frame.f_lineno, tracer._reprs(frame), None)
            elif event == "return":
                value = bounded_repr(arg, tracer.repr_limit)
                tracer._emit("return", frame.f_lineno, None, value)
                # (a generator left by an exception still points at its yield)
                if frame is tracer.entry and (self.raised is not None or not _is_suspension(frame)):
                    # settrace reports a frame left by an exception as exception + return None
                    tracer.end_entry(self.raised, value)
            elif event == "exception":
                self.raised = bounded_repr(arg[1], tracer.repr_limit)
                tracer._emit("exception", frame.f_lineno, None, self.raised)
        except BaseException as exc:
            tracer.broken = exc
            return None
        return self.on_event


def _def_lines(tree_source: str) -> dict[tuple[int, str], int]:
    """(first decorator line, name) -> def line, for decorated functions: settrace
    reports a decorated function's call at its first decorator."""
    mapping: dict[tuple[int, str], int] = {}
    try:
        tree = ast.parse(tree_source)
    except SyntaxError:
        return mapping
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list:
            first = min(d.lineno for d in node.decorator_list)
            mapping[(first, node.name)] = node.lineno
    return mapping


def _function_names(code: types.CodeType) -> set[str]:
    """Names and qualified names of the functions a module's code defines (not its
    class bodies: 'Acc(3)' names a class, and then the entry is the first function)."""
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        if current.co_flags & inspect.CO_OPTIMIZED:
            names.update((current.co_name, getattr(current, "co_qualname", current.co_name)))
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def _format_exception(exc: BaseException) -> str:
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # drop our frame
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def main(argv: list[str] | None = None) -> None:
    config = json.loads((argv if argv is not None else sys.argv)[1])
    started = time.monotonic()
    channel = Channel(config["channel"])

    def finish(status: dict) -> None:
        channel.write(status)
        channel.close()
        _flush_std()
        _real_exit(0)  # skip atexit handlers and waiting for the program's threads

    path: str = config["path"]
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        text = raw.decode(encoding)
        code = compile(raw, path, "exec", dont_inherit=True)
        call_code = compile(config["call"].strip(), "<call>", "eval", dont_inherit=True)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as exc:
        finish({"reason": "load_error", "error": f"cannot load {path} or the call: {exc}", "entry": None})
        return

    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier() or name in sys.modules:
        name = "__trace_target__"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    sys.path[0] = os.path.dirname(path)
    sys.argv = [path]
    try:
        exec(code, module.__dict__)  # module level runs untraced; __name__ is not "__main__"
    except BaseException as exc:
        finish({"reason": "load_error", "error": f"running {path} failed:\n{_format_exception(exc)}", "entry": None})
        return

    if not config.get("trace", True):
        begin = time.perf_counter()
        error = None
        try:
            eval(call_code, module.__dict__)
        except BaseException as exc:
            error = _format_exception(exc)
        seconds = time.perf_counter() - begin
        finish({"reason": "untraced", "error": error, "entry": None, "steps": 0, "seconds": seconds})
        return

    wanted = config.get("entry") or call_entry_name(config["call"])
    tracer = Tracer(
        filename=code.co_filename,
        lines=[clean_line(line) for line in split_lines(text)],
        def_lines=_def_lines(text),
        channel=channel,
        max_steps=int(config["max_steps"]),
        deadline=started + float(config["timeout"]),
        repr_limit=int(config["repr_limit"]),
        started=time.perf_counter(),
        entry_name=wanted if wanted in _function_names(code) else None,
    )
    error = None
    os._exit = tracer.exit_hook  # type: ignore[assignment]
    sys.setrecursionlimit(sys.getrecursionlimit() + STACK_HEADROOM)
    sys.settrace(tracer.on_call)
    try:
        eval(call_code, module.__dict__)
    except BaseException as exc:
        error = _format_exception(exc)
    finally:
        sys.settrace(None)
    if tracer.broken is not None:
        exc = tracer.broken
        reason, error = "tracer_error", f"the tracer failed ({type(exc).__name__}: {exc}); the trace is incomplete"
    elif tracer.ended:
        reason = "returned"
    elif tracer.entry is None:
        reason = "no_entry"
        error = error or f"the call never entered a function defined in {path}; call one of its functions"
    else:
        reason = "unfinished"
        error = error or "the call finished while the entry function was still suspended (an unexhausted generator?)"
    finish(tracer.status(reason, error))


if __name__ == "__main__":
    main()
