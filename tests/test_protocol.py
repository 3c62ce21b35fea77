"""protocol.py: golden strings from shared/cwm-interface.md, the parser, truncation, the transcript.

The golden strings below are pasted from the spec, byte for byte; they are not
generated from cwm_agent.protocol, so a changed template fails here.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from cwm_agent import protocol
from cwm_agent.protocol import (
    ALL_TOOLS,
    BASH_ONLY_TOOLS,
    BOS,
    EOT,
    Action,
    ActionError,
    Transcript,
    budgeted_tool_result,
    generation_prompt,
    is_final_summary,
    issue_prompt,
    parse_action,
    render_action,
    render_message,
    system_prompt,
    tool_result_body,
    truncate_user_message,
    truncate_result,
)
from cwm_agent.models.tokens import EstimateCounter

estimate = EstimateCounter().count

# Golden copies of shared/cwm-interface.md, sections 3 and 4, pasted verbatim.
GOLDEN_SYSTEM = """\
You are a helpful AI assistant. You always reason before responding, using the following format:

<think>
your internal reasoning
</think>
your external response

# Environment

You are working in a linux container. The container session is persistent but will restart when encountering errors or after a 120-second session timeout in each turn. You are also constrained by a 131072 total context window limit. You can interact with the container through the following tool interface for at most 128 turns. Here are the specifications:

<tool: bash>
[command(s)]
</tool>
Executes bash command(s) [command(s)] in the current session. [command(s)] can be any non-interactive bash command(s), either single or multi-line.

<tool: edit>
[path]
<<<<<<< SEARCH
[search_lines]
=======
[replacement_lines]
>>>>>>> REPLACE
</tool>
Replaces [search_lines] from [path] with [replacement_lines], where [path] must exist and [search_lines] must uniquely and exactly match one or more consecutive lines from the original file, including indentations and whitespaces.

<tool: create>
[path]
[content]
</tool>
Creates a new file at [path] with [content], where [path] must not exist, but its parent directory must exist.

<tool: submit>
[result]
</tool>
Marks [result] as your final submission. The meaning and format of [result] depends on the specific user request.

REQUIREMENTS:
* You cannot invoke more than one tool in each step.
* You must invoke exactly one tool in each step before any <tool: submit> call.
* After successful submission, provide a final response if the request is resolved, otherwise continue iterating. You cannot provide a final response before invoking <tool: submit>."""

# Section 3's bash-only variant: the same text without the edit and create blocks.
GOLDEN_SYSTEM_BASH_ONLY = """\
You are a helpful AI assistant. You always reason before responding, using the following format:

<think>
your internal reasoning
</think>
your external response

# Environment

You are working in a linux container. The container session is persistent but will restart when encountering errors or after a 120-second session timeout in each turn. You are also constrained by a 131072 total context window limit. You can interact with the container through the following tool interface for at most 128 turns. Here are the specifications:

<tool: bash>
[command(s)]
</tool>
Executes bash command(s) [command(s)] in the current session. [command(s)] can be any non-interactive bash command(s), either single or multi-line.

<tool: submit>
[result]
</tool>
Marks [result] as your final submission. The meaning and format of [result] depends on the specific user request.

REQUIREMENTS:
* You cannot invoke more than one tool in each step.
* You must invoke exactly one tool in each step before any <tool: submit> call.
* After successful submission, provide a final response if the request is resolved, otherwise continue iterating. You cannot provide a final response before invoking <tool: submit>."""

# Section 4, with its two placeholders left in.
GOLDEN_ISSUE_TEMPLATE = """\
Solve the following issue by implementing the necessary code changes and submitting a patch file:

<issue_description>
{issue}
</issue_description>

The [result] argument of <tool: submit> should be the path to a patch file that resolves the issue. This file must be accessible from the current working directory and should contain the end-to-end code changes in git diff format. You can refine and submit your patch multiple times as needed to ensure correctness.

Once you've submitted at least once and are confident in your solution, provide a final response summarizing your work using the following markdown template as a guide. Feel free to adjust the sections as necessary to fit the specific issue and solution:

```markdown
## Issue Summary

Brief description of the issue (bug/feature/enhancement), affected component, and expected outcome.

## Investigation and Reproduction

Steps taken to understand and reproduce the issue: commands executed, test cases run, error messages, debugging approach, and root cause analysis. For features, describe requirement analysis and codebase exploration.

## Solution and Code Changes

High-level approach and rationale for the chosen solution. Specific modifications by file/component, including new functions, classes, or architectural decisions. Explain how changes work together if multiple files are involved.

## Testing and Verification

Description of how you ensure the patch fully resolves the issue, including new tests added (or test changes made) to verify correctness, how you ran existing tests to prevent regressions, and how comprehensive your testing process is (e.g., what edge cases you covered, how you validated correctness across different scenarios).
```

Your primary objective is to ensure patch correctness above all else - thoroughly explore the codebase, think hard, and leverage significant execution to verify correctness by writing comprehensive tests to validate your solution and running existing tests to prevent regressions. Only submit when you are genuinely confident in your patch's correctness.

I've uploaded the corresponding code repository at {repo_root} and installed all the necessary dependencies. Now, the bash session has started, with the current working directory set to the repo root."""

HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"


def think(action_text: str, reasoning: str = "Let me look.\n") -> str:
    """A reasoning-mode completion: reasoning, </think>, the action (what follows "<think>\\n")."""
    return f"{reasoning}</think>\n{action_text}"


# --- constants -----------------------------------------------------------------------------


def test_token_constants_match_the_spec():
    assert (protocol.BOS, protocol.EOT, protocol.EOM, protocol.END_OF_TEXT) == (
        "<|begin_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")
    assert protocol.STOP_TOKEN_IDS == (128001, 128008, 128009)
    assert (protocol.THINK_PREFIX, protocol.THINK_END) == ("<think>\n", "</think>")
    assert ALL_TOOLS == ("bash", "edit", "create", "submit")
    assert BASH_ONLY_TOOLS == ("bash", "submit")
    assert (protocol.ISSUE_TOKEN_LIMIT, protocol.RESULT_TOKEN_LIMIT, protocol.CONTEXT_WINDOW,
            protocol.MAX_TURNS, protocol.TURN_TOKEN_LIMIT) == (8192, 32768, 131072, 128, 65536)
    assert protocol.TOOL_CALL_REGEX == r"<tool:\s([a-zA-Z_]+)>\n(.*?)\n</tool>"
    assert protocol.TOOL_CALL.flags & re.DOTALL


# --- system and issue prompts --------------------------------------------------------------


def test_system_prompt_is_the_spec_byte_for_byte():
    assert system_prompt() == GOLDEN_SYSTEM
    assert "format:\n\n<think>" in system_prompt()  # the blank line after "format:"


def test_bash_only_system_prompt_drops_edit_and_create_blocks():
    assert system_prompt(tools=BASH_ONLY_TOOLS) == GOLDEN_SYSTEM_BASH_ONLY
    assert "<tool: edit>" not in GOLDEN_SYSTEM_BASH_ONLY
    # The tool blocks come in CWM's order whatever order the caller gives.
    assert system_prompt(tools=("submit", "bash")) == GOLDEN_SYSTEM_BASH_ONLY


def test_non_reasoning_system_prompt_replaces_only_the_intro():
    plain = system_prompt(reasoning=False)
    intro_end = GOLDEN_SYSTEM.index("\n\n# Environment")
    assert plain == "You are a helpful AI assistant." + GOLDEN_SYSTEM[intro_end:]
    assert "<think>" not in plain


def test_system_prompt_fills_timeout_context_and_turns():
    text = system_prompt(session_timeout=300.0, context_window=32768, max_turns=50)
    assert text == (GOLDEN_SYSTEM.replace("120-second", "300-second")
                    .replace("a 131072 total", "a 32768 total").replace("at most 128 turns", "at most 50 turns"))


def test_system_prompt_rejects_unknown_tools():
    with pytest.raises(ValueError, match="python"):
        system_prompt(tools=("bash", "python"))


def test_issue_prompt_is_the_spec_byte_for_byte():
    assert issue_prompt("{issue}", repo_root="{repo_root}") == GOLDEN_ISSUE_TEMPLATE
    text = issue_prompt("Crash on {empty} input\n", repo_root="/repo")
    assert text == GOLDEN_ISSUE_TEMPLATE.replace("{issue}", "Crash on {empty} input\n").replace("{repo_root}", "/repo")
    assert issue_prompt("x").endswith("I've uploaded the corresponding code repository at /testbed and installed "
                                      "all the necessary dependencies. Now, the bash session has started, with the "
                                      "current working directory set to the repo root.")


# --- framing and the first prompt ------------------------------------------------------------


def test_render_message_strips_chat_roles_but_not_tool_results():
    assert render_message("user", "  hi\n") == "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    assert render_message("system", "\ns\n") == "<|start_header_id|>system<|end_header_id|>\n\ns<|eot_id|>"
    assert render_message("assistant", " a ") == "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>"
    assert render_message("tool: bash", "  out\n") == (
        "<|start_header_id|>tool: bash<|end_header_id|>\n\n  out\n<|eot_id|>")


def test_generation_prompt():
    assert generation_prompt() == "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n"
    assert generation_prompt(False) == "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_first_turn_prompt_byte_for_byte():
    issue = "\nThe parser crashes on empty input.\n"
    transcript = Transcript.start(system_prompt(), issue_prompt(issue))
    expected = (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\n" + GOLDEN_SYSTEM + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        + GOLDEN_ISSUE_TEMPLATE.replace("{issue}", issue).replace("{repo_root}", "/testbed") + "<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n"
    )
    assert transcript.prompt == expected
    assert transcript.text == expected.removesuffix("<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
    assert transcript.prompt.count(BOS) == 1


def test_non_reasoning_first_prompt_has_no_think_prefix():
    transcript = Transcript.start(system_prompt(reasoning=False), "task", reasoning=False)
    assert transcript.prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    transcript.add_assistant("<tool: bash>\nls\n</tool>")
    assert transcript.messages[-1] == ("assistant", "<tool: bash>\nls\n</tool>")


# --- tool results ----------------------------------------------------------------------------


def test_tool_result_body_byte_for_byte():
    body = tool_result_body("a.py\nb.py\n", remaining_turns=127, remaining_tokens=120345)
    assert body == (
        "<output>\n"
        "a.py\nb.py\n\n"
        "</output>\n"
        "\n"
        "<budget>\n"
        "* Remaining turns: 127\n"
        "* Remaining tokens: 120345\n"
        "</budget>"
    )


def _remaining(body: str) -> int:
    match = re.search(r"\* Remaining tokens: (-?\d+)\n</budget>$", body)
    assert match, body
    return int(match.group(1))


# CWM's estimate (swerl_tool.py `step`): the message whose body is the output block, a blank line
# and the budget template with its placeholders UNFORMATTED, pasted here from the release.
GOLDEN_BUDGET_TEMPLATE = "<budget>\n* Remaining turns: {remaining_turns}\n* Remaining tokens: {remaining_tokens}\n</budget>"


def cwm_estimate(feedback: str, tool: str, count=estimate, cap: int = 32768) -> int:
    message = (f"<|start_header_id|>tool: {tool}<|end_header_id|>\n\n<output>\n{feedback}\n</output>\n\n"
               + GOLDEN_BUDGET_TEMPLATE + "<|eot_id|>")
    return min(count(message), cap)


@settings(max_examples=200, deadline=None)
@given(feedback=st.text(max_size=400), so_far=st.integers(0, 140_000), turns=st.integers(1, 127),
       tool=st.sampled_from(ALL_TOOLS))
@example(feedback="x", so_far=131072 - 10_021, turns=3, tool="bash")  # near the 5 -> 4 digit boundary
def test_remaining_tokens_is_cwms_one_count_estimate(feedback, so_far, turns, tool):
    message = budgeted_tool_result(feedback, remaining_turns=turns, context_window=131072,
                                   tokens_so_far=so_far, count=estimate, tool=tool)
    body = message.body
    assert body.startswith(f"<output>\n{feedback}\n</output>\n\n<budget>\n* Remaining turns: {turns}\n")
    assert message.estimate == cwm_estimate(feedback, tool)
    assert _remaining(body) == 131072 - so_far - cwm_estimate(feedback, tool)
    # The bound the agent relies on until the server reports the real count.
    assert estimate(render_message(f"tool: {tool}", body)) <= message.upper_bound


def test_the_budget_costs_one_count():
    calls = []

    def counting(text: str) -> int:
        calls.append(text)
        return estimate(text)

    message = budgeted_tool_result("hello world\n", remaining_turns=100, context_window=131072,
                                   tokens_so_far=20_000, count=counting)
    assert len(calls) == 1 and "{remaining_tokens}" in calls[0]
    assert _remaining(message.body) == 131072 - 20_000 - cwm_estimate("hello world\n", "bash")


def test_oversized_result_is_cut_on_the_right_budget_and_all():
    feedback = "line of output\n" * 2000
    limit = 300
    body = budgeted_tool_result(feedback, remaining_turns=5, context_window=131072, tokens_so_far=1000,
                                count=estimate, limit=limit).body
    assert body.startswith("<output>\nline of output\n")
    assert body.endswith("[...]")
    assert "<budget>" not in body
    assert estimate(render_message("tool: bash", body)) <= limit
    # The cut is as long as possible: one more character would not fit. The estimate was capped.
    cut = len(body) - len("[...]")
    full = tool_result_body(feedback, remaining_turns=5, remaining_tokens=131072 - 1000 - limit)
    assert body[:cut] == full[:cut]
    assert estimate(render_message("tool: bash", full[: cut + 1] + "[...]")) > limit


def test_a_result_just_under_the_cap_is_measured_for_real():
    # The estimate fits, the real message may not: within NUMBER_SLACK of the cap it is counted.
    feedback = "w" * 2000
    own = cwm_estimate(feedback, "bash", cap=10**9)
    message = budgeted_tool_result(feedback, remaining_turns=5, context_window=131072, tokens_so_far=0,
                                   count=estimate, limit=own + 1)
    assert estimate(render_message("tool: bash", message.body)) <= own + 1


# --- the parser: exact error strings ----------------------------------------------------------


ERROR_CASES = [
    # (reply, tools, kind, the exact feedback line)
    (think("I am done."), ALL_TOOLS, "no_call", "FormatError: No tool calls found"),
    (think("<tool: bash>\nls\n</tool>\n<tool: submit>\np.diff\n</tool>"), ALL_TOOLS, "multiple",
     "FormatError: Expected one tool call, but found 2: bash, submit. "
     "Ensure only one <tool:...></tool> block is present in the response."),
    (think("<tool: bash>\nls"), ALL_TOOLS, "tag_mismatch",
     "FormatError: Mismatch in tool tag counts: found 0 tool calls via regex, "
     "but counted 1 opening tags and 0 closing tags."),
    (think("<tool: bash>\nls\n</tool>\n</tool>"), ALL_TOOLS, "tag_mismatch",
     "FormatError: Mismatch in tool tag counts: found 1 tool calls via regex, "
     "but counted 1 opening tags and 2 closing tags."),
    (think("<tool: bash>\n \t\n</tool>"), ALL_TOOLS, "empty",
     "FormatError: Tool 'bash' requires non-empty arguments, but received empty or whitespace-only input."),
    (think("<tool: python>\nprint(1)\n</tool>"), ALL_TOOLS, "no_such_tool",
     "NoSuchToolError: Tool 'python' not found."),
    (think("<tool: edit>\na.py\n</tool>"), BASH_ONLY_TOOLS, "no_such_tool", "NoSuchToolError: Tool 'edit' not found."),
    ("no end token <tool: bash>\nls\n</tool>", ALL_TOOLS, "think",
     "FormatError: Expected exactly one thinking end token, got 0"),
    ("a</think>b</think>\n<tool: bash>\nls\n</tool>", ALL_TOOLS, "think",
     "FormatError: Expected exactly one thinking end token, got 2"),
]


@pytest.mark.parametrize("reply,tools,kind,feedback", ERROR_CASES)
def test_parse_errors_are_the_exact_spec_strings(reply, tools, kind, feedback):
    with pytest.raises(ActionError) as info:
        parse_action(reply, tools=tools)
    assert info.value.kind == kind
    assert info.value.feedback == feedback
    assert str(info.value) == feedback


def test_checks_run_in_the_scaffolds_order():
    def kind(reply: str, **kw) -> str:
        with pytest.raises(ActionError) as info:
            parse_action(reply, **kw)
        return info.value.kind

    # The thinking token comes first, even when the call is fine.
    assert kind("<tool: bash>\nls\n</tool>") == "think"
    # Several calls win over a stray extra tag.
    assert kind(think("<tool: bash>\na\n</tool><tool: bash>\nb\n</tool> <tool:")) == "multiple"
    # A tag mismatch wins over "no call": an unclosed call is reported as such.
    assert kind(think("<tool: bash>\n</tool>")) == "tag_mismatch"  # one newline only: no match
    # An empty body is reported before an unknown tool.
    assert kind(think("<tool: nope>\n\n</tool>")) == "empty"


def test_tool_calls_inside_the_reasoning_are_ignored():
    reply = think("<tool: bash>\nls\n</tool>", reasoning="I could run <tool: bash>\nrm -rf /\n</tool> but no.\n")
    assert parse_action(reply) == Action("bash", "ls")


def test_non_reasoning_mode_parses_the_whole_reply():
    assert parse_action("<tool: bash>\nls\n</tool>", reasoning=False) == Action("bash", "ls")
    assert parse_action("x</think>\n<tool: bash>\nls\n</tool>", reasoning=False) == Action("bash", "ls")


@pytest.mark.parametrize("stop", ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"])
def test_a_trailing_stop_token_is_ignored(stop):
    assert parse_action(think("<tool: bash>\nls\n</tool>") + stop) == Action("bash", "ls")
    # Only at the very end: the body keeps what it says.
    assert parse_action(think(f"<tool: bash>\necho '{stop}'\n</tool>")).body == f"echo '{stop}'"


def test_final_summary_is_a_reply_without_a_valid_call():
    assert is_final_summary(think("## Issue Summary\n\nFixed it."))
    assert is_final_summary(think("I ran `<tool: bash>` earlier."))  # a stray tag is no call
    assert is_final_summary(think("<tool: python>\nx\n</tool>"))  # as in CWM: any format error ends it
    assert not is_final_summary(think("<tool: bash>\nls\n</tool>"))
    assert not is_final_summary("no thinking end token, just a summary")
    assert is_final_summary("summary", reasoning=False)


# --- the parser: round trips ---------------------------------------------------------------------

TOOL_NAMES = st.sampled_from(ALL_TOOLS)
FRAGMENTS = st.sampled_from([
    "\n", "\r\n", " ", "\t", "<<<<<<< SEARCH\n", "\n=======\n", "\n>>>>>>> REPLACE", "<tool", "tool>", "</tool",
    "</too", "<tool :", "< tool:", "<tool>", "</think", "<think>", "<|eot_id|>", "é", "日本", "🐍", "\x00", "\\n",
    "$(rm -rf /)", "'\"`", "EOF",
])
BODIES = st.lists(st.one_of(FRAGMENTS, st.text(max_size=20)), max_size=12).map("".join)
FORBIDDEN = ("<tool:", "</tool>")


def round_trips(body: str, reasoning: bool = True) -> bool:
    """The class of bodies that survive render_action -> parse_action (see protocol's docstring)."""
    forbidden = FORBIDDEN + (("</think>",) if reasoning else ())
    return body.strip() != "" and not any(tag in body for tag in forbidden)


@settings(max_examples=500)
@given(tool=TOOL_NAMES, body=BODIES, eot=st.booleans())
@example(tool="edit", body="a.py\n<<<<<<< SEARCH\nold\n=======\nnew\n>>>>>>> REPLACE", eot=True)
@example(tool="create", body="a.py\nno trailing newline", eot=False)
@example(tool="create", body="a.py\nline\r\nline\r\n", eot=False)
@example(tool="bash", body="echo hi\n\n", eot=False)  # trailing newlines belong to the body
@example(tool="bash", body="\n\ncat <<'EOF'\n</tool\nEOF", eot=True)
def test_render_then_parse_round_trips(tool, body, eot):
    assume(round_trips(body))
    action = Action(tool, body)
    reply = think(render_action(action)) + ("<|eot_id|>" if eot else "")
    assert parse_action(reply) == action
    assert parse_action(render_action(action), reasoning=False) == action


@settings(max_examples=300)
@given(tool=TOOL_NAMES, before=BODIES, tag=st.sampled_from(FORBIDDEN + ("\n</tool>", "<tool: bash>\nx\n</tool>")),
       after=BODIES)
def test_bodies_with_tool_tags_are_rejected_not_misparsed(tool, before, tag, after):
    body = before + tag + after
    with pytest.raises(ActionError) as info:
        parse_action(think(render_action(Action(tool, body)), reasoning="r\n"))
    assert info.value.kind in ("multiple", "tag_mismatch", "think")
    if "</think>" not in body:
        assert info.value.kind in ("multiple", "tag_mismatch")


@given(tool=TOOL_NAMES, body=st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u3000", max_size=10))
def test_whitespace_only_bodies_are_empty(tool, body):
    with pytest.raises(ActionError) as info:
        parse_action(think(render_action(Action(tool, body))))
    assert info.value.kind == "empty"
    assert info.value.feedback == protocol.FEEDBACK["empty"].format(tool=tool)


@given(name=st.from_regex(r"[a-zA-Z_]{1,12}", fullmatch=True), body=BODIES)
def test_any_other_tool_name_is_no_such_tool(name, body):
    assume(name not in ALL_TOOLS and round_trips(body))
    with pytest.raises(ActionError) as info:
        parse_action(think(render_action(Action(name, body))))
    assert info.value.kind == "no_such_tool"
    assert info.value.feedback == f"NoSuchToolError: Tool '{name}' not found."


# --- tool feedback templates (for cwm_agent/tools.py and the sandbox scripts) ---------------------


def test_tool_feedback_templates_are_the_spec_strings():
    f = protocol.FEEDBACK
    assert f["edit_success"].format(path="a.py", line=3, num_lines=10, snippet="     1\tx") == (
        "File a.py has been successfully updated at line 3 and now contains 10 lines. The surrounding lines "
        "after the edit are shown below:\n     1\tx\nReview the changes and make sure they are as expected.")
    assert f["edit_snippet_line"].format(number=12, line="    return x") == "    12\t    return x"
    assert f["edit_parse_error"] == (
        "Failed to parse the edit tool call. Make sure it has the following format:\n\n<tool: edit>\n[path]\n"
        "<<<<<<< SEARCH\n[search_lines]\n=======\n[replacement_lines]\n>>>>>>> REPLACE\n</tool>")
    assert f["edit_multiple_blocks"].format(count=2) == "Only one search/replace block is allowed. Got: 2."
    assert f["edit_no_path"].format(path="x.py") == "The path x.py does not exist. Please provide a valid path."
    assert f["edit_not_found"].format(path="x.py") + f["edit_indentation_hint"] == (
        "No replacement was performed, the search lines did not appear verbatim in x.py. The search lines must "
        "exactly match one or more consecutive lines from the file, with indentations preserved.")
    assert f["edit_multiple_matches"].format(linenums=[3, 9], path="x.py") == (
        "No replacement was performed. Multiple occurrences of the search text in lines [3, 9] of x.py. "
        "Please ensure it is unique.")
    assert f["create_success"].format(path="n.py", num_lines=4) == "File created successfully at: n.py (4 lines)."
    assert f["create_exists"].format(path="n.py") == (
        "n.py already exists. Cannot create a new file at an existing path.")
    assert f["create_empty_path"] == "Path is empty. Please provide a valid path."
    assert f["create_no_parent"].format(parent_dir="/no/dir") == (
        "File creation failed. The parent directory /no/dir does not exist.")
    assert f["submit_success"].format(patch="diff --git a/x b/x") == (
        "The following patch content is marked as your final submission:\n\n<submission>\ndiff --git a/x b/x\n"
        "</submission>\n\nReview the patch content and ensure it correctly resolves the issue. If necessary, you "
        "can continue refining the patch and submit an updated version.")
    assert f["submit_unreadable"].format(path="p.diff") == (
        "Failed to submit p.diff. Make sure it exists and is readable.")
    assert f["submit_empty"].format(path="p.diff") == "Failed to submit p.diff. It is an empty file."
    assert f["submit_not_diff"].format(path="p.diff") == "Failed to submit p.diff. It is not a valid diff file."
    fresh = " A fresh session has started with the current working directory reset to default."
    assert f["session_timeout"] == "The current session has terminated due to timeout." + fresh
    assert f["session_output_limit"] == (
        "The current session has terminated because your previous command produced too much output." + fresh)
    assert f["session_died"] == "The current session has terminated unexpectedly." + fresh


# --- truncation ----------------------------------------------------------------------------------

TEXTS = st.text(alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=3000)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, limit=st.integers(8, 400))
def test_truncate_result_fits_keeps_the_head_and_is_maximal(text, limit):
    out = truncate_result(text, estimate, limit)
    if estimate(text) <= limit:
        assert out == text
        return
    assert estimate(out) <= limit
    assert out.endswith("[...]")
    head = out[: -len("[...]")]
    assert text.startswith(head)
    assert estimate(text[: len(head) + 1] + "[...]") > limit  # one more character would not fit


def user_tokens(body: str, count=estimate) -> int:
    return count(render_message("user", body))


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, limit=st.integers(60, 400))
def test_the_user_message_is_capped_whole_keeping_its_tail_and_is_maximal(text, limit):
    out = truncate_user_message(text, estimate, limit)
    if user_tokens(text) <= limit:
        assert out == text
        return
    assert user_tokens(out) <= limit  # header and <|eot_id|> included, as CWM counted it
    assert out.startswith("[...]")
    tail = out[len("[...]"):]
    assert text.endswith(tail)
    assert user_tokens("[...]" + text[len(text) - len(tail) - 1:]) > limit


FRAME = len(render_message("user", ""))  # the header and <|eot_id|>, in characters


@given(text=st.text(alphabet="abc xyz", min_size=1, max_size=500).map(lambda t: f"<{t}>"),
       limit=st.integers(6, 100))
def test_with_a_character_counter_the_cut_is_exact(text, limit):
    if len(text) <= limit:
        assert truncate_result(text, len, limit) == text
    else:
        assert truncate_result(text, len, limit) == text[: limit - 5] + "[...]"
    room = limit + FRAME
    if len(text) + FRAME <= room:
        assert truncate_user_message(text, len, room) == text
    else:
        assert truncate_user_message(text, len, room) == "[...]" + text[len(text) - (limit - 5):]


def test_defaults_are_the_spec_limits():
    words = "word " * 40_000  # about 40,000 estimated tokens
    out = truncate_user_message(issue_prompt(words), estimate)
    assert user_tokens(out) <= 8192 < user_tokens(out) + 2
    assert out.endswith("with the current working directory set to the repo root.")  # the tail survives
    assert estimate(truncate_result(words, estimate)) <= 32768 < estimate(truncate_result(words, estimate)) + 2


def test_a_limit_below_the_marker_is_an_error():
    with pytest.raises(ValueError, match="marker"):
        truncate_result("x" * 100, len, 3)


class CountingCounter:
    """Records how much text was counted, to show big inputs are never counted whole."""

    def __init__(self) -> None:
        self.calls = 0
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.chars += len(text)
        return estimate(text)


@pytest.mark.parametrize("truncate,limit,framed", [(truncate_result, 32768, False),
                                                    (truncate_user_message, 8192, True)])
def test_ten_megabytes_are_cut_without_counting_them_whole(truncate, limit, framed):
    text = ("def f(x):\n    return x + 1  # comment\n" * 300_000)[:10_000_000]
    counter = CountingCounter()
    out = truncate(text, counter, limit)
    tokens = user_tokens(out) if framed else estimate(out)
    assert tokens <= limit
    assert tokens > limit - 10
    assert counter.chars < 3_000_000  # vs 10 MB for a single count of the whole text
    assert counter.calls < 40


# --- the transcript ----------------------------------------------------------------------------------


def test_transcript_turns_append_verbatim():
    t = Transcript.start(" sys ", "\nissue\n")
    first = t.prompt
    completion = "look\n</think>\n<tool: bash>\nls\n</tool>"
    t.add_assistant(completion)
    t.add_tool_result("bash", "<output>\na\n</output>")
    second = t.prompt
    assert second == (first + completion + "<|eot_id|>"
                      "<|start_header_id|>tool: bash<|end_header_id|>\n\n<output>\na\n</output><|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
    t.add_assistant("oops</think>\nno call<|eot_id|>")  # an EOT already there is not doubled
    t.add_user("FormatError: No tool calls found")
    assert t.prompt == (second + "oops</think>\nno call<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nFormatError: No tool calls found<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
    assert t.messages == [
        ("system", "sys"),
        ("user", "issue"),
        ("assistant", "<think>\n" + completion),
        ("tool: bash", "<output>\na\n</output>"),
        ("assistant", "<think>\noops</think>\nno call"),
        ("user", "FormatError: No tool calls found"),
    ]
    assert t.reasoning is True


def test_cut_off_turn_gets_its_eot_before_the_next_observation():
    t = Transcript.start("s", "u")
    t.add_assistant("I was thinking and then the tokens ran o", stop=None)
    t.add_user("FormatError: Expected exactly one thinking end token, got 0")
    assert "tokens ran o<|eot_id|><|start_header_id|>user<|end_header_id|>" in t.text


def test_a_turn_that_stopped_on_eom_keeps_it_then_gets_its_eot():
    # dialog.py `transition`: the generated stop token stays; <|eot_id|> follows unless it was <|eot_id|>.
    t = Transcript.start("s", "u")
    t.add_assistant("x</think>\n<tool: bash>\nls\n</tool>", stop="<|eom_id|>")
    t.add_tool_result("bash", "<output>\na\n</output>")
    assert "</tool><|eom_id|><|eot_id|><|start_header_id|>tool: bash<|end_header_id|>" in t.text
    t.add_assistant("y</think>\n<tool: bash>\nls\n</tool>", stop="<|eot_id|>")
    assert t.text.endswith("</tool><|eot_id|>") and not t.text.endswith("<|eot_id|><|eot_id|>")
    assert protocol.closed_reply("a", "<|end_of_text|>") == "a<|end_of_text|><|eot_id|>"


def test_messages_is_a_copy():
    t = Transcript.start("s", "u")
    t.messages.append(("user", "sneaky"))
    assert len(t.messages) == 2


OPS = st.lists(st.one_of(
    st.tuples(st.just("assistant"), st.text(max_size=40), st.booleans()),
    st.tuples(st.just("tool"), st.sampled_from(ALL_TOOLS), st.text(max_size=40)),
    st.tuples(st.just("user"), st.text(max_size=40)),
), max_size=12)


@settings(max_examples=200)
@given(ops=OPS, reasoning=st.booleans())
def test_transcript_is_append_only(ops, reasoning):
    t = Transcript.start("system", "user", reasoning=reasoning)
    for op in ops:
        before_prompt, before_text, before_messages = t.prompt, t.text, t.messages
        if op[0] == "assistant":
            completion = op[1] + (EOT if op[2] else "")
            t.add_assistant(completion)
            assert t.text.startswith(before_prompt + completion)  # turn N starts with N-1's prompt + completion
            assert t.text.endswith(EOT)
        elif op[0] == "tool":
            t.add_tool_result(op[1], op[2])
            assert t.text.endswith(render_message(f"tool: {op[1]}", op[2]))
        else:
            t.add_user(op[1])
            assert t.text.endswith(render_message("user", op[1]))
        assert t.text.startswith(before_text)
        assert t.messages[: len(before_messages)] == before_messages
        assert len(t.messages) == len(before_messages) + 1
        assert t.prompt == t.text + generation_prompt(reasoning)
    assert t.text.startswith(BOS + render_message("system", "system"))


# --- a person in the loop (chat): our texts, beside CWM's ----------------------------------------

def test_human_texts_golden():
    # Ours, not CWM's: pinned so that a change is a decision, not an accident.
    assert protocol.human_message("rejected_saying", tool="bash", message="run only tests/test_x.py") == (
        "The user rejected your bash call; it did not run. The user says:\nrun only tests/test_x.py")
    assert protocol.human_message("edited", tool="bash", action=protocol.Action("bash", "pytest -x")) == (
        "The user edited your bash call before it ran. This ran instead:\n\n<tool: bash>\npytest -x\n</tool>\n\n"
        "Its result:")
    # A resumed session's fresh shell is announced in CWM's own restart wording.
    assert protocol.HUMAN["resumed"] == ("The current session has terminated unexpectedly. A fresh session has "
                                         "started with the current working directory reset to default.")
    assert protocol.HUMAN["interrupted_command"].endswith(
        "A fresh session has started with the current working directory reset to default.")


def test_a_restored_transcript_is_the_saved_one():
    t = protocol.Transcript.start("system text", "the issue")
    t.add_assistant("Look.\n</think>\n<tool: bash>\nls\n</tool>", protocol.EOT)
    t.add_tool_result("bash", "<output>\na\n</output>")
    again = protocol.Transcript.restore(t.text, t.messages)
    assert again.prompt == t.prompt and again.messages == t.messages
    again.add_user("more")
    t.add_user("more")
    assert again.prompt == t.prompt
    with pytest.raises(ValueError):
        protocol.Transcript.restore("no bos", [])


# --- CWM's test-generation task (swerl_testgen_tool.py at 7930e02), pasted -------------------------

GOLDEN_TESTGEN = """\
Here is a GitHub issue and you are tasked to generate a test (`test_issue.py`) that can be used to reproduce and verify the fix for the issue:

<issue_description>
{issue}
</issue_description>

This test file should be completely self-contained and executable directly with `python test_issue.py`, without requiring any testing frameworks like pytest or unittest.

IMPORTANT GUIDELINES:

Create a standalone Python script (test_issue.py) that:
   - Imports only the necessary modules from the repository
   - Sets up the minimum environment needed to reproduce the issue
   - Contains all logic within the script itself (no external test dependencies)
   - Runs quickly and terminates itself (no background servers or long-running processes)

CRITICAL: For each of the test cases: your test script MUST use these EXACT print statements to indicate test results for each test case:
   - Print "Issue reproduced" when the code confirms the bug exists
   - Print "Issue resolved" when the code runs without the issue
   - Print "Other issues" if there are any unexpected problems

Example format for the test script:

```python
from sqlfluff import lint

def test__rules__std_L060_raised() -> None:
    try:
        sql = "SELECT   IFNULL(NULL, 100),
            NVL(NULL,100);"
        result = lint(sql, rules=["L060"])
        assert len(result) == 2
    except:
        print("Other issues")
        return

    try:
        assert result[0]["description"] == "Use 'COALESCE' instead of 'IFNULL'."
        assert result[1]["description"] == "Use 'COALESCE' instead of 'NVL'."
        print("Issue resolved")
    except AssertionError:
        print("Issue reproduced")
        return

    return

test__rules__std_L060_raised()
```

The [result] argument of <tool: submit> should be the path to the generated test file (`test_issue.py`), like this:

<tool: submit>
test_issue.py
</tool>

Your final response should be a summary of how the test works. I've uploaded the corresponding code repository at {repo_root} and installed all the necessary dependencies. Now, the bash session has started, with the current working directory set to the repo root."""

GOLDEN_TESTGEN_SUBMISSION = """\
Review the following test which is marked as a submission:

<submission>
{test}
</submission>"""


def test_testgen_literals_golden():
    assert protocol.TESTGEN_TEMPLATE == GOLDEN_TESTGEN
    assert protocol.FEEDBACK["testgen_submit_success"] == GOLDEN_TESTGEN_SUBMISSION
    assert protocol.TEST_VERDICTS == ("Issue reproduced", "Issue resolved", "Other issues")
    prompt = protocol.testgen_prompt("the issue", repo_root="/testbed")
    assert "<issue_description>\nthe issue\n</issue_description>" in prompt
    assert prompt.endswith("code repository at /testbed and installed all the necessary dependencies. Now, the bash "
                           "session has started, with the current working directory set to the repo root.")
