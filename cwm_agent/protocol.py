"""CWM's interface, to the byte: templates, message framing, the action parser, truncation.

Everything the model reads or writes passes through here. The module is pure: no
I/O, no imports from the rest of cwm-agent. Every literal the model was trained on
lives in the data block below (``TOOL_BLOCKS``, the ``*_TEMPLATE`` strings and
``FEEDBACK``); the functions only fill them in. The source of truth is
shared/cwm-interface.md (from facebookresearch/cwm at 7930e02), and
tests/test_protocol.py holds golden copies of it.

Decisions worth knowing:

* Parse checks run in the trained scaffold's order: thinking end token (reasoning
  mode), then several calls, then tag-count mismatch, then no call, then empty
  body, then unknown tool. The tag-count rule: with ``m`` regex matches, ``o``
  occurrences of ``"<tool:"`` and ``c`` of ``"</tool>"`` in the text after
  ``</think>``, the reply is rejected unless ``m == o == c`` (``m > 1`` is reported
  as "several" first). So a stray or unclosed tag is never silently ignored.
* Round trip: ``parse_action(render_action(a))`` returns ``a`` exactly when the tool
  is allowed, its name matches ``[a-zA-Z_]+``, ``a.body.strip()`` is not empty and
  the body contains neither ``"<tool:"`` nor ``"</tool>"`` (nor ``"</think>"`` in
  reasoning mode). Any other body is rejected with a "several" or "tag mismatch"
  FormatError (or the thinking-token one), never parsed into a different action.
* Non-reasoning mode replaces only the first paragraph of the system prompt with
  "You are a helpful AI assistant."; the environment and tool specs stay, as in
  CWM's ``get_cwm_sys_prompt(think=False, environment=...)``.
* A tool result over its cap is cut as CWM's ``maybe_truncate_message`` did: the
  whole message (``<output>`` block and budget) is cut on the right, so the budget
  is lost, and "Remaining tokens" is computed as if the message took the full cap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

# --- tokens and limits -----------------------------------------------------------------

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOM = "<|eom_id|>"
EOT = "<|eot_id|>"
STOP_TOKEN_IDS = (128001, 128008, 128009)
STOP_TEXTS = (EOT, EOM, END_OF_TEXT)
STOP_TOKENS = {128001: END_OF_TEXT, 128008: EOM, 128009: EOT}  # STOP_TOKEN_IDS by their texts
THINK_PREFIX = "<think>\n"
THINK_END = "</think>"
TRUNCATION_MARKER = "[...]"

ALL_TOOLS = ("bash", "edit", "create", "submit")
BASH_ONLY_TOOLS = ("bash", "submit")

ISSUE_TOKEN_LIMIT = 8192
RESULT_TOKEN_LIMIT = 32768
CONTEXT_WINDOW = 131072
MAX_TURNS = 128
TURN_TOKEN_LIMIT = 65536
SESSION_TIMEOUT_SECONDS = 120
# Sampling of every published CWM evaluation (temperature, top_p).
TEMPERATURE = 1.0
TOP_P = 0.95

# Roles whose body is stripped when rendered; "tool: X" bodies are kept verbatim.
STRIPPED_ROLES = ("system", "user", "assistant")

# The parser of cwm/rl/swerl/default_tools.py, applied to the text after </think>.
TOOL_CALL_REGEX = r"<tool:\s([a-zA-Z_]+)>\n(.*?)\n</tool>"
TOOL_CALL = re.compile(TOOL_CALL_REGEX, re.DOTALL)
OPENING_TAG = "<tool:"
CLOSING_TAG = "</tool>"

# --- templates (data) ------------------------------------------------------------------

ACTION_TEMPLATE = "<tool: {tool}>\n{body}\n</tool>"

MESSAGE_TEMPLATE = START_HEADER + "{role}" + END_HEADER + "\n\n{body}" + EOT

SYSTEM_INTRO_REASONING = (
    "You are a helpful AI assistant. You always reason before responding, using the following format:\n"
    "\n"
    "<think>\n"
    "your internal reasoning\n"
    "</think>\n"
    "your external response"
)
SYSTEM_INTRO_PLAIN = "You are a helpful AI assistant."

ENVIRONMENT_TEMPLATE = (
    "# Environment\n"
    "\n"
    "You are working in a linux container. The container session is persistent but will restart when "
    "encountering errors or after a {session_timeout} session timeout in each turn. You are also constrained "
    "by a {context_window} total context window limit. You can interact with the container through the "
    "following tool interface for at most {max_turns} turns. Here are the specifications:\n"
    "\n"
    "{tool_blocks}\n"
    "\n"
    "REQUIREMENTS:\n"
    "* You cannot invoke more than one tool in each step.\n"
    "* You must invoke exactly one tool in each step before any <tool: submit> call.\n"
    "* After successful submission, provide a final response if the request is resolved, otherwise continue "
    "iterating. You cannot provide a final response before invoking <tool: submit>."
)
SESSION_TIMEOUT_TEMPLATE = "{seconds}-second"

# One block per tool, in the order they appear in the system prompt; joined by a blank line.
TOOL_BLOCKS = {
    "bash": (
        "<tool: bash>\n"
        "[command(s)]\n"
        "</tool>\n"
        "Executes bash command(s) [command(s)] in the current session. [command(s)] can be any "
        "non-interactive bash command(s), either single or multi-line."
    ),
    "edit": (
        "<tool: edit>\n"
        "[path]\n"
        "<<<<<<< SEARCH\n"
        "[search_lines]\n"
        "=======\n"
        "[replacement_lines]\n"
        ">>>>>>> REPLACE\n"
        "</tool>\n"
        "Replaces [search_lines] from [path] with [replacement_lines], where [path] must exist and "
        "[search_lines] must uniquely and exactly match one or more consecutive lines from the original "
        "file, including indentations and whitespaces."
    ),
    "create": (
        "<tool: create>\n"
        "[path]\n"
        "[content]\n"
        "</tool>\n"
        "Creates a new file at [path] with [content], where [path] must not exist, but its parent "
        "directory must exist."
    ),
    "submit": (
        "<tool: submit>\n"
        "[result]\n"
        "</tool>\n"
        "Marks [result] as your final submission. The meaning and format of [result] depends on the "
        "specific user request."
    ),
}

ISSUE_TEMPLATE = (
    "Solve the following issue by implementing the necessary code changes and submitting a patch file:\n"
    "\n"
    "<issue_description>\n"
    "{issue}\n"
    "</issue_description>\n"
    "\n"
    "The [result] argument of <tool: submit> should be the path to a patch file that resolves the issue. "
    "This file must be accessible from the current working directory and should contain the end-to-end "
    "code changes in git diff format. You can refine and submit your patch multiple times as needed to "
    "ensure correctness.\n"
    "\n"
    "Once you've submitted at least once and are confident in your solution, provide a final response "
    "summarizing your work using the following markdown template as a guide. Feel free to adjust the "
    "sections as necessary to fit the specific issue and solution:\n"
    "\n"
    "```markdown\n"
    "## Issue Summary\n"
    "\n"
    "Brief description of the issue (bug/feature/enhancement), affected component, and expected outcome.\n"
    "\n"
    "## Investigation and Reproduction\n"
    "\n"
    "Steps taken to understand and reproduce the issue: commands executed, test cases run, error "
    "messages, debugging approach, and root cause analysis. For features, describe requirement analysis "
    "and codebase exploration.\n"
    "\n"
    "## Solution and Code Changes\n"
    "\n"
    "High-level approach and rationale for the chosen solution. Specific modifications by file/component, "
    "including new functions, classes, or architectural decisions. Explain how changes work together if "
    "multiple files are involved.\n"
    "\n"
    "## Testing and Verification\n"
    "\n"
    "Description of how you ensure the patch fully resolves the issue, including new tests added (or test "
    "changes made) to verify correctness, how you ran existing tests to prevent regressions, and how "
    "comprehensive your testing process is (e.g., what edge cases you covered, how you validated "
    "correctness across different scenarios).\n"
    "```\n"
    "\n"
    "Your primary objective is to ensure patch correctness above all else - thoroughly explore the "
    "codebase, think hard, and leverage significant execution to verify correctness by writing "
    "comprehensive tests to validate your solution and running existing tests to prevent regressions. "
    "Only submit when you are genuinely confident in your patch's correctness.\n"
    "\n"
    "I've uploaded the corresponding code repository at {repo_root} and installed all the necessary "
    "dependencies. Now, the bash session has started, with the current working directory set to the "
    "repo root."
)

# CWM's test-generation task (cwm/rl/envs/envs/swerl_testgen_tool.py, USER_TESTGEN and
# SUBMISSION_FEEDBACK_PROMPT): the same system prompt and tools, this first user message, and a
# submit that takes any readable file (its `submit_file`, no diff check) and shows it back.
TESTGEN_TEMPLATE = (
    'Here is a GitHub issue and you are tasked to generate a test (`test_issue.py`) that can be used to reproduce and verify the fix for the issue:\n'
    '\n'
    '<issue_description>\n'
    '{issue}\n'
    '</issue_description>\n'
    '\n'
    'This test file should be completely self-contained and executable directly with `python test_issue.py`, without requiring any testing frameworks like pytest or unittest.\n'
    '\n'
    'IMPORTANT GUIDELINES:\n'
    '\n'
    'Create a standalone Python script (test_issue.py) that:\n'
    '   - Imports only the necessary modules from the repository\n'
    '   - Sets up the minimum environment needed to reproduce the issue\n'
    '   - Contains all logic within the script itself (no external test dependencies)\n'
    '   - Runs quickly and terminates itself (no background servers or long-running processes)\n'
    '\n'
    'CRITICAL: For each of the test cases: your test script MUST use these EXACT print statements to indicate test results for each test case:\n'
    '   - Print "Issue reproduced" when the code confirms the bug exists\n'
    '   - Print "Issue resolved" when the code runs without the issue\n'
    '   - Print "Other issues" if there are any unexpected problems\n'
    '\n'
    'Example format for the test script:\n'
    '\n'
    '```python\n'
    'from sqlfluff import lint\n'
    '\n'
    'def test__rules__std_L060_raised() -> None:\n'
    '    try:\n'
    '        sql = "SELECT   IFNULL(NULL, 100),\n'
    '            NVL(NULL,100);"\n'
    '        result = lint(sql, rules=["L060"])\n'
    '        assert len(result) == 2\n'
    '    except:\n'
    '        print("Other issues")\n'
    '        return\n'
    '\n'
    '    try:\n'
    '        assert result[0]["description"] == "Use \'COALESCE\' instead of \'IFNULL\'."\n'
    '        assert result[1]["description"] == "Use \'COALESCE\' instead of \'NVL\'."\n'
    '        print("Issue resolved")\n'
    '    except AssertionError:\n'
    '        print("Issue reproduced")\n'
    '        return\n'
    '\n'
    '    return\n'
    '\n'
    'test__rules__std_L060_raised()\n'
    '```\n'
    '\n'
    'The [result] argument of <tool: submit> should be the path to the generated test file (`test_issue.py`), like this:\n'
    '\n'
    '<tool: submit>\n'
    'test_issue.py\n'
    '</tool>\n'
    '\n'
    "Your final response should be a summary of how the test works. I've uploaded the corresponding code repository at {repo_root} and installed all the necessary dependencies. Now, the bash session has started, with the current working directory set to the repo root."
)
TEST_VERDICTS = ("Issue reproduced", "Issue resolved", "Other issues")


# A tool result's body: the feedback in <output>, a blank line, the budget (swerl_tool.py
# FEEDBACK_OUTPUT_PROMPT and BUDGET_NOTICE_TEMPLATE). CWM estimates the message's size with the
# budget template's placeholders left unformatted, so both parts are kept apart.
OUTPUT_TEMPLATE = "<output>\n{feedback}\n</output>"
BUDGET_TEMPLATE = (
    "<budget>\n"
    "* Remaining turns: {remaining_turns}\n"
    "* Remaining tokens: {remaining_tokens}\n"
    "</budget>"
)
TOOL_RESULT_TEMPLATE = OUTPUT_TEMPLATE + "\n\n" + BUDGET_TEMPLATE

# Every feedback string the model sees, keyed by name; placeholders in braces.
# The parser's errors go back as a user message; the rest sit inside <output>.
FEEDBACK = {
    # parse_action
    "no_call": "FormatError: No tool calls found",
    "multiple": (
        "FormatError: Expected one tool call, but found {count}: {tools}. "
        "Ensure only one <tool:...></tool> block is present in the response."
    ),
    "tag_mismatch": (
        "FormatError: Mismatch in tool tag counts: found {calls} tool calls via regex, "
        "but counted {opening} opening tags and {closing} closing tags."
    ),
    "empty": (
        "FormatError: Tool '{tool}' requires non-empty arguments, but received empty or "
        "whitespace-only input."
    ),
    "no_such_tool": "NoSuchToolError: Tool '{tool}' not found.",
    "think": "FormatError: Expected exactly one thinking end token, got {count}",
    # edit (sandbox/edit.py prints these)
    "edit_success": (
        "File {path} has been successfully updated at line {line} and now contains {num_lines} lines. "
        "The surrounding lines after the edit are shown below:\n{snippet}\n"
        "Review the changes and make sure they are as expected."
    ),
    "edit_snippet_line": "{number:6}\t{line}",
    "edit_parse_error": (
        "Failed to parse the edit tool call. Make sure it has the following format:\n"
        "\n"
        "<tool: edit>\n"
        "[path]\n"
        "<<<<<<< SEARCH\n"
        "[search_lines]\n"
        "=======\n"
        "[replacement_lines]\n"
        ">>>>>>> REPLACE\n"
        "</tool>"
    ),
    "edit_multiple_blocks": "Only one search/replace block is allowed. Got: {count}.",
    "edit_no_path": "The path {path} does not exist. Please provide a valid path.",
    "edit_not_found": "No replacement was performed, the search lines did not appear verbatim in {path}.",
    "edit_indentation_hint": (
        " The search lines must exactly match one or more consecutive lines from the file, "
        "with indentations preserved."
    ),
    "edit_multiple_matches": (
        "No replacement was performed. Multiple occurrences of the search text in lines {linenums} of "
        "{path}. Please ensure it is unique."
    ),
    # create (sandbox/create.py prints these)
    "create_success": "File created successfully at: {path} ({num_lines} lines).",
    "create_exists": "{path} already exists. Cannot create a new file at an existing path.",
    "create_empty_path": "Path is empty. Please provide a valid path.",
    "create_no_parent": "File creation failed. The parent directory {parent_dir} does not exist.",
    # submit
    "submit_success": (
        "The following patch content is marked as your final submission:\n"
        "\n"
        "<submission>\n"
        "{patch}\n"
        "</submission>\n"
        "\n"
        "Review the patch content and ensure it correctly resolves the issue. If necessary, you can "
        "continue refining the patch and submit an updated version."
    ),
    "submit_unreadable": "Failed to submit {path}. Make sure it exists and is readable.",
    "submit_empty": "Failed to submit {path}. It is an empty file.",
    "submit_not_diff": "Failed to submit {path}. It is not a valid diff file.",
    # submit, in a test-generation episode (TESTGEN_TEMPLATE)
    "testgen_submit_success": (
        "Review the following test which is marked as a submission:\n"
        "\n"
        "<submission>\n"
        "{test}\n"
        "</submission>"
    ),
    # the bash session, after it was killed and restarted
    "session_timeout": (
        "The current session has terminated due to timeout. "
        "A fresh session has started with the current working directory reset to default."
    ),
    "session_output_limit": (
        "The current session has terminated because your previous command produced too much output. "
        "A fresh session has started with the current working directory reset to default."
    ),
    "session_died": (
        "The current session has terminated unexpectedly. "
        "A fresh session has started with the current working directory reset to default."
    ),
}

# What the model reads when a person steers the episode (`cwm-agent chat`). CWM was never trained
# on these: they are ours, written in the voice of its scaffold's own messages, and each goes to
# the model as a user message (or, for an interrupted command, as that command's output), so the
# transcript stays append-only and says truthfully what happened. An interjection and a follow-up
# are the person's words, verbatim.
HUMAN = {
    "rejected": "The user rejected your {tool} call; it did not run.",
    "rejected_saying": "The user rejected your {tool} call; it did not run. The user says:\n{message}",
    # then the <output> and <budget> blocks, as a tool result would have them
    "edited": (
        "The user edited your {tool} call before it ran. This ran instead:\n"
        "\n"
        "{action}\n"
        "\n"
        "Its result:"
    ),
    "interrupted_command": (
        "The user interrupted this command. "
        "A fresh session has started with the current working directory reset to default."
    ),
    "typed": (
        "The user ran this command in the shell themselves:\n"
        "\n"
        "{action}\n"
        "\n"
        "{output}"
    ),
    "undone": (
        "The user undid the changes of turn {turn}: the files of the repository are back as they were "
        "before that turn's {tool} call ({paths}). The shell session itself was not reset."
    ),
    # a resumed session: CWM's own restart notice (the shell and its state are new)
    "resumed": FEEDBACK["session_died"],
}


def human_message(kind: str, **fields: str) -> str:
    """One of HUMAN's texts, filled in (``action`` fields take an Action, rendered as the model writes it)."""
    filled = {key: render_action(value) if isinstance(value, Action) else value for key, value in fields.items()}
    return HUMAN[kind].format(**filled)


# --- prompts -----------------------------------------------------------------------------


def system_prompt(
    *,
    tools: Collection[str] = ALL_TOOLS,
    reasoning: bool = True,
    session_timeout: float = SESSION_TIMEOUT_SECONDS,
    context_window: int = CONTEXT_WINDOW,
    max_turns: int = MAX_TURNS,
) -> str:
    """The issue-solving system prompt; tool blocks always in CWM's order (bash, edit, create, submit)."""
    unknown = sorted(set(tools) - set(TOOL_BLOCKS))
    if unknown:
        raise ValueError(f"unknown tool(s) {', '.join(unknown)}; CWM knows only {', '.join(ALL_TOOLS)}")
    blocks = "\n\n".join(TOOL_BLOCKS[name] for name in ALL_TOOLS if name in tools)
    environment = ENVIRONMENT_TEMPLATE.format(
        session_timeout=SESSION_TIMEOUT_TEMPLATE.format(seconds=int(session_timeout)),
        context_window=context_window,
        max_turns=max_turns,
        tool_blocks=blocks,
    )
    intro = SYSTEM_INTRO_REASONING if reasoning else SYSTEM_INTRO_PLAIN
    return f"{intro}\n\n{environment}"


def testgen_prompt(issue: str, *, repo_root: str = "/testbed") -> str:
    """The first user message of a test-generation episode, untruncated."""
    return TESTGEN_TEMPLATE.format(issue=issue, repo_root=repo_root)


def issue_prompt(issue: str, *, repo_root: str = "/testbed") -> str:
    """The first user message's body, untruncated (truncate_user_message caps it as CWM did)."""
    return ISSUE_TEMPLATE.format(issue=issue, repo_root=repo_root)


def render_message(role: str, body: str) -> str:
    """One framed message; system/user/assistant bodies are stripped, tool bodies are not."""
    if role in STRIPPED_ROLES:
        body = body.strip()
    return MESSAGE_TEMPLATE.format(role=role, body=body)


def generation_prompt(reasoning: bool = True) -> str:
    """The assistant header that opens the model's turn (with "<think>\\n" in reasoning mode)."""
    return START_HEADER + "assistant" + END_HEADER + "\n\n" + (THINK_PREFIX if reasoning else "")


def tool_result_body(feedback: str, *, remaining_turns: int, remaining_tokens: int) -> str:
    """The body of a ``tool: X`` message: the feedback in <output>, then the budget."""
    return TOOL_RESULT_TEMPLATE.format(
        feedback=feedback, remaining_turns=remaining_turns, remaining_tokens=remaining_tokens
    )


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    tool: str
    body: str


def render_action(action: Action) -> str:
    return ACTION_TEMPLATE.format(tool=action.tool, body=action.body)


class ActionError(Exception):
    """A reply the scaffold rejects. ``feedback`` is the exact line the model gets back."""

    def __init__(self, kind: str, feedback: str) -> None:
        super().__init__(feedback)
        self.kind = kind
        self.feedback = feedback


def _strip_stop(reply: str) -> str:
    for stop in STOP_TEXTS:
        if reply.endswith(stop):
            return reply[: -len(stop)]
    return reply


def _answer(reply: str, reasoning: bool) -> str:
    """The text the parser looks at: after the one "</think>" in reasoning mode."""
    text = _strip_stop(reply)
    if not reasoning:
        return text
    ends = text.count(THINK_END)
    if ends != 1:
        raise ActionError("think", FEEDBACK["think"].format(count=ends))
    return text.split(THINK_END, 1)[1]


def parse_action(reply: str, *, reasoning: bool = True, tools: Collection[str] = ALL_TOOLS) -> Action:
    """The one tool call in a completion, or ActionError with CWM's feedback line.

    Checks run in the order of CWM's scaffold: thinking end token, several calls,
    tag counts, no call, empty body, unknown tool.
    """
    answer = _answer(reply, reasoning)
    calls = TOOL_CALL.findall(answer)
    if len(calls) > 1:
        names = ", ".join(name for name, _ in calls)
        raise ActionError("multiple", FEEDBACK["multiple"].format(count=len(calls), tools=names))
    opening, closing = answer.count(OPENING_TAG), answer.count(CLOSING_TAG)
    if len(calls) != opening or len(calls) != closing:
        raise ActionError(
            "tag_mismatch",
            FEEDBACK["tag_mismatch"].format(calls=len(calls), opening=opening, closing=closing),
        )
    if not calls:
        raise ActionError("no_call", FEEDBACK["no_call"])
    tool, body = calls[0]
    if body.strip() == "":
        raise ActionError("empty", FEEDBACK["empty"].format(tool=tool))
    if tool not in tools:
        raise ActionError("no_such_tool", FEEDBACK["no_such_tool"].format(tool=tool))
    return Action(tool, body)


def is_final_summary(reply: str, *, reasoning: bool = True, tools: Collection[str] = ALL_TOOLS) -> bool:
    """After a successful submit: does this reply end the episode as the final summary?

    As in CWM's environment, any reply without a valid tool call counts (no call,
    several, mismatched tags, empty body, unknown tool), provided that in
    reasoning mode it has exactly one "</think>".
    """
    try:
        parse_action(reply, reasoning=reasoning, tools=tools)
    except ActionError as exc:
        return exc.kind != "think"
    return False


# --- truncation -------------------------------------------------------------------------

Count = Callable[[str], int]


def truncate_user_message(body: str, count: Count, limit: int = ISSUE_TOKEN_LIMIT) -> str:
    """The first user message's body, capped as CWM's ``start`` did (utils/dialogs.py).

    The WHOLE encoded message (header and <|eot_id|> included) must fit ``limit`` tokens;
    otherwise the body keeps its longest tail that fits behind "[...]", so a huge issue
    loses the instructions' head, exactly as in training.
    """
    frame = _framer("user")
    tokens, over = _count_within(body, count, limit, False, frame)
    if tokens is not None:
        return body
    return _cut(body, count, limit, keep_start=False, over=over, frame=frame)


def truncate_result(text: str, count: Count, limit: int = RESULT_TOKEN_LIMIT) -> str:
    """``text`` if it fits ``limit`` tokens, else its longest head that fits before "[...]"."""
    return _truncate(text, count, limit, keep_start=True)


def _piece(text: str, n: int, keep_start: bool) -> str:
    return text[:n] if keep_start else text[len(text) - n :]


def _unframed(text: str) -> str:
    return text


def _framer(role: str) -> Callable[[str], str]:
    """The whole encoded message for a body: how CWM measured a message against its cap."""
    return lambda body: render_message(role, body)


def _count_within(
    text: str, count: Count, limit: int, keep_start: bool, frame: Callable[[str], str] = _unframed
) -> tuple[int | None, int]:
    """(tokens of ``frame(text)`` if it fits ``limit``, else None; a length whose piece already overflows).

    Probes growing pieces first, so a 10 MB text over the limit costs a few counts of
    a few hundred KB instead of one count of 10 MB. Assumes a piece never has more
    tokens than the whole, which holds for BPE up to a token or two at the cut.
    """
    probe = max(4 * limit, 1024)
    while probe * 2 < len(text):
        if count(frame(_piece(text, probe, keep_start))) > limit:
            return None, probe
        probe *= 2
    tokens = count(frame(text))
    return (tokens, len(text)) if tokens <= limit else (None, len(text))


def _truncate(text: str, count: Count, limit: int, *, keep_start: bool) -> str:
    tokens, over = _count_within(text, count, limit, keep_start)
    if tokens is not None:
        return text
    return _cut(text, count, limit, keep_start=keep_start, over=over)


def _cut(
    text: str,
    count: Count,
    limit: int,
    *,
    keep_start: bool,
    over: int,
    frame: Callable[[str], str] = _unframed,
) -> str:
    """The longest piece (in characters) whose ``frame(piece + marker)`` fits ``limit`` tokens.

    Bracketed search: ``lo`` always fits (verified), ``hi`` never does. Steps
    alternate between linear interpolation on the token counts (fast on smooth
    text) and bisection (guaranteed progress), so a cut takes about a dozen counts.
    """
    marker = TRUNCATION_MARKER

    def render(n: int) -> str:
        piece = _piece(text, n, keep_start)
        return piece + marker if keep_start else marker + piece

    lo, c_lo = 0, count(frame(marker))
    if c_lo > limit:
        raise ValueError(f"a limit of {limit} tokens cannot even hold the marker {marker!r}")
    hi, c_hi = over, count(frame(render(over)))
    if c_hi <= limit:  # the counter is not monotonic here; accept the longer piece
        return render(over)
    interpolate = True
    while hi - lo > 1:
        if interpolate and c_hi > c_lo:
            guess = lo + int((hi - lo) * (limit + 0.5 - c_lo) / (c_hi - c_lo))
        else:
            guess = (lo + hi) // 2
        mid = min(max(guess, lo + 1), hi - 1)
        c_mid = count(frame(render(mid)))
        if c_mid <= limit:
            lo, c_lo = mid, c_mid
        else:
            hi, c_hi = mid, c_mid
        interpolate = not interpolate
    return render(lo)


# The real budget line differs from the estimate's only in two numbers (at most 8 characters
# each, a minus sign included) standing where the placeholders stood, so the real message has at
# most this many more tokens than the estimate: an upper bound that needs no second count.
NUMBER_SLACK = 16


@dataclass(frozen=True)
class ToolMessage:
    """A ``tool: X`` message body with its budget, and CWM's estimate of the message's tokens."""

    body: str
    estimate: int  # the count the budget line was computed from (capped at the message limit)

    @property
    def upper_bound(self) -> int:
        """Tokens the real message takes at most (see NUMBER_SLACK)."""
        return self.estimate + NUMBER_SLACK


def budgeted_tool_result(
    feedback: str,
    *,
    remaining_turns: int,
    context_window: int,
    tokens_so_far: int,
    count: Count,
    tool: str = "bash",
    limit: int = RESULT_TOKEN_LIMIT,
) -> ToolMessage:
    """The tool message body with CWM's budget block, capped at ``limit`` tokens for the whole message.

    As swerl_tool.py ``step`` computes it: "Remaining tokens" = ``context_window -
    tokens_so_far - estimate``, where ``tokens_so_far`` includes this turn's reply and its
    stop token, and ``estimate`` is ONE count of the encoded message whose body is the
    output block, a blank line and the budget template with its placeholders left
    unformatted, capped at ``limit``. A message over ``limit`` is cut on the right, budget
    and all. One count per call, unless the message lies within NUMBER_SLACK of the cap.
    """
    frame = _framer(f"tool: {tool}")
    estimate_body = OUTPUT_TEMPLATE.format(feedback=feedback) + "\n\n" + BUDGET_TEMPLATE
    tokens, _ = _count_within(estimate_body, count, limit, True, frame)
    estimate = limit if tokens is None else tokens
    body = tool_result_body(feedback, remaining_turns=remaining_turns,
                            remaining_tokens=context_window - tokens_so_far - estimate)
    if tokens is None or tokens + NUMBER_SLACK > limit:  # near or over the cap: measure the real one
        real, over = _count_within(body, count, limit, True, frame)
        if real is None:
            body = _cut(body, count, limit, keep_start=True, over=over, frame=frame)
    return ToolMessage(body, estimate)


def closed_reply(text: str, stop: str | None) -> str:
    """A reply as it stands in the transcript: its text, the generated stop token, and
    <|eot_id|> after it unless that token was <|eot_id|> (dialog.py ``transition``)."""
    return text + (stop or "") + ("" if stop == EOT else EOT)


# --- the dialog ----------------------------------------------------------------------------


class Transcript:
    """The append-only CWM dialog: exactly the text sent to /v1/completions.

    Turn N's ``prompt`` starts with turn N-1's ``prompt`` followed by its completion,
    so vLLM's prefix cache stays hot. Parts are kept in a list and joined lazily,
    once per change, so reading ``prompt`` repeatedly costs nothing.
    """

    def __init__(self, *, reasoning: bool = True) -> None:
        self.reasoning = reasoning
        self._generation = generation_prompt(reasoning)
        self._parts: list[str] = [BOS]
        self._messages: list[tuple[str, str]] = []
        self._text: str | None = None
        self._prompt: str | None = None

    @classmethod
    def start(cls, system: str, user: str, *, reasoning: bool = True) -> Transcript:
        transcript = cls(reasoning=reasoning)
        transcript._add_message("system", system)
        transcript._add_message("user", user)
        return transcript

    @classmethod
    def restore(cls, text: str, messages: list[tuple[str, str]], *, reasoning: bool = True) -> Transcript:
        """A transcript saved as its ``text`` and ``messages`` (a resumed session), exactly as it was."""
        if not text.startswith(BOS):
            raise ValueError("a saved transcript starts with " + BOS)
        transcript = cls(reasoning=reasoning)
        transcript._parts = [text]
        transcript._messages = [(role, body) for role, body in messages]
        return transcript

    def _append(self, *parts: str) -> None:
        self._parts.extend(parts)
        self._text = self._prompt = None

    def _add_message(self, role: str, body: str) -> None:
        if role in STRIPPED_ROLES:
            body = body.strip()
        self._messages.append((role, body))
        self._append(MESSAGE_TEMPLATE.format(role=role, body=body))

    def add_assistant(self, completion: str, stop: str | None = EOT) -> None:
        """The model's reply verbatim, then the stop token it generated (``stop``; None when it was
        cut off). <|eot_id|> closes the turn when that token was not <|eot_id|>, as CWM's
        dialog.py ``transition`` does. A reply that still ends in <|eot_id|> keeps just that one."""
        body = completion
        if stop == EOT:
            body = body.removesuffix(EOT)
        self._messages.append(("assistant", (THINK_PREFIX if self.reasoning else "") + body))
        self._append(self._generation, closed_reply(body, stop))

    def add_tool_result(self, tool: str, body: str) -> None:
        self._add_message(f"tool: {tool}", body)

    def add_user(self, body: str) -> None:
        self._add_message("user", body)

    @property
    def messages(self) -> list[tuple[str, str]]:
        """(role, body) as rendered; assistant bodies include "<think>\\n" and exclude <|eot_id|>."""
        return list(self._messages)

    @property
    def text(self) -> str:
        """The dialog so far, without the trailing generation prompt."""
        if self._text is None:
            self._text = "".join(self._parts)
            self._parts = [self._text]
        return self._text

    @property
    def prompt(self) -> str:
        """The dialog so far plus the generation prompt: the next request's prompt."""
        if self._prompt is None:
            self._prompt = self.text + self._generation
        return self._prompt
