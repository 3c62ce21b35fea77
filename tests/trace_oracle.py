"""A scripted CWM for trace tests: it answers each frame request with the ground truth's frame.

The scripted server plays one entry per request; ``oracle(truth)`` gives a callable entry
that reads the request's prompt (trace prompt + frames so far, maybe a forced event token:
``<|return_sep|>``, ``<|call_sep|>``, ``<|line_sep|>``), finds where the real trace is, and
replies with the next real frame (without ``<|frame_sep|>``, as vLLM returns text before a
stop token; after a forced token, the rest of the frame), or ``<|end_of_text|>`` after the
last one. ``wrong={i: text}`` replaces the reply for real
frame i (to make known errors); ``end_after=k`` ends the trace after k frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cwm_agent.world.trace import Frame, render_frame
from cwm_agent.world.trace_metrics import parse_trace

CONTEXT, SEP, RET, END = "<|trace_context_start|>", "<|frame_sep|>", "<|return_sep|>", "<|end_of_text|>"
EVENT_TOKENS = (RET, "<|call_sep|>", "<|line_sep|>", "<|exception_sep|>")


def matching_return(frames: list[Frame], call: int) -> int:
    depth = 0
    for i in range(call, len(frames)):
        depth += {"call": 1, "return": -1}.get(frames[i].event, 0)
        if depth == 0:
            return i
    raise AssertionError(f"no return for the call at {call}")


def position(truth: list[Frame], shown: list[Frame]) -> tuple[int, list[int]]:
    """Index of the next real frame after the frames shown, and the open calls' indices."""
    pointer, stack = 0, []
    for frame in shown:
        if frame.event == "return" and pointer < len(truth) and truth[pointer].event != "return" and stack:
            pointer = matching_return(truth, stack[-1])  # a return forced by `next`
        if pointer < len(truth) and truth[pointer].event == "call":
            stack.append(pointer)
        if frame.event == "return" and stack:
            stack.pop()
        pointer += 1
    return pointer, stack


def oracle(truth: list[Frame], *, wrong: dict[int, str] | None = None, end_after: int | None = None,
           keep_sep: bool = False, log: list | None = None) -> Callable[[dict[str, Any]], str]:
    texts = [render_frame(f).removesuffix(SEP) for f in truth]
    wrong = wrong or {}

    def reply(body: dict[str, Any]) -> str:
        assert SEP + SEP not in body["prompt"], "an empty frame in the prompt"
        context = body["prompt"].split(CONTEXT, 1)[1].split(SEP, 1)[1]
        prefill = next((t for t in EVENT_TOKENS if context.endswith(t)), "")
        context = context[: len(context) - len(prefill)]
        shown = list(parse_trace(context))
        pointer, stack = position(truth, shown)
        if log is not None:
            log.append((pointer, prefill))
        if prefill == RET:
            return texts[matching_return(truth, stack[-1])][len(prefill):]
        if pointer >= len(truth) or (end_after is not None and len(shown) >= end_after):
            return END
        text = wrong.get(pointer, texts[pointer])
        if prefill:  # the rest of the real frame after its event token (the model follows the forced one)
            text = text[text.index("|>") + 2:]
        return text + (SEP if keep_sep else "")

    return reply


def replies(truth: list[Frame], n: int, **kw: Any) -> list:
    """n script entries that all ask the oracle."""
    answer = oracle(truth, **kw)
    return [answer] * n
