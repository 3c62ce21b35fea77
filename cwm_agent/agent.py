"""The loop CWM was trained in: one tool call per turn, until a submission and a summary, or a limit.

One step = query the model -> parse the action -> run it in the sandbox -> feed the observation back.
The agent has no screen: it reports through an Events object, so the CLI, eval and the GitHub
Action each show (or don't show) progress their own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal, Protocol

from cwm_agent import protocol
from cwm_agent.config import Settings
from cwm_agent.models.client import Completion, ContextLengthExceeded, Model, ModelError
from cwm_agent.models.tokens import TokenizeError
from cwm_agent.protocol import Action, ActionError, Transcript
from cwm_agent.sandbox.base import Sandbox, SandboxError
from cwm_agent.tools import ToolResult, execute
from cwm_agent.trajectory import Step, Trajectory


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

    @property
    def finished(self) -> bool:
        """Ended as CWM's episodes succeed: submitted, then summarised. Only these are graded;
        an episode ended by a limit failed, whatever it submitted (CWM's swerl_tool.py `step`)."""
        return self is Exit.SUBMITTED


class Events:
    """Callbacks for a live view. Every method is optional; the default does nothing."""

    def on_turn_start(self, turn: int, remaining_tokens: int) -> None: ...
    def on_text(self, delta: str) -> None: ...
    def on_action(self, step: Step) -> None: ...
    def on_step(self, step: Step) -> None: ...
    def on_end(self, result: EpisodeResult) -> None: ...


class Imagination(Protocol):
    """The hook --imagine plugs in (world/imagine.py): it sees each reply before it runs (lookahead
    may swap in another), may stand in for the sandbox (dream), and scores what really happened."""

    def choose(self, agent: Agent, step: Step, completion: Completion, max_tokens: int) -> Completion: ...
    def execute(self, step: Step, action: Action, sandbox: Sandbox) -> ToolResult: ...
    def observed(self, step: Step) -> None: ...


@dataclass(frozen=True)
class Decision:
    """What a person decided about one action (`cwm-agent chat`): run it, reject it (``message``
    goes to the model), or run ``action`` in its place."""

    verdict: Literal["run", "reject", "replace"] = "run"
    message: str = ""
    action: Action | None = None


RUN = Decision()


class Stop(Exception):
    """Raised by a Human hook to end the episode now (the person left): exit `interrupted`."""


class Human(Protocol):
    """The person in the loop (`cwm-agent chat`); solve and eval have none. The agent asks before
    each turn, before each action runs, and after Ctrl-C stopped the model or a command (the
    KeyboardInterrupt it raised while `Agent.busy` was set)."""

    def before_turn(self, agent: Agent) -> None: ...
    def decide(self, step: Step, action: Action) -> Decision: ...
    def interjection(self, step: Step, during: str) -> str | None: ...  # None: leave


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
                 should_stop: Callable[[], bool] = lambda: False, imagination: Imagination | None = None,
                 human: Human | None = None, task: str = "patch"):
        self.model, self.sandbox = model, sandbox
        self.limits = limits or Limits()
        if model.max_context:  # the server's window, when smaller than ours, is the real limit
            self.limits = replace(self.limits, context_window=min(self.limits.context_window, model.max_context))
        self.tools, self.reasoning = tools, reasoning
        self.trajectory = trajectory
        self.events = events or Events()
        self.should_stop = should_stop  # polled between turns: how a batch run stops its workers
        self.imagination = imagination  # predicts observations (--imagine), else None
        self.transcript: Transcript | None = None
        self.tokens_used = 0  # tokens in the transcript so far, as CWM counts them (see _start)
        self.submission: str | None = None
        self.totals = {"model": 0.0, "command": 0.0, "overhead": 0.0}
        self.human = human  # a person deciding each action (chat), else None
        if task not in ("patch", "test"):
            raise ValueError(f"an episode's task is 'patch' or 'test', not {task!r}")
        self.task = task  # "patch": solve the issue; "test": write test_issue.py (CWM's test generation)
        self.turn = 0  # replies so far
        self.summary: str | None = None  # the final summary, once the episode finished
        self.busy: str | None = None  # "model" or "command" while waiting on one: where Ctrl-C may stop a step
        self._notes: list[str] = []  # user messages waiting for the end of the current step (`tell`)
        self._known = self._counted = self._pending_bound = 0  # see _start

    # -- the episode ---------------------------------------------------------------------
    def run(self, issue: str) -> EpisodeResult:
        """A whole episode on ``issue``: the prompt, then turns until it ends."""
        return self.proceed(issue=issue)

    def follow_up(self, message: str) -> EpisodeResult:
        """After an ended episode (chat): the person's ``message`` as a user message, then more
        turns in the same sandbox and transcript."""
        self.tell(message)
        return self.proceed()

    def proceed(self, issue: str | None = None) -> EpisodeResult:
        """Turns from where the transcript stands (or from the start with ``issue``) until the episode ends."""
        started = time.monotonic()
        self.summary = None
        try:
            if issue is not None:
                self._start(issue)
            errors_in_row = 0
            while True:
                if self.should_stop():
                    raise _End(Exit.INTERRUPTED, "stopped by the runner")
                if self.limits.wall_time and time.monotonic() - started > self.limits.wall_time:
                    raise _End(Exit.TIME_LIMIT, f"wall time {self.limits.wall_time:.0f}s spent")
                if self.human:
                    self.human.before_turn(self)
                self._flush_notes()
                self.turn += 1
                step, self.summary = self._step(self.turn)
                if self.summary is not None:
                    raise _End(Exit.SUBMITTED, "submitted and summarised")
                errors_in_row = errors_in_row + 1 if step.format_error else 0
                if self.limits.max_format_errors and errors_in_row >= self.limits.max_format_errors:
                    raise _End(Exit.FORMAT_ERRORS, f"{errors_in_row} malformed replies in a row")
        except _End as end:
            result = EpisodeResult(end.exit, end.detail)
        except (KeyboardInterrupt, Stop):
            result = EpisodeResult(Exit.INTERRUPTED, "interrupted by the user")
        except ContextLengthExceeded as exc:
            result = EpisodeResult(Exit.CONTEXT_LIMIT, str(exc))
        except ModelError as exc:
            result = EpisodeResult(Exit.MODEL_ERROR, f"{exc.kind}: {exc}")
        except TokenizeError as exc:
            result = EpisodeResult(Exit.MODEL_ERROR, f"tokenizer: {exc}")
        except SandboxError as exc:
            result = EpisodeResult(Exit.SANDBOX_ERROR, str(exc))
        self.busy = None
        self._settle_at_end()
        result.submission, result.summary = self.submission, self.summary
        result.turns, result.tokens = self.turn, self.tokens_used
        result.timings = dict(self.totals, wall=time.monotonic() - started)
        if self.trajectory:
            self.trajectory.finish(exit=result.exit.value, detail=result.detail, turns=self.turn,
                                   tokens=self.tokens_used, timings=result.timings,
                                   submission=self.submission, summary=self.summary)
        self.events.on_end(result)
        return result

    # -- a person in the loop (chat) -------------------------------------------------------
    def tell(self, message: str) -> None:
        """A user message for the model: sent before the next reply is asked for (after the
        current action's result, when a reply is waiting for one)."""
        self._notes.append(message)

    def _flush_notes(self) -> None:
        while self._notes and self.transcript is not None:
            self._append("user", self._notes.pop(0))

    def typed(self, command: str) -> Step:
        """A command the person typed (chat's human mode): it runs in the sandbox, and the model
        reads what was run and its output, as a user message. Recorded as a step without a reply."""
        self._flush_notes()
        step = Step(index=self.turn, prompt_delta="", completion="", action={"tool": "bash", "body": command},
                    human={"typed": True})
        t0 = time.perf_counter()
        action = Action("bash", command)
        self.busy = "command"
        try:
            outcome = execute(action, self.sandbox)
        except KeyboardInterrupt:
            outcome = ToolResult(protocol.HUMAN["interrupted_command"])
            step.human["interrupted"] = "command"
        finally:
            self.busy = None
        command_s = time.perf_counter() - t0
        if outcome.command is not None:
            step.command_status, step.exit_code = outcome.command.status, outcome.command.exit_code
        step.observation = outcome.feedback
        output = protocol.truncate_result(protocol.OUTPUT_TEMPLATE.format(feedback=outcome.feedback),
                                          self.model.counter.count)
        self._append("user", protocol.human_message("typed", action=action, output=output))
        self._record(step, t0, 0.0, command_s)
        return step

    # -- saving and resuming ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue this episode in another process (chat's --resume)."""
        transcript = self.transcript
        return {"transcript": {"text": transcript.text if transcript else None,
                               "messages": transcript.messages if transcript else [],
                               "reasoning": self.reasoning},
                "turn": self.turn, "tokens_used": self.tokens_used, "counted": self._counted, "known": self._known,
                "pending_bound": self._pending_bound, "submission": self.submission, "summary": self.summary,
                "notes": list(self._notes)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()``: the same transcript, turn count, tokens and submission."""
        saved = state["transcript"]
        self.transcript = protocol.Transcript.restore(saved["text"], [tuple(m) for m in saved["messages"]],
                                                      reasoning=saved.get("reasoning", self.reasoning))
        self.turn, self.tokens_used = state["turn"], state["tokens_used"]
        self._counted, self._pending_bound = state["counted"], state["pending_bound"]
        self.submission, self.summary = state.get("submission"), state.get("summary")
        self._known = state.get("known", len(self.transcript.text))
        self._notes = list(state.get("notes", []))

    def _start(self, issue: str) -> None:
        count = self.model.counter.count
        system = protocol.system_prompt(tools=self.tools, reasoning=self.reasoning,
                                        session_timeout=self.sandbox.command_timeout,
                                        context_window=self.limits.context_window,
                                        max_turns=self.limits.max_turns)
        prompt = protocol.testgen_prompt if self.task == "test" else protocol.issue_prompt
        user = protocol.truncate_user_message(prompt(issue, repo_root=self.sandbox.repo_root), count)
        self.transcript = Transcript.start(system, user, reasoning=self.reasoning)
        # Length of the transcript text already in the trajectory: what lies beyond it is the next
        # step's prompt delta.
        self._known = 0
        # Token accounting as CWM's: the prompt, then each reply's generated tokens (its stop token
        # included), then each observation. `tokens_used` is exact for the transcript's first
        # `_counted` characters; the text after it (the latest observation) is settled at the next
        # request, from the prompt_tokens the server reports, so an observation costs one count
        # (its budget estimate) instead of two. `_pending_bound` bounds its tokens meanwhile.
        self.tokens_used = count(self.transcript.prompt)
        self._counted = len(self.transcript.prompt)
        self._pending_bound = 0

    def _step(self, turn: int) -> tuple[Step, str | None]:
        t0 = time.perf_counter()
        transcript = self.transcript
        prompt = transcript.prompt
        room = self.limits.context_window - self.tokens_used - self._pending_bound
        max_tokens = min(self.limits.turn_tokens, room)
        if max_tokens <= 0:
            raise _End(Exit.CONTEXT_LIMIT, f"{self.tokens_used} of {self.limits.context_window} tokens used")
        self.events.on_turn_start(turn, room)
        step = Step(index=turn, prompt_delta=prompt[self._known:], completion="")
        self._known = len(prompt)
        t_model = time.perf_counter()
        self.busy = "model"
        try:
            completion = self.model.complete(transcript, max_tokens=max_tokens, on_text=self.events.on_text)
        except KeyboardInterrupt:
            if not self.human:
                raise
            # Stopped mid-reply: the reply never happened (the transcript does not hold it, nor the
            # generation prompt that asked for it), so the steps' prompt deltas still add up to it.
            self.busy = None
            step.human = {"interrupted": "model"}
            step.prompt_delta = step.prompt_delta.removesuffix(transcript.prompt[len(transcript.text):])
            self._known = len(transcript.text)
            self._record(step, t0, time.perf_counter() - t_model, 0.0)
            self._interjection(step, "model")
            return step, None
        finally:
            self.busy = None
        self._settle(completion)
        room = self.limits.context_window - self.tokens_used  # exact now
        if self.imagination and turn < self.limits.max_turns:  # the last reply never runs: nothing to imagine
            # imagines the outcome; lookahead may swap in another sampled reply
            completion = self.imagination.choose(self, step, completion, max_tokens)
        model_s = time.perf_counter() - t_model
        step.completion, step.finish_reason, step.cut_off = completion.text, completion.finish_reason, completion.cut_off
        step.stop = completion.stop
        transcript.add_assistant(completion.text, completion.stop)
        reply = completion.text + (completion.stop or "")
        self._known += len(reply)
        self._counted += len(reply)
        produced = completion.completion_tokens
        if produced is None:
            produced = self.model.counter.count(reply)
        self.tokens_used += produced
        step.tokens = {"prompt": completion.prompt_tokens, "completion": produced}
        # CWM's order (swerl_tool.py `step`): the reply counts as a turn; over the context, or at the
        # turn limit, the episode fails BEFORE the reply's action runs, whatever it holds.
        if self.tokens_used > self.limits.context_window or (completion.cut_off and produced >= room):
            self._record(step, t0, model_s, 0.0)
            raise _End(Exit.CONTEXT_LIMIT, f"{self.tokens_used} of {self.limits.context_window} tokens used "
                                           "after the reply")
        if turn >= self.limits.max_turns:
            self._record(step, t0, model_s, 0.0)
            raise _End(Exit.TURN_LIMIT, f"reply {turn} of {self.limits.max_turns} reached the turn limit")

        summary, command_s = None, 0.0
        if self.submission is not None and protocol.is_final_summary(completion.text, reasoning=self.reasoning):
            summary = _after_think(completion.text)
        else:
            try:
                action = protocol.parse_action(completion.text, reasoning=self.reasoning, tools=self.tools)
            except ActionError as exc:
                step.format_error = exc.feedback
                self._append("user", exc.feedback)
            else:
                step.action = {"tool": action.tool, "body": action.body}
                self.events.on_action(step)
                decision = self.human.decide(step, action) if self.human else RUN
                if decision.verdict == "reject":
                    step.human = {"rejected": decision.message}
                    kind = "rejected_saying" if decision.message.strip() else "rejected"
                    self._append("user", protocol.human_message(kind, tool=action.tool, message=decision.message))
                else:
                    command_s = self._act(step, action, decision, turn)
        self._record(step, t0, model_s, command_s)
        if step.human and step.human.get("interrupted"):
            self._interjection(step, "command")
        self._flush_notes()
        return step, summary

    def _act(self, step: Step, action: Action, decision: Decision, turn: int) -> float:
        """Run the action (or the person's replacement) and give the model its result."""
        ran = decision.action if decision.verdict == "replace" and decision.action else action
        if ran is not action:
            step.human = {"replaced_with": {"tool": ran.tool, "body": ran.body}}
        t_cmd = time.perf_counter()
        self.busy = "command"
        try:
            if self.imagination:  # dream: the imagined feedback stands for the sandbox's
                outcome = self.imagination.execute(step, ran, self.sandbox)
            else:
                outcome = execute(ran, self.sandbox, task=self.task)
        except KeyboardInterrupt:
            if not self.human:
                raise
            outcome = ToolResult(protocol.HUMAN["interrupted_command"])
            step.human = {**(step.human or {}), "interrupted": "command"}
        finally:
            self.busy = None
        command_s = time.perf_counter() - t_cmd
        self._observe(step, action, outcome, turn, ran=None if ran is action else ran)
        if self.imagination:
            self.imagination.observed(step)
        return command_s

    def _interjection(self, step: Step, during: str) -> None:
        """After Ctrl-C stopped the model or a command: the person's message goes to the model."""
        message = self.human.interjection(step, during) if self.human else None
        if message is None:
            raise Stop()
        step.human = {**(step.human or {}), "message": message}
        if self.trajectory:
            self.trajectory.update(step)
        if message.strip():
            self.tell(message)

    def _observe(self, step: Step, action: Action, outcome: ToolResult, turn: int, *,
                 ran: Action | None = None) -> None:
        """The model reads the outcome as its tool's message with the budget; when the person ran
        ``ran`` instead of the model's call, as one user message that says so, then what ran's
        output and the budget, as a tool result would have them."""
        if outcome.command is not None:
            step.command_status, step.exit_code = outcome.command.status, outcome.command.exit_code
        if outcome.submitted_patch is not None:
            self.submission, step.submitted = outcome.submitted_patch, True
        count = self.model.counter.count
        head = "" if ran is None else protocol.human_message("edited", tool=action.tool, action=ran) + "\n\n"
        head_tokens = count(head) if head else 0
        message = protocol.budgeted_tool_result(outcome.feedback, remaining_turns=self.limits.max_turns - turn,
                                                context_window=self.limits.context_window,
                                                tokens_so_far=self.tokens_used + head_tokens, count=count,
                                                tool=(ran or action).tool)
        step.observation = outcome.feedback
        if ran is None:
            self._append(f"tool: {action.tool}", message.body, message.upper_bound)
        else:
            self._append("user", head + message.body, message.upper_bound + head_tokens + 8)

    def _append(self, role: str, body: str, bound: int | None = None) -> None:
        """Add a message after the latest reply. Its tokens are settled at the next request;
        until then they are bounded by `bound` (or counted, for a short user message)."""
        if role == "user":
            self.transcript.add_user(body)
        else:
            self.transcript.add_tool_result(role.removeprefix("tool: "), body)
        # New text: maybe a closing <|eot_id|>, the message, the next generation prompt.
        count = self.model.counter.count
        message = protocol.render_message(role, body)
        head, _, tail = self.transcript.prompt[self._counted:].partition(message)
        self._pending_bound = (sum(count(piece) for piece in (head, tail) if piece)
                               + (bound if bound is not None else count(message)))

    def _settle(self, completion: Completion) -> None:
        """Make `tokens_used` exact for the whole prompt: the server's prompt_tokens for CWM's text
        format (it tokenized exactly this text), else a count of the text added since."""
        prompt = self.transcript.prompt
        if completion.prompt_tokens is not None and self.model.format == "cwm":
            self.tokens_used = completion.prompt_tokens
        elif self._counted < len(prompt):
            self.tokens_used += self.model.counter.count(prompt[self._counted:])
        self._counted, self._pending_bound = len(prompt), 0

    def _settle_at_end(self) -> None:
        """An episode that ended after an observation (interrupted, a time limit, an error): count
        the dialog's text not yet counted (without the generation prompt no reply followed)."""
        if self.transcript is None or not self._pending_bound:  # the last thing was a reply: all counted
            return  # (an <|eot_id|> closing it belongs to a message that never came, as in CWM)
        try:
            self.tokens_used += self.model.counter.count(self.transcript.text[self._counted:])
        except (TokenizeError, ModelError):  # the server is gone: keep the bound
            self.tokens_used += self._pending_bound
        self._counted, self._pending_bound = len(self.transcript.text), 0

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
