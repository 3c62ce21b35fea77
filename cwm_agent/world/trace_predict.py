"""The model's side of execution traces: CWM predicts frames, scored against the ground truth.

One request per frame, as CWM's demo did: ``POST /v1/completions`` with the
trace prompt (``entry_prompt``: ``trace.trace_prompt`` with the START_OF_TRACE
marker on the entry's def line only) plus the frames so far, stopped at
``<|frame_sep|>`` (id 128100) and, as CWM's server always does, at
``<|end_of_text|>``, ``<|eom_id|>`` and ``<|eot_id|>`` (128001, 128008, 128009);
temperature 0.6, top_p 0.95, 2,048 tokens per frame. The request asks vLLM to
keep the stop token's text, so the reply says which token ended it; the frame
comes back without it and is joined to the context with one ``<|frame_sep|>``.
A reply that begins with ``<|end_of_text|>`` (or with nothing of the model's
own before it stopped) is the end of the trace. A caller may force the frame's
first token (``prefill``: the demo's ``<|call_sep|>``, ``<|line_sep|>`` or
``<|return_sep|>``): the prompt ends with it and the model continues from it.

What the model is given: the ground truth's first frame, the entry's call frame,
whose locals are the call's arguments (the prompt itself names no arguments, so
without it the model would sample its own). That frame is "given" and left out
of the scores: ``state_exact`` and ``line_exact`` here are fractions of the
steps the model predicted. Two settings:

- free running (default): the model continues from its own frames until it
  ends the trace or ``max_frames``; scored with ``trace_metrics.compare``.
- teacher forcing: frame i is predicted from the true frames 0..i-1 (the
  setting of CWM's per-step figures); each step is scored on its own and the
  return value is the prediction of the entry's last return frame.

``--halt-steps N``: the ground truth says whether the entry returns within N
frames (``trace.halts_within``); the model's answer is whether its free-running
trace ends within N frames.
"""

from __future__ import annotations

import ast
import json
import re
import time
import tokenize
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cwm_agent.config import ConfigError
from cwm_agent.protocol import STOP_TOKEN_IDS
from cwm_agent.world.trace import (
    FRAME_SAMPLING,
    FRAME_STOP_TOKEN_ID,
    TOKENS,
    Frame,
    TraceResult,
    clean_line,
    halts_within,
    render_frame,
    split_lines,
    trace_prompt,
)
from cwm_agent.world.trace_metrics import TraceScore, compare, parse_trace, replay

# <|frame_sep|>, then the ids CWM's server stops every request on: <|end_of_text|>, <|eom_id|>, <|eot_id|>.
FRAME_STOP_IDS = (FRAME_STOP_TOKEN_ID, *STOP_TOKEN_IDS)
SEP, END = TOKENS["frame"], TOKENS["end"]


def entry_prompt(source: str, entry_function: str) -> str:
    """The trace prompt with exactly one marker, on ``entry_function``'s def line (trace_prompt)."""
    return trace_prompt(source, entry_function)


class TracePredictionError(ConfigError):
    """Trace prediction asked of a model that cannot do it; the message says what to change."""


def require_cwm(model: Any, what: str) -> None:
    if getattr(model, "format", None) != "cwm" or not hasattr(model, "complete_text"):
        raise TracePredictionError(
            f"{what} needs CWM served over /v1/completions (cwm format), but {getattr(model, 'name', 'the model')} "
            "speaks the chat format, which cannot continue a raw trace prompt. Pass --base-url of a vLLM serving "
            "CWM (and --format cwm if its id lacks 'cwm')."
        )


@dataclass
class FrameReply:
    text: str  # one frame without <|frame_sep|>; "" when the model ended the trace
    ended: bool
    cut_off: bool


@dataclass
class FramePredictor:
    """Asks the model for one frame at a time; keeps the token tally of every request."""

    model: Any
    temperature: float = FRAME_SAMPLING["temperature"]
    top_p: float = FRAME_SAMPLING["top_p"]
    max_tokens: int = FRAME_SAMPLING["max_tokens"]
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0, "requests": 0})
    seconds: float = 0.0

    def __post_init__(self) -> None:
        require_cwm(self.model, "predicting a trace")

    def next(self, context: str, prefill: str = "") -> FrameReply:
        """The frame after ``context`` (which ends with <|frame_sep|>); ``prefill`` forces its start."""
        completion = self.model.complete_text(
            context + prefill, max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
            stop_token_ids=FRAME_STOP_IDS, keep_stop_token=True)
        self.seconds += completion.seconds
        self.tokens["requests"] += 1
        self.tokens["prompt"] += completion.prompt_tokens or 0
        self.tokens["completion"] += completion.completion_tokens or 0
        raw = completion.text  # the client took the stop token off (completion.stop)
        text = raw.split(END, 1)[0]
        if text.endswith(SEP):
            text = text[: -len(SEP)]
        text = text.split(SEP, 1)[0]  # a server that ignored the stop id: one frame only
        if not text and not completion.cut_off:
            # <|end_of_text|> first (or <|eot_id|>/<|eom_id|>, or an empty frame): the trace is done
            return FrameReply("", True, False)
        ended = END in raw or completion.stop == END  # a frame, then <|end_of_text|> without <|frame_sep|>
        return FrameReply(prefill + text, ended, completion.cut_off)


@dataclass
class Predicted:
    frames: list[str]  # frame texts, without <|frame_sep|>
    ended: bool
    stop_reason: str  # ended | max_frames | cut_off

    @property
    def text(self) -> str:
        return "".join(f + SEP for f in self.frames) + (END if self.ended else "")


def predict_free(predictor: FramePredictor, prompt: str, given: Sequence[str], max_frames: int) -> Predicted:
    """The model's own trace after the given frames (texts with their <|frame_sep|>)."""
    context = prompt + "".join(given)
    frames: list[str] = []
    while len(given) + len(frames) < max_frames:
        reply = predictor.next(context)
        if reply.ended and not reply.text:
            return Predicted(frames, True, "ended")
        if reply.cut_off:
            return Predicted(frames, False, "cut_off")
        frames.append(reply.text)
        context += reply.text + SEP
        if reply.ended:
            return Predicted(frames, True, "ended")
    return Predicted(frames, False, "max_frames")


def predict_forced(predictor: FramePredictor, prompt: str, truth: Sequence[Frame], truth_ended: bool,
                   given: int = 1) -> tuple[list[str], bool | None]:
    """Frame i from the true frames before it, for i >= given; and whether the model ends the
    trace after the last true frame (None when the truth did not end)."""
    texts = [render_frame(f) for f in truth]
    out: list[str] = []
    for i in range(given, len(truth)):
        reply = predictor.next(prompt + "".join(texts[:i]))
        out.append(reply.text)
    ends: bool | None = None
    if truth_ended:
        ends = predictor.next(prompt + "".join(texts)).ended
    return out, ends


# --- scores -----------------------------------------------------------------------------------


def _divergence(score: TraceScore) -> dict[str, Any] | None:
    d = score.first_divergence
    return None if d is None else {**asdict(d), "text": d.describe()}


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return _ADDRESS.sub(" at 0x?", value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def per_step(truth: Sequence[Frame], predicted: Sequence[Frame]) -> list[dict[str, bool]]:
    """Step by step (over the truth's steps): does the predicted frame have the same line, the
    same state (".." resolved; values with memory addresses blanked)?"""
    gold_states, _ = replay(truth)
    pred_states, _ = replay(predicted)
    out = []
    for i, g in enumerate(truth):
        if i >= len(predicted):
            out.append({"state": False, "line": False})
            continue
        p = predicted[i]
        same_event = g.event == p.event
        line_ok = same_event and clean_line(g.line) == clean_line(p.line)
        if not same_event:
            state_ok = False
        elif g.event in ("return", "exception"):
            state_ok = _norm(g.value) == _norm(p.value)
        else:
            state_ok = _norm(gold_states[i] or {}) == _norm(pred_states[i] or {})
        out.append({"state": state_ok, "line": line_ok})
    return out


def score_free(truth: TraceResult, given: Sequence[str], predicted: Predicted) -> dict[str, Any]:
    """CWM's metrics over the predicted steps (the given frames are left out of the fractions)."""
    full = parse_trace("".join(given) + predicted.text)
    result = compare(truth, full)
    n, g = result.n_truth, len(given)
    scored = max(n - g, 0)

    def share(matches: int) -> float:
        return (matches - g) / scored if scored else (1.0 if not predicted.frames else 0.0)

    return {"setting": "free", "given_steps": g, "scored_steps": scored, "predicted_steps": len(predicted.frames),
            "state_exact": round(share(result.state_matches), 4), "line_exact": round(share(result.line_matches), 4),
            "state_matches": result.state_matches - g, "line_matches": result.line_matches - g,
            "first_divergence": _divergence(result), "return_match": result.return_match, "exact": result.exact,
            "pred_errors": result.pred_errors, "per_step": per_step(truth.frames, full)[g:]}


def score_forced(truth: TraceResult, predicted: Sequence[str], ends: bool | None, given: int = 1) -> dict[str, Any]:
    frames = list(truth.frames)
    state = line = 0
    first: dict[str, Any] | None = None
    return_match = False
    errors: list[str] = []
    per_step: list[dict[str, bool]] = []
    for offset, text in enumerate(predicted):
        i = given + offset
        parsed = parse_trace(text + SEP)
        errors += [f"step {i}: {e}" for e in parsed.errors]
        guess = parsed[0] if parsed else Frame("invalid", {}, text, None)
        result = compare(frames[: i + 1], frames[:i] + [guess])
        ok_state, ok_line = result.state_matches == i + 1, result.line_matches == i + 1
        state += ok_state
        line += ok_line
        per_step.append({"state": ok_state, "line": ok_line})
        if first is None and result.first_divergence is not None:
            first = _divergence(result)
        if i == len(frames) - 1 and truth.halted:
            return_match = compare(truth, frames[:i] + [guess]).return_match
    if first is None and ends is False:
        first = {"step": len(frames), "field": "end", "expected": END, "got": "no end",
                 "text": f"step {len(frames)}: end differs: expected {END}, got no end"}
    scored = len(predicted)
    return {"setting": "teacher_forcing", "given_steps": given, "scored_steps": scored,
            "predicted_steps": scored, "state_exact": round(state / scored, 4) if scored else 1.0,
            "line_exact": round(line / scored, 4) if scored else 1.0, "state_matches": state, "line_matches": line,
            "first_divergence": first, "return_match": return_match, "ends_match": ends,
            "exact": first is None, "pred_errors": errors, "per_step": per_step}


# --- locating predicted lines in the source ----------------------------------------------------


def _function_spans(source: str) -> dict[int, tuple[int, int]]:
    """def line -> (first, last) line of the function (decorators excluded)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    spans: dict[int, tuple[int, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            spans.setdefault(node.lineno, (node.lineno, node.end_lineno or node.lineno))
    return spans


def locate_lines(source: str, frames: Sequence[Frame]) -> list[int | None]:
    """A line number for each frame, found by its source text: inside the current call's
    function, the first match at or after the previous line (a loop goes back to its head
    when there is none after). None where the text is nowhere in the source."""
    lines = [clean_line(line) for line in split_lines(source)]
    spans = _function_spans(source)
    everywhere = (1, len(lines))
    stack: list[list[int]] = []  # [first, last, previous line]

    def matches(text: str, first: int, last: int) -> list[int]:
        text = clean_line(text) if text else text
        return [n for n in range(first, last + 1) if lines[n - 1] == text]

    out: list[int | None] = []
    for frame in frames:
        if frame.event == "call":
            found = [n for n in matches(frame.line, *everywhere) if n in spans] or matches(frame.line, *everywhere)
            number = found[0] if found else None
            first, last = spans.get(number, everywhere) if number else everywhere
            stack.append([first, last, number or first])
            out.append(number)
            continue
        first, last, previous = stack[-1] if stack else [*everywhere, 1]
        found = matches(frame.line, first, last) or matches(frame.line, *everywhere)
        after = [n for n in found if n >= previous]
        number = (after or found or [None])[0]
        if stack and number is not None:
            stack[-1][2] = number
        out.append(number)
        if frame.event == "return" and stack:
            stack.pop()
    return out


# --- the whole job of `cwm-agent trace --predict` ------------------------------------------------


def frame_dict(frame: Frame, lineno: int | None = None) -> dict[str, Any]:
    return {"event": frame.event, "lineno": frame.lineno if lineno is None else lineno, "line": frame.line,
            "locals": frame.locals, "value": frame.value}


def truth_dict(truth: TraceResult) -> dict[str, Any]:
    return {"halted": truth.halted, "steps": truth.steps, "stop_reason": truth.stop_reason,
            "entry_function": truth.entry_function, "return_value": truth.return_value, "raised": truth.raised,
            "stdout": truth.stdout, "error": truth.error, "seconds": truth.seconds,
            "frames": [frame_dict(f) for f in truth.frames], "text": truth.text}


def compare_with_model(truth: TraceResult, predictor: FramePredictor, *, teacher_forcing: bool = False,
                       max_frames: int | None = None, halt_steps: int | None = None) -> dict[str, Any]:
    """Ask the model for the trace of ``truth``'s call and score it (the report behind --predict)."""
    if truth.entry_function is None or not truth.frames:
        raise ValueError(f"the call never entered a function of {truth.path}: nothing to predict "
                         f"({truth.error or truth.stop_reason})")
    source = Path(truth.path).read_text(encoding="utf-8")
    with tokenize.open(truth.path) as handle:  # honours a coding cookie, as TraceResult.prompt does
        prompt = entry_prompt(handle.read(), truth.entry_function)
    given = [render_frame(truth.frames[0])]
    cap = max_frames or max(2 * truth.steps + 16, halt_steps or 0)
    started = time.perf_counter()
    out: dict[str, Any] = {"prompt": prompt, "given": given}
    free: Predicted | None = None
    if teacher_forcing:
        texts, ends = predict_forced(predictor, prompt, truth.frames, truth.halted)
        out["metrics"] = score_forced(truth, texts, ends)
        parsed = [parse_trace(t + SEP) for t in texts]
        frames = [truth.frames[0]] + [p[0] if p else Frame("invalid", {}, t, None) for p, t in zip(parsed, texts)]
        out["prediction"] = {"setting": "teacher_forcing", "ended": ends, "stop_reason": None,
                             "text": "".join(t + SEP for t in texts)}
    else:
        free = predict_free(predictor, prompt, given, cap)
        out["metrics"] = score_free(truth, given, free)
        frames = list(parse_trace("".join(given) + free.text))
        out["prediction"] = {"setting": "free", "ended": free.ended, "stop_reason": free.stop_reason,
                             "text": free.text}
    numbers = locate_lines(source, frames)
    states, _ = replay(frames)
    out["prediction"]["frames"] = [{**frame_dict(f, n), "state": s} for f, n, s in zip(frames, numbers, states)]
    if halt_steps is not None:
        if free is None or (not free.ended and len(given) + len(free.frames) < halt_steps):
            free = predict_free(predictor, prompt, given, halt_steps)
        out["halt"] = {"steps": halt_steps, "truth": halts_within(truth.path, truth.call, halt_steps),
                       "predicted": free.ended and len(given) + len(free.frames) <= halt_steps}
    out["prediction"]["tokens"] = dict(predictor.tokens)
    out["prediction"]["seconds"] = round(time.perf_counter() - started, 3)
    return out


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False)
