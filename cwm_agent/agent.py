"""The loop CWM was trained in: one tool call per turn, until a submission and a summary, or a limit.

One step = query the model -> parse the action -> run it in the sandbox -> feed the observation back.
The agent has no screen: it reports through an Events object, so the CLI, eval and the GitHub
Action each show (or don't show) progress their own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from cwm_agent import protocol
from cwm_agent.config import Settings
from cwm_agent.model import ContextLengthExceeded, Model, ModelError
from cwm_agent.protocol import Action, ActionError, Transcript
from cwm_agent.sandbox.base import Sandbox, SandboxError
from cwm_agent.tokens import TokenizeError
from cwm_agent.tools import ToolResult, execute
from cwm_agent.trajectory import Step, Trajectory

if TYPE_CHECKING:
    from cwm_agent.imagine import Imagination


class Exit(str, Enum):
    SUBMITTED = "submitted"  # submitted, then wrote the final summary
    TURN_LIMIT = "turn_limit"
    CONTEXT_LIMIT = "context_limit"
    TIME_LIMIT = "time_limit"
    FORMAT_ERRORS = "format_errors"  # too many malformed replies in a row
    MODEL_ERROR = "model_error"  # infrastructure: the model server failed (after retries)
    SANDBOX_ERROR = "sandbox_error"  # infrastructure: the sandbox failed
    INTERRUPTED = "interrupted"

    @property
    def infrastructure(self) -> bool:
        """Never the agent's fault: a batch can re-run exactly these."""
        return self in (Exit.MODEL_ERROR, Exit.SANDBOX_ERROR)


class Events:
    """Callbacks for a live view. Every method is optional; the default does nothing."""

    def on_turn_start(self, turn: int, remaining_tokens: int) -> None: ...
    def on_text(self, delta: str) -> None: ...
    def on_action(self, step: Step) -> None: ...
    def on_step(self, step: Step) -> None: ...
    def on_end(self, result: EpisodeResult) -> None: ...


@dataclass
class EpisodeResult:
    exit: Exit
    detail: str = ""
    submission: str | None = None  # the last successfully submitted patch
    summary: str | None = None  # the final response after the submission
    turns: int = 0
    tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class _End(Exception):
    def __init__(self, exit: Exit, detail: str = ""):
        super().__init__(detail)
        self.exit, self.detail = exit, detail


@dataclass
class Limits:
    max_turns: int = protocol.MAX_TURNS
    context_window: int = protocol.CONTEXT_WINDOW
    turn_tokens: int = protocol.TURN_TOKEN_LIMIT
    wall_time: float | None = None
    max_format_errors: int = 5

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(s.max_turns, s.context_window, s.turn_tokens, s.wall_time, s.max_format_errors)


class Agent:
    def __init__(self, model: Model, sandbox: Sandbox, *, limits: Limits | None = None,
                 tools: tuple[str, ...] = protocol.ALL_TOOLS, reasoning: bool = True,
                 trajectory: Trajectory | None = None, events: Events | None = None,
                 should_stop: Callable[[], bool] = lambda: False, imagination: Imagination | None = None):
        self.model, self.sandbox = model, sandbox
        self.limits = limits or Limits()
        if model.max_context:  # the server's window, when smaller than ours, is the real limit
            self.limits.context_window = min(self.limits.context_window, model.max_context)
        self.tools, self.reasoning = tools, reasoning
        self.trajectory = trajectory
        self.events = events or Events()
        self.should_stop = should_stop  # polled between turns: how a batch run stops its workers
        self.imagination = imagination  # imagine.Imagination: predicts observations (--imagine), else None
        self.transcript: Transcript | None = None
        self.tokens_used = 0  # tokens in the transcript so far, counted piece by piece
        self.submission: str | None = None
        self.totals = {"model": 0.0, "command": 0.0, "overhead": 0.0}

    # -- the episode ---------------------------------------------------------------------
    def run(self, issue: str) -> EpisodeResult:
        started = time.monotonic()
        turn, summary = 0, None
        try:
            self._start(issue)
            errors_in_row = 0
            while True:
                if self.should_stop():
                    raise _End(Exit.INTERRUPTED, "stopped by the runner")
                if turn >= self.limits.max_turns:
                    raise _End(Exit.TURN_LIMIT, f"{turn} turns used")
                if self.limits.wall_time and time.monotonic() - started > self.limits.wall_time:
                    raise _End(Exit.TIME_LIMIT, f"wall time {self.limits.wall_time:.0f}s spent")
                turn += 1
                step, summary = self._step(turn)
                if summary is not None:
                    raise _End(Exit.SUBMITTED, "submitted and summarised")
                errors_in_row = errors_in_row + 1 if step.format_error else 0
                if errors_in_row >= self.limits.max_format_errors:
                    raise _End(Exit.FORMAT_ERRORS, f"{errors_in_row} malformed replies in a row")
        except _End as end:
            result = EpisodeResult(end.exit, end.detail)
        except KeyboardInterrupt:
            result = EpisodeResult(Exit.INTERRUPTED, "interrupted by the user")
        except ContextLengthExceeded as exc:
            result = EpisodeResult(Exit.CONTEXT_LIMIT, str(exc))
        except ModelError as exc:
            result = EpisodeResult(Exit.MODEL_ERROR, f"{exc.kind}: {exc}")
        except TokenizeError as exc:
            result = EpisodeResult(Exit.MODEL_ERROR, f"tokenizer: {exc}")
        except SandboxError as exc:
            result = EpisodeResult(Exit.SANDBOX_ERROR, str(exc))
        result.submission, result.summary = self.submission, summary
        result.turns, result.tokens = turn, self.tokens_used
        result.timings = dict(self.totals, wall=time.monotonic() - started)
        if self.trajectory:
            self.trajectory.finish(exit=result.exit.value, detail=result.detail, turns=turn,
                                   tokens=self.tokens_used, timings=result.timings,
                                   submission=self.submission, summary=summary)
        self.events.on_end(result)
        return result

    def _start(self, issue: str) -> None:
        count = self.model.counter.count
        system = protocol.system_prompt(tools=self.tools, reasoning=self.reasoning,
                                        session_timeout=_seconds(getattr(self.sandbox, "command_timeout", 120)),
                                        context_window=self.limits.context_window,
                                        max_turns=self.limits.max_turns)
        issue = protocol.truncate_issue(issue, count)
        user = protocol.issue_prompt(issue, repo_root=self.sandbox.repo_root)
        self.transcript = Transcript.start(system, user, reasoning=self.reasoning)
        # Length of the transcript text already sent or received: what lies beyond it is new,
        # both for the trajectory's prompt deltas and for token counting.
        self._known = 0
        self.tokens_used = count(self.transcript.prompt)

    def _step(self, turn: int) -> tuple[Step, str | None]:
        t0 = time.perf_counter()
        transcript = self.transcript
        prompt = transcript.prompt
        room = self.limits.context_window - self.tokens_used
        max_tokens = min(self.limits.turn_tokens, room)
        if max_tokens <= 0:
            raise _End(Exit.CONTEXT_LIMIT, f"{self.tokens_used} of {self.limits.context_window} tokens used")
        self.events.on_turn_start(turn, room)
        step = Step(index=turn, prompt_delta=prompt[self._known:], completion="")
        self._known = len(prompt)
        t_model = time.perf_counter()
        completion = self.model.complete(transcript, max_tokens=max_tokens, on_text=self.events.on_text)
        if self.imagination:  # imagines the outcome; lookahead may swap in another sampled reply
            completion = self.imagination.choose(self, step, completion, max_tokens)
        model_s = time.perf_counter() - t_model
        step.completion, step.finish_reason, step.cut_off = completion.text, completion.finish_reason, completion.cut_off
        transcript.add_assistant(completion.text)
        self._known += len(completion.text)
        produced = completion.completion_tokens or self.model.counter.count(completion.text)
        self.tokens_used += produced
        step.tokens = {"prompt": completion.prompt_tokens, "completion": produced}
        if completion.cut_off and produced >= room:
            self._record(step, t0, model_s, 0.0)
            raise _End(Exit.CONTEXT_LIMIT, "the reply ran into the end of the context window")

        summary, command_s = None, 0.0
        if self.submission is not None and protocol.is_final_summary(completion.text, reasoning=self.reasoning):
            summary = _after_think(completion.text)
        else:
            try:
                action = protocol.parse_action(completion.text, reasoning=self.reasoning, tools=self.tools)
            except ActionError as exc:
                step.format_error = exc.feedback
                self._append("user", protocol.format_error_message(exc.feedback))
            else:
                step.action = {"tool": action.tool, "body": action.body}
                self.events.on_action(step)
                t_cmd = time.perf_counter()
                if self.imagination:  # dream: the imagined feedback stands for the sandbox's
                    outcome = self.imagination.execute(step, action, self.sandbox)
                else:
                    outcome = execute(action, self.sandbox)
                command_s = time.perf_counter() - t_cmd
                self._observe(step, action, outcome, turn)
                if self.imagination:
                    self.imagination.observed(step)
        self._record(step, t0, model_s, command_s)
        return step, summary

    def _observe(self, step: Step, action: Action, outcome: ToolResult, turn: int) -> None:
        count = self.model.counter.count
        feedback = protocol.truncate_result(outcome.feedback, count)
        if outcome.command is not None:
            step.command_status, step.exit_code = outcome.command.status, outcome.command.exit_code
        if outcome.submitted_patch is not None:
            self.submission, step.submitted = outcome.submitted_patch, True
        body = protocol.budgeted_tool_result(feedback, remaining_turns=self.limits.max_turns - turn,
                                             context_window=self.limits.context_window,
                                             tokens_so_far=self.tokens_used, count=count, tool=action.tool)
        step.observation = feedback
        self._append(f"tool: {action.tool}", body)

    def _append(self, role: str, body: str) -> None:
        if role == "user":
            self.transcript.add_user(body)
        else:
            self.transcript.add_tool_result(role.removeprefix("tool: "), body)
        # New text: maybe a closing <|eot_id|>, the message, the next header. Counted piece by
        # piece (exact: special tokens bound the pieces), so the message's count, already
        # taken for its budget block, comes from the counter's cache instead of a new request.
        message = protocol.render_message(role, body)
        head, _, tail = self.transcript.prompt[self._known:].partition(message)
        self.tokens_used += sum(self.model.counter.count(piece) for piece in (head, message, tail) if piece)

    def _record(self, step: Step, t0: float, model_s: float, command_s: float) -> None:
        step.tokens["context_used"] = self.tokens_used
        total = time.perf_counter() - t0
        step.timings = {"model": model_s, "command": command_s, "overhead": max(0.0, total - model_s - command_s)}
        for key, value in step.timings.items():
            self.totals[key] += value
        if self.trajectory:
            self.trajectory.add(step)
        self.events.on_step(step)


def _after_think(text: str) -> str:
    text = text.removesuffix(protocol.EOT)
    return text.split(protocol.THINK_END, 1)[-1].strip()


def _seconds(value: Any) -> int:
    return int(value) if value else 120
