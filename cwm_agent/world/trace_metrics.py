"""Trace text -> frames, and a predicted trace scored against the ground truth.

The metrics are CWM's own, per step (frame i of the prediction against frame i
of the truth; feed teacher-forced predictions frame by frame for the published
setting, or a free-running prediction as a whole):

- ``state_exact``: the fraction of ground-truth steps whose state the prediction
  gets exactly: same event and, for call/line frames, the same locals once ".."
  is resolved (so writing out an unchanged value is not an error), for
  return/exception frames the same value;
- ``line_exact``: the fraction with the same event and source line (a
  ``# << START_OF_TRACE`` marker the model copies from the prompt is ignored);
- ``first_divergence``: the first step where anything differs, and what;
- ``return_match``: the entry call's outcome matches: the value it returned, or
  the exception it was left by.

Memory addresses (`` at 0x7f...``) differ from run to run, so values are compared
with them blanked unless ``normalize_addresses=False``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cwm_agent.world.trace import EVENTS, INVALID, START_MARKER, TOKENS, UNCHANGED, Frame

DECODING_ERROR = "_DECODING_ERROR_"  # the locals key a malformed locals object is kept under
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class ParsedTrace(list):
    """The frames of a trace (a list, so it compares equal to a list of Frames),
    with ``ended`` (an <|end_of_text|> was seen) and ``errors`` (what was malformed)."""

    def __init__(self, frames: Sequence[Frame] = (), *, ended: bool = False, errors: Sequence[str] = ()) -> None:
        super().__init__(frames)
        self.ended = ended
        self.errors = list(errors)

    def __repr__(self) -> str:
        return f"ParsedTrace({list.__repr__(self)}, ended={self.ended}, errors={self.errors})"


def _parse_frame(chunk: str, index: int) -> tuple[Frame, list[str]]:
    errors: list[str] = []
    for event in EVENTS:
        if chunk.startswith(TOKENS[event]):
            break
    else:
        snippet = chunk[:60]
        return Frame(INVALID, {}, chunk, None), [f"frame {index}: does not start with an event token: {snippet!r}"]
    body = chunk[len(TOKENS[event]) :]
    head, sep, tail = body.partition(TOKENS["action"])
    if not sep:
        errors.append(f"frame {index}: no {TOKENS['action']}")
        head, tail = (body, "") if event in ("call", "line") else ("", body)
    if event in ("call", "line"):
        if TOKENS["arg"] in tail:
            errors.append(f"frame {index}: {TOKENS['arg']} in a {event} frame")
        return Frame(event, _parse_locals(head, index, errors), tail, None), errors
    if head:
        errors.append(f"frame {index}: locals in a {event} frame")
    line, sep, raw_value = tail.partition(TOKENS["arg"])
    value: str | None = None
    if not sep:
        errors.append(f"frame {index}: {event} frame without {TOKENS['arg']}")
    else:
        try:
            decoded = json.loads(raw_value)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            value = decoded
        else:
            errors.append(f"frame {index}: the {event} value is not a JSON string: {raw_value[:60]!r}")
            value = raw_value
    return Frame(event, {}, line, value), errors


def _parse_locals(text: str, index: int, errors: list[str]) -> dict[str, str]:
    try:
        decoded: Any = json.loads(text)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        errors.append(f"frame {index}: locals are not a JSON object: {text[:60]!r}")
        return {DECODING_ERROR: text}
    result: dict[str, str] = {}
    for name, value in decoded.items():
        if not isinstance(value, str):
            errors.append(f"frame {index}: local {name!r} is not a JSON string")
            value = json.dumps(value)
        result[name] = value
    return result


def parse_trace(text: str) -> ParsedTrace:
    """Frames from trace text: what the model generated after the prompt (a whole
    prompt + completion is accepted too). Never raises: a frame that does not
    start with an event token becomes an ``invalid`` frame (so later steps stay
    aligned), malformed locals are kept under ``_DECODING_ERROR_``, an unterminated
    last frame is kept only if it is complete (or junk), and every problem is in ``errors``."""
    errors: list[str] = []
    start = text.find(TOKENS["context"])
    if start >= 0:
        after = text.find(TOKENS["frame"], start)
        text = text[after + len(TOKENS["frame"]) :] if after >= 0 else ""
    body, end, rest = text.partition(TOKENS["end"])
    if rest.strip():
        errors.append(f"text after {TOKENS['end']} ignored: {rest[:60]!r}")
    chunks = body.split(TOKENS["frame"])
    frames: list[Frame] = []
    for chunk in chunks[:-1]:
        if not chunk:
            errors.append(f"empty frame before frame {len(frames)} ignored")
            continue
        frame, problems = _parse_frame(chunk, len(frames))
        frames.append(frame)
        errors.extend(problems)
    last = chunks[-1]
    if last.strip():
        frame, problems = _parse_frame(last, len(frames))
        complete = not problems and frame.event != INVALID and (
            frame.event in ("return", "exception") or frame.line.endswith("\n")
        )
        if complete:
            frames.append(frame)
            errors.append(f"frame {len(frames) - 1}: not terminated by {TOKENS['frame']}")
        elif frame.event == INVALID:  # junk, not a cut-off frame: it takes a step
            frames.append(frame)
            errors.extend(problems)
        else:
            errors.append(f"truncated last frame dropped: {last[:60]!r}")
    return ParsedTrace(frames, ended=bool(end), errors=errors)


# --- resolving ".." and the entry's outcome ------------------------------------


def replay(frames: Sequence[Frame]) -> tuple[list[dict[str, str] | None], tuple[str, str | None] | None]:
    """Each frame's full locals, read as CWM's release reads them (demos/cwmdbg.py
    `local_vars`): a ".." value is the first real value of that name found walking back
    through the preceding frames in trace order; the walk takes a call frame's values and
    stops there, and stops at a return frame with nothing found (then ".." stays, and
    cannot match a real value). None for return/exception/invalid frames. Also the outcome
    of the outermost call: ("return", value) or ("raise", exception)."""
    seen: dict[str, str] = {}  # what the walk back finds from the next frame
    depth = 0
    raised: str | None = None  # the exception leaving the current call, if one is
    states: list[dict[str, str] | None] = []
    outcome: tuple[str, str | None] | None = None
    for frame in frames:
        state: dict[str, str] | None = None
        if frame.event in ("call", "line"):
            state = {k: seen.get(k, v) if v == UNCHANGED else v for k, v in frame.locals.items()}
            real = {k: v for k, v in frame.locals.items() if v != UNCHANGED}
            seen = real if frame.event == "call" else {**seen, **real}
            depth += frame.event == "call" or depth == 0  # (a prediction may start mid-function)
            raised = None
        elif frame.event == "exception":
            raised = frame.value
        elif frame.event == "return":
            seen = {}
            if depth == 1:
                # settrace reports a function left by an exception as exception + return None
                outcome = ("raise", raised) if raised is not None else ("return", frame.value)
            depth, raised = max(0, depth - 1), None
        states.append(state)
    return states, outcome


# --- scoring ------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """Where the prediction first differs. ``field``: event | line | locals | value |
    missing (the prediction stops early) | extra (it goes on) | end (one ends, one not)."""

    step: int
    field: str
    expected: str
    got: str

    def describe(self) -> str:
        return f"step {self.step}: {self.field} differs: expected {self.expected}, got {self.got}"


@dataclass
class TraceScore:
    """``state_exact``/``line_exact``: fractions of the ground-truth steps matched
    (1.0 for two empty traces); ``*_matches``: the counts behind them;
    ``pred_errors``: what parse_trace found malformed in the prediction."""

    state_exact: float
    line_exact: float
    first_divergence: Divergence | None
    return_match: bool
    n_truth: int
    n_pred: int
    state_matches: int = 0
    line_matches: int = 0
    exact: bool = False  # every frame and the ending agree
    pred_errors: list[str] = field(default_factory=list)


def _as_trace(trace: Any) -> ParsedTrace:
    if isinstance(trace, str):
        return parse_trace(trace)
    if isinstance(trace, ParsedTrace):
        return trace
    if hasattr(trace, "frames") and hasattr(trace, "halted"):  # a TraceResult
        return ParsedTrace(trace.frames, ended=trace.halted)
    return ParsedTrace(list(trace), ended=bool(getattr(trace, "ended", False)))


def _line(text: str) -> str:
    body = text.rstrip("\n")
    if body.endswith(START_MARKER.strip()):
        return body[: -len(START_MARKER.strip())].rstrip() + text[len(body) :]
    return text


def _describe(frame: Frame) -> str:
    return f"{frame.event} frame at {frame.line.strip()!r}"


def compare(truth: Any, predicted: Any, *, normalize_addresses: bool = True) -> TraceScore:
    """Score `predicted` against `truth`; each is trace text, a ParsedTrace, a list
    of Frames, or a TraceResult. Fractions are over the ground-truth steps."""
    gold, pred = _as_trace(truth), _as_trace(predicted)

    def norm(value: str | None) -> str | None:
        return _ADDRESS.sub(" at 0x?", value) if normalize_addresses and value is not None else value

    gold_states, gold_outcome = replay(gold)
    pred_states, pred_outcome = replay(pred)
    state_matches = line_matches = 0
    divergence: Divergence | None = None
    for i, (g, p) in enumerate(zip(gold, pred)):
        first: Divergence | None = None
        if g.event != p.event or g.event == INVALID:
            first = Divergence(i, "event", g.event, p.event)
        else:
            if _line(g.line) == _line(p.line):
                line_matches += 1
            else:
                first = Divergence(i, "line", repr(g.line), repr(p.line))
            state_diff = _state_difference(i, g, p, gold_states[i], pred_states[i], norm)
            if state_diff is None:
                state_matches += 1
            elif first is None:
                first = state_diff
        if divergence is None:
            divergence = first
    n_truth, n_pred = len(gold), len(pred)
    if divergence is None:
        if n_pred < n_truth:
            divergence = Divergence(n_pred, "missing", _describe(gold[n_pred]), "the end of the prediction")
        elif n_pred > n_truth:
            expected = TOKENS["end"] if gold.ended else "no more frames"
            divergence = Divergence(n_truth, "extra", expected, _describe(pred[n_truth]))
        elif gold.ended != pred.ended:
            divergence = Divergence(
                n_truth,
                "end",
                TOKENS["end"] if gold.ended else "no end",
                TOKENS["end"] if pred.ended else "no end",
            )

    def outcome(o: tuple[str, str | None] | None) -> tuple[str, str | None] | None:
        return (o[0], norm(o[1])) if o is not None else None

    return_match = gold_outcome is not None and outcome(gold_outcome) == outcome(pred_outcome)
    share = (lambda k: k / n_truth) if n_truth else (lambda k: 1.0 if n_pred == 0 else 0.0)
    return TraceScore(
        state_exact=share(state_matches),
        line_exact=share(line_matches),
        first_divergence=divergence,
        return_match=return_match,
        n_truth=n_truth,
        n_pred=n_pred,
        state_matches=state_matches,
        line_matches=line_matches,
        exact=divergence is None,
        pred_errors=list(pred.errors),
    )


def _state_difference(
    step: int,
    g: Frame,
    p: Frame,
    g_state: dict[str, str] | None,
    p_state: dict[str, str] | None,
    norm: Any,
) -> Divergence | None:
    if g.event in ("return", "exception"):
        if norm(g.value) == norm(p.value):
            return None
        return Divergence(step, "value", repr(g.value), repr(p.value))
    g_state, p_state = g_state or {}, p_state or {}
    for name in list(g_state) + [n for n in p_state if n not in g_state]:
        want, got = g_state.get(name), p_state.get(name)
        if norm(want) != norm(got):
            expected = f"{name}={want}" if want is not None else f"no {name}"
            actual = f"{name}={got}" if got is not None else f"no {name}"
            return Divergence(step, "locals", expected, actual)
    return None
