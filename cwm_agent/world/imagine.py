"""Imagination: CWM predicts what a tool call will print, before (or instead of) running it.

CWM saw agent/environment transcripts in mid-training, so it can play the
environment as well as the agent (cwm-interface.md section 9). One prediction
is one plain completion:

    the real transcript up to the model's latest tool call (its reply and <|eot_id|>)
    + "<|start_header_id|>tool: NAME<|end_header_id|>\\n\\n<output>\\n"

sampled at low temperature (0.2) with its own token cap, stopped at
``</output>`` (or CWM's stop tokens). The text before ``\\n</output>`` is the
predicted feedback: the inverse of TOOL_RESULT_TEMPLATE. A prediction never
enters the real transcript.

Modes (``--imagine``):

- ``off``: nothing.
- ``log``: predict every observation, then run the command for real; the two
  are stored side by side in ``step.imagined`` with per-turn scores. The
  transcript, and so every later action request, is byte for byte the one of
  ``off``; only the extra requests differ.
- ``lookahead[:K]`` (K=3): the turn's reply is candidate 1; when it is a tool
  call, K-1 more replies are sampled from the same prompt (CWM's own sampling),
  each distinct action's observation is imagined, and the model picks one with
  the selection prompt below (the WebDreamer idea: simulate each candidate's
  outcome, then choose). Only the chosen reply enters the transcript and runs.
  ``step.imagined`` keeps every candidate, its imagined output and the choice.
- ``dream``: no sandbox at all; every observation is the prediction. A submit
  whose imagined feedback shows a patch counts as a (imagined) submission.

The selection prompt (SELECTION_TEMPLATE) is one ``user`` message after the real
transcript, in CWM's own vocabulary: each candidate is its tool call exactly as
the model wrote it, and its imagined output inside ``<predicted_output>``, then
a request to answer ``<choice>N</choice>``. The reply is generated like any
turn (reasoning mode: after "<think>\\n"), stopped at ``</choice>``, with its own
cap; the last ``<choice>N`` wins, else the last number 1..K in the answer, else
candidate 1 (recorded as the choice's ``source``). Candidates that are not tool
calls (format errors) are kept in the record but not offered; duplicates of an
earlier action are imagined once.

Scores (``score``), per turn, predicted feedback against the real one:

- ``exact``: equal once trailing newlines are dropped (the line before
  ``</output>`` is the one place where the format leaves room);
- ``line_similarity``: difflib's ratio over lines (1.0 for two empty outputs);
- ``first_line``: the first non-blank lines agree (ignoring trailing spaces);
- ``error_agreement``: both are judged by the same rule (``outcome_kind``: the
  session's timeout / restart notices, else an error pattern such as a
  traceback, "No such file or directory", "command not found", a pytest
  failure line) and agree on ok / error / timeout / terminated.

Token accounting: every imagination request's prompt and completion tokens (the
server's usage, else the model's counter) are summed per turn in
``step.imagined["tokens"]``; they never count against the episode's context.
"""

from __future__ import annotations

import difflib
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cwm_agent import protocol
from cwm_agent.config import ConfigError
from cwm_agent.models.client import Completion, ContextLengthExceeded, ModelError
from cwm_agent.protocol import Action, ActionError
from cwm_agent.sandbox.base import DEFAULT_COMMAND_TIMEOUT, DEFAULT_REPO_ROOT, CommandResult, SandboxError
from cwm_agent.tools import RESTART_FEEDBACK, ToolResult, execute

if TYPE_CHECKING:
    from cwm_agent.agent import Agent
    from cwm_agent.sandbox.base import Sandbox
    from cwm_agent.trajectory import Step

# --- the literals: all of them live here ----------------------------------------------

MODES = ("off", "log", "lookahead", "dream")
DEFAULT_CANDIDATES = 3
MAX_CANDIDATES = 8

PREDICTION_PREFILL = protocol.START_HEADER + "tool: {tool}" + protocol.END_HEADER + "\n\n<output>\n"
PREDICTION_STOP = "</output>"
PREDICTION_TEMPERATURE = 0.2
PREDICTION_TOP_P = 0.95
PREDICTION_MAX_TOKENS = 4096

SELECTION_TEMPLATE = (
    "Before you act, here are {count} candidate tool calls for your next step. None of them has been run: "
    "the output shown for each is a prediction of what the environment would return.\n"
    "\n"
    "{candidates}\n"
    "\n"
    "Which candidate makes the most progress towards resolving the issue? "
    "Answer with its number in the form <choice>N</choice>."
)
CANDIDATE_TEMPLATE = (
    "<candidate {index}>\n"
    "{action}\n"
    "<predicted_output>\n"
    "{prediction}\n"
    "</predicted_output>\n"
    "</candidate {index}>"
)
CHOICE_STOP = "</choice>"
CHOICE_TAG = re.compile(r"<choice>\s*(\d+)")
SELECTION_MAX_TOKENS = 4096
SELECTION_OUTPUT_TOKENS = 2048  # each imagined output is cut to this inside the selection prompt

# What the scores call an error (judged the same way on both texts).
ERROR_PATTERN = re.compile(
    "|".join(
        [
            r"Traceback \(most recent call last\)",
            r"^\s*[A-Z][A-Za-z]*(?:Error|Exception)\b",
            r"\b[A-Z][A-Za-z]*(?:Error|Exception): ",
            r"No such file or directory",
            r"command not found",
            r"Permission denied",
            r"^(?:fatal|error|ERROR|Error): ",
            r"^E {3}",
            r"^FAILED ",
            r"\b\d+ (?:failed|errors?)\b",
            r"^Failed to submit ",
            r"^No replacement was performed",
            r"^The path .* does not exist",
            r"already exists\. Cannot create",
            r"^File creation failed",
            r"^Failed to parse the edit tool call",
            r"^Only one search/replace block is allowed",
        ]
    ),
    re.MULTILINE,
)
SESSION_NOTICES = {RESTART_FEEDBACK["timeout"]: "timeout", RESTART_FEEDBACK["overflow"]: "terminated",
                   RESTART_FEEDBACK["died"]: "terminated"}
SIMILARITY_LINE_CAP = 4000  # lines per side fed to difflib (quadratic in the worst case)

KINDS = ("ls/cat/grep", "tests", "python", "git", "other", "edit/create/submit")
SCORE_KEYS = ("exact", "line_similarity", "first_line", "error_agreement")

_READERS = {"ls", "cat", "grep", "egrep", "fgrep", "rg", "head", "tail", "find", "tree", "wc", "nl", "less",
            "more", "sed", "awk", "file", "stat", "du", "pwd", "which", "diff", "sort", "uniq", "cut", "xxd"}
_TEST_RUNNERS = re.compile(r"(?:^|[\s/;&|(])(?:pytest|py\.test|tox|nox|nosetests|runtests(?:\.py)?|unittest)\b"
                           r"|\bmake\s+(?:test|check)\b|\bmanage\.py\s+test\b|\b(?:npm|yarn|cargo|go)\s+test\b")
_PREFIXES = {"sudo", "time", "timeout", "env", "nohup", "command", "exec", "xargs", "nice"}


class ImaginationError(ConfigError):
    """Imagination asked of a model or setting that cannot do it; the message says what to change."""


# --- the prompts ------------------------------------------------------------------------


def prediction_prompt(transcript_prompt: str, completion: str, tool: str, stop: str | None = protocol.EOT) -> str:
    """The prediction request's prompt: the transcript's prompt (ending in the generation prompt),
    the model's reply closed as the transcript will close it (its stop token, then <|eot_id|>
    unless that was it), then the tool message header and "<output>\\n"."""
    if stop == protocol.EOT:
        completion = completion.removesuffix(protocol.EOT)
    return transcript_prompt + protocol.closed_reply(completion, stop) + PREDICTION_PREFILL.format(tool=tool)


def predicted_feedback(text: str) -> str:
    """The feedback a prediction completion stands for: what comes before "\\n</output>"."""
    head, _, _ = text.partition(PREDICTION_STOP)
    return head[:-1] if head.endswith("\n") else head


def selection_message(candidates: Sequence[tuple[int, Action, str]]) -> str:
    """The selection prompt's user message: (number, action, imagined feedback) per candidate."""
    blocks = [CANDIDATE_TEMPLATE.format(index=i, action=protocol.render_action(a), prediction=p)
              for i, a, p in candidates]
    return SELECTION_TEMPLATE.format(count=len(candidates), candidates="\n\n".join(blocks))


def selection_prompt(transcript_text: str, message: str, *, reasoning: bool = True) -> str:
    return transcript_text + protocol.render_message("user", message) + protocol.generation_prompt(reasoning)


def parse_choice(reply: str, count: int) -> tuple[int, str]:
    """(1-based candidate number, how it was read: "tag" | "number" | "default")."""
    answer = reply.removesuffix(protocol.EOT).split(protocol.THINK_END)[-1]
    tags = [int(n) for n in CHOICE_TAG.findall(answer) if 1 <= int(n) <= count]
    if tags:
        return tags[-1], "tag"
    numbers = [int(n) for n in re.findall(r"\b(\d+)\b", answer) if 1 <= int(n) <= count]
    if numbers:
        return numbers[-1], "number"
    return 1, "default"


# --- scores and kinds ---------------------------------------------------------------------


def outcome_kind(text: str | None) -> str:
    """ok | error | timeout | terminated, by the same rule for predicted and real feedback."""
    if text is None:
        return "ok"
    notice = SESSION_NOTICES.get(text.strip())
    if notice:
        return notice
    return "error" if ERROR_PATTERN.search(text) else "ok"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.rstrip()
    return ""


def line_similarity(a: str, b: str) -> float:
    left, right = a.splitlines()[:SIMILARITY_LINE_CAP], b.splitlines()[:SIMILARITY_LINE_CAP]
    if not left and not right:
        return 1.0
    return difflib.SequenceMatcher(None, left, right, autojunk=False).ratio()


def score(predicted: str, actual: str) -> dict[str, Any]:
    """The per-turn scores of a predicted feedback against the real one (see the module doc)."""
    predicted_kind, actual_kind = outcome_kind(predicted), outcome_kind(actual)
    return {
        "exact": predicted.rstrip("\n") == actual.rstrip("\n"),
        "line_similarity": round(line_similarity(predicted, actual), 4),
        "first_line": _first_line(predicted) == _first_line(actual),
        "error_agreement": predicted_kind == actual_kind,
        "predicted_kind": predicted_kind,
        "actual_kind": actual_kind,
    }


def _words(segment: str) -> list[str]:
    words = segment.strip().split()
    while words and ("=" in words[0] and not words[0].startswith("=") or words[0] in _PREFIXES
                     or words[0].startswith("-") or words[0].replace(".", "").isdigit()):
        words.pop(0)  # VAR=1, sudo, timeout 30, env -i ...
    return words


def command_kind(tool: str, body: str) -> str:
    """ls/cat/grep | tests | python | git | other for bash; edit/create/submit for the other tools.

    Any segment that runs a test runner makes it "tests"; otherwise the first
    command after cd's decides (``python -m pytest`` is tests, ``python -c`` python).
    """
    if tool != "bash":
        return "edit/create/submit"
    if _TEST_RUNNERS.search(body):
        return "tests"
    for segment in re.split(r"&&|\|\||[;|\n()]", body):
        words = _words(segment)
        if not words or words[0] in ("cd", "pushd", "popd", "set", "export", "source", ".", "echo", "{", "}"):
            continue
        name = words[0].rsplit("/", 1)[-1]
        if name in _READERS and not (name == "sed" and any(w.startswith("-i") for w in words[1:])):
            return "ls/cat/grep"
        if re.fullmatch(r"python[\d.]*", name):
            return "python"
        if name == "git":
            return "git"
        return "other"
    return "other"


# --- aggregation ----------------------------------------------------------------------------


def turn_records(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per turn that imagined something: kind, scores (None when nothing real to compare), tokens."""
    records = []
    for step in steps:
        imagined = step.get("imagined") or {}
        if not imagined.get("mode"):
            continue
        records.append({"kind": imagined.get("kind"), "scores": imagined.get("scores"),
                        "tokens": imagined.get("tokens") or {}, "mode": imagined["mode"]})
    return records


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean scores over the scored records (turns), and imagination tokens per turn."""
    scored = [r["scores"] for r in records if r.get("scores")]
    out: dict[str, Any] = {"turns": len(records), "scored": len(scored)}
    for key in SCORE_KEYS:
        out[key] = round(statistics.fmean(float(s[key]) for s in scored), 4) if scored else None
    for key in ("prompt", "completion"):
        values = [r["tokens"].get(key) or 0 for r in records]
        out[f"{key}_tokens_per_turn"] = round(statistics.fmean(values), 1) if values else 0.0
    return out


def summarize_by_kind(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record.get("kind") or "other"].append(record)
    return {kind: summarize(groups[kind]) for kind in KINDS if kind in groups}


def merge(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summaries of several episodes as one (scores weighted by scored turns, tokens by turns)."""
    out: dict[str, Any] = {"turns": sum(s.get("turns", 0) for s in summaries),
                           "scored": sum(s.get("scored", 0) for s in summaries)}
    for key in SCORE_KEYS:
        weighted = [(s[key], s["scored"]) for s in summaries if s.get(key) is not None and s.get("scored")]
        total = sum(w for _, w in weighted)
        out[key] = round(sum(v * w for v, w in weighted) / total, 4) if total else None
    for key in ("prompt_tokens_per_turn", "completion_tokens_per_turn"):
        total = sum(s.get("turns", 0) for s in summaries)
        out[key] = round(sum(s.get(key, 0) * s.get("turns", 0) for s in summaries) / total, 1) if total else 0.0
    return out


def trajectory_files(paths: Iterable[Path]) -> list[Path]:
    """trajectory.json files named, or found under the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob("trajectory.json"))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist; pass trajectory.json files or folders holding them")
    return found


def report(paths: Iterable[Path]) -> dict[str, Any]:
    """`cwm-agent imagine-report`: accuracy by command kind over the given trajectories."""
    from cwm_agent import trajectory as traj_mod

    records: list[dict[str, Any]] = []
    files = trajectory_files(paths)
    used = 0
    for file in files:
        data = traj_mod.load(file)
        found = turn_records(data.get("steps", []))
        used += bool(found)
        records += found
    return {"trajectories": len(files), "with_imagination": used, "overall": summarize(records),
            "by_kind": summarize_by_kind(records)}


# --- the mode, as given on the command line ----------------------------------------------


@dataclass(frozen=True)
class ImagineSpec:
    mode: str = "off"
    candidates: int = DEFAULT_CANDIDATES
    max_tokens: int = PREDICTION_MAX_TOKENS
    temperature: float = PREDICTION_TEMPERATURE

    @classmethod
    def parse(cls, text: str | None, *, max_tokens: int | None = None) -> ImagineSpec:
        """"off" | "log" | "dream" | "lookahead" | "lookahead:K" (also "lookahead=K", "lookahead K")."""
        raw = (text or "off").strip().lower()
        match = re.fullmatch(r"(off|log|dream|lookahead)(?:\s*[:= ]\s*(\d+))?", raw)
        if not match or (match.group(2) and match.group(1) != "lookahead"):
            raise ImaginationError(f"--imagine must be off, log, lookahead[:K] or dream, not {text!r}")
        k = int(match.group(2) or DEFAULT_CANDIDATES)
        if not 2 <= k <= MAX_CANDIDATES:
            raise ImaginationError(f"lookahead needs 2 to {MAX_CANDIDATES} candidates, not {k}; "
                                   "e.g. --imagine lookahead:3")
        if max_tokens is not None and max_tokens < 1:
            raise ImaginationError("--imagine-tokens must be at least 1")
        return cls(match.group(1), k, max_tokens or PREDICTION_MAX_TOKENS)

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def dream(self) -> bool:
        return self.mode == "dream"

    def describe(self) -> dict[str, Any]:
        """What the trajectory header records."""
        out: dict[str, Any] = {"mode": self.mode, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.mode == "lookahead":
            out["candidates"] = self.candidates
        if self.dream:
            out["note"] = "no sandbox: every observation in this trajectory was imagined by the model"
        return out


# --- the sandbox of a dream -------------------------------------------------------------------


class DreamSandbox:
    """Stands where the sandbox would in a dream: it has a repo root and runs nothing."""

    base_commit = None  # nothing was copied, so there is no commit
    image = None

    def __init__(self, repo_root: str = DEFAULT_REPO_ROOT, command_timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.repo_root, self.command_timeout = repo_root, command_timeout

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        raise SandboxError("dream mode has no sandbox: nothing can run (use --imagine log to run commands)")

    def diff(self, *, exclude: Sequence[str] = ()) -> str:
        raise SandboxError("dream mode has no sandbox, so there is no working tree to diff")

    def close(self) -> None:
        pass

    def __enter__(self) -> DreamSandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_SUBMISSION = re.compile(re.escape(protocol.FEEDBACK["submit_success"].split("{patch}")[0]) + r"(.*?)\n</submission>",
                         re.DOTALL)


def imagined_submission(feedback: str) -> str | None:
    """The patch an imagined submit feedback shows (the feedback is raw: the patch keeps its last
    newline; one is added when the imagined patch lacks it, as git needs it)."""
    match = _SUBMISSION.match(feedback)
    if not match or not match.group(1).startswith("diff"):
        return None
    patch = match.group(1)
    return patch if patch.endswith("\n") else patch + "\n"


# --- the agent's hook -----------------------------------------------------------------------


@dataclass
class _Tally:
    prompt: int = 0
    completion: int = 0
    requests: int = 0
    seconds: float = 0.0

    def add(self, completion: Completion, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt += prompt_tokens
        self.completion += completion_tokens
        self.requests += 1
        self.seconds += completion.seconds

    def as_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "requests": self.requests}


@dataclass
class _Turn:
    """What one turn imagined, until it goes into step.imagined."""

    tally: _Tally = field(default_factory=_Tally)
    action: Action | None = None
    prediction: dict[str, Any] | None = None


class Imagination:
    """The agent's imagination hook (Agent(imagination=...)); one per episode.

    ``choose`` runs after the turn's reply and before it enters the transcript
    (lookahead may replace it; log and dream imagine its outcome), ``execute``
    stands for tools.execute (dream returns the imagined feedback), ``observed``
    scores the prediction once the real observation is in the step.
    """

    def __init__(self, model: Any, spec: ImagineSpec) -> None:
        if getattr(model, "format", None) != "cwm" or not hasattr(model, "complete_text"):
            raise ImaginationError(
                f"--imagine {spec.mode} needs CWM served over /v1/completions (a model in cwm format), but "
                f"{getattr(model, 'name', 'the model')} speaks the chat format: imagination prefills a tool "
                "message, which a chat endpoint cannot do. Pass --base-url of a vLLM serving CWM (and --format cwm "
                "if its id lacks 'cwm'), or use --imagine off."
            )
        if not spec.on:
            raise ValueError("Imagination needs a mode other than off")
        self.model, self.spec = model, spec
        self.records: list[dict[str, Any]] = []
        self._turn = _Turn()

    # -- model calls -----------------------------------------------------------------------
    def _count(self, completion: Completion, prompt: str) -> tuple[int, int]:
        count = self.model.counter.count
        return (completion.prompt_tokens if completion.prompt_tokens is not None else count(prompt),
                completion.completion_tokens if completion.completion_tokens is not None else count(completion.text))

    def _request(self, prompt: str, **kw: Any) -> Completion:
        return self._tallied(self.model.complete_text(prompt, **kw), prompt)

    def _tallied(self, completion: Completion, prompt: str) -> Completion:
        self._turn.tally.add(completion, *self._count(completion, prompt))
        return completion

    def predict(self, prompt: str, room: int | None = None) -> dict[str, Any]:
        """Imagine one observation; ``prompt`` from prediction_prompt. Never raises in log/lookahead."""
        max_tokens = self.spec.max_tokens if room is None else min(self.spec.max_tokens, room)
        if max_tokens <= 0:
            return {"prediction": None, "error": "no room left in the context window for a prediction",
                    "error_kind": "context_length"}
        try:
            completion = self._request(prompt, max_tokens=max_tokens, temperature=self.spec.temperature,
                                       top_p=PREDICTION_TOP_P, stop=[PREDICTION_STOP])
        except ModelError as exc:
            if self.spec.dream and not isinstance(exc, ContextLengthExceeded):
                raise  # in a dream the model is the environment: its failure is the episode's
            return {"prediction": None, "error": f"{exc.kind}: {exc}", "error_kind": exc.kind}
        return {"prediction": predicted_feedback(completion.text), "finish_reason": completion.finish_reason,
                "cut_off": completion.cut_off}

    # -- the hooks -------------------------------------------------------------------------
    def choose(self, agent: Agent, step: Step, completion: Completion, max_tokens: int) -> Completion:
        self._turn = _Turn()
        started = time.perf_counter()
        action = self._action_of(agent, completion.text)
        if action is not None:
            if self.spec.mode == "lookahead":
                completion, action = self._lookahead(agent, step, completion, action, max_tokens)
            else:
                self._turn.prediction = self.predict(*self._prediction_args(agent, completion, action))
            self._turn.action = action
        if action is not None or self.spec.dream:
            step.imagined = {"mode": self.spec.mode, **(step.imagined or {})}
            if action is not None:
                step.imagined.update(tool=action.tool, kind=command_kind(action.tool, action.body),
                                     **(self._turn.prediction or {}))
            step.imagined["tokens"] = self._turn.tally.as_dict()
            step.imagined["seconds"] = round(time.perf_counter() - started, 3)
        return completion

    def execute(self, step: Step, action: Action, sandbox: Sandbox) -> ToolResult:
        if not self.spec.dream:
            return execute(action, sandbox)
        imagined = self._turn.prediction or {}
        prediction = imagined.get("prediction")
        if prediction is None or self._turn.action != action:
            why = f"dream mode could not imagine this observation: {imagined.get('error', 'no prediction')}"
            if imagined.get("error_kind") == "context_length":  # the dream filled the context window
                raise ContextLengthExceeded(why)
            raise SandboxError(why)
        patch = imagined_submission(prediction) if action.tool == "submit" else None
        return ToolResult(prediction, submitted_patch=patch)

    def observed(self, step: Step) -> None:
        imagined = step.imagined
        if not imagined:
            return
        if not self.spec.dream and imagined.get("prediction") is not None and step.observation is not None:
            imagined["scores"] = score(imagined["prediction"], step.observation)
        self.records.append({"kind": imagined.get("kind"), "scores": imagined.get("scores"),
                             "tokens": imagined.get("tokens") or {}, "mode": self.spec.mode})

    def summary(self) -> dict[str, Any]:
        return {"mode": self.spec.mode, **summarize(self.records), "by_kind": summarize_by_kind(self.records)}

    # -- helpers -----------------------------------------------------------------------------
    def _action_of(self, agent: Agent, text: str) -> Action | None:
        """The action the agent will run for this reply, by the agent's own rules (None: none runs)."""
        if agent.submission is not None and protocol.is_final_summary(text, reasoning=agent.reasoning):
            return None
        try:
            return protocol.parse_action(text, reasoning=agent.reasoning, tools=agent.tools)
        except ActionError:
            return None

    def _prediction_args(self, agent: Agent, reply: Completion, action: Action) -> tuple[str, int]:
        prompt = prediction_prompt(agent.transcript.prompt, reply.text, action.tool, reply.stop)
        count = agent.model.counter.count
        used = agent.tokens_used + count(prompt[len(agent.transcript.prompt):])
        return prompt, agent.limits.context_window - used

    def _lookahead(self, agent: Agent, step: Step, first: Completion, action: Action,
                   max_tokens: int) -> tuple[Completion, Action]:
        replies: list[Completion] = [first]
        for _ in range(self.spec.candidates - 1):
            try:
                # A candidate for the turn itself: sampled exactly as the agent samples a turn.
                extra = self._tallied(agent.model.complete(agent.transcript, max_tokens=max_tokens),
                                      agent.transcript.prompt)
            except ModelError as exc:
                step.imagined = {"candidate_error": f"{exc.kind}: {exc}"}
                break
            replies.append(extra)
        candidates: list[dict[str, Any]] = []
        seen: dict[Action, int] = {}
        offered: list[tuple[int, Action, str]] = []
        for number, reply in enumerate(replies, 1):
            entry: dict[str, Any] = {"index": number, "completion": reply.text, "finish_reason": reply.finish_reason}
            act = action if number == 1 else self._action_of(agent, reply.text)
            if act is None:
                try:
                    protocol.parse_action(reply.text, reasoning=agent.reasoning, tools=agent.tools)
                    entry["error"] = "not a tool call"
                except ActionError as exc:
                    entry["error"] = exc.feedback
            elif reply.cut_off:
                act, entry["error"] = None, "cut off"
            else:
                entry["action"] = {"tool": act.tool, "body": act.body}
                entry["kind"] = command_kind(act.tool, act.body)
                if act in seen:
                    entry["duplicate_of"] = seen[act]
                    entry.update({k: v for k, v in candidates[seen[act] - 1].items()
                                  if k in ("prediction", "cut_off")})
                else:
                    seen[act] = number
                    prediction = self.predict(*self._prediction_args(agent, reply, act))
                    entry["prediction"] = prediction.get("prediction")
                    entry["finish_reason_prediction"] = prediction.get("finish_reason")
                    entry["cut_off"] = prediction.get("cut_off", False)
                    if prediction.get("error"):
                        entry["prediction_error"] = prediction["error"]
                    offered.append((number, act, entry["prediction"] or ""))
            candidates.append(entry)
        chosen, choice = self._select(agent, offered, max_tokens)
        reply = replies[chosen - 1]
        step.imagined = {**(step.imagined or {}), "candidates": candidates, "choice": choice}
        picked = candidates[chosen - 1]
        self._turn.prediction = {"prediction": picked.get("prediction"), "cut_off": picked.get("cut_off", False),
                                 "chosen": chosen}
        return reply, protocol.parse_action(reply.text, reasoning=agent.reasoning, tools=agent.tools)

    def _select(self, agent: Agent, offered: list[tuple[int, Action, str]], max_tokens: int) -> tuple[int, dict]:
        if len(offered) < 2:
            return 1, {"index": 1, "source": "only candidate" if offered else "default"}
        count = agent.model.counter.count
        numbered = [(i + 1, act, protocol.truncate_result(pred, count, SELECTION_OUTPUT_TOKENS))
                    for i, (_, act, pred) in enumerate(offered)]
        prompt = selection_prompt(agent.transcript.text, selection_message(numbered), reasoning=agent.reasoning)
        room = agent.limits.context_window - agent.tokens_used - count(prompt[len(agent.transcript.text):])
        cap = min(SELECTION_MAX_TOKENS, room, max_tokens)
        if cap <= 0:
            return 1, {"index": 1, "source": "default", "error": "no room left in the context window to choose"}
        try:
            reply = self._request(prompt, max_tokens=cap, temperature=self.model.temperature,
                                  top_p=self.model.top_p, stop=[CHOICE_STOP])
        except ModelError as exc:
            return 1, {"index": 1, "source": "default", "error": f"{exc.kind}: {exc}"}
        number, source = parse_choice(reply.text, len(offered))
        return offered[number - 1][0], {"index": offered[number - 1][0], "offered_as": number, "source": source,
                                        "offered": [n for n, _, _ in offered], "reply": reply.text}


def build(model: Any, spec: ImagineSpec) -> Imagination | None:
    """The hook for a spec (None for off); raises ImaginationError for a chat-format model."""
    return Imagination(model, spec) if spec.on else None
