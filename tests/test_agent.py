"""The loop's episode rules, as CWM's released source has them (swerl_tool.py `step`, dialog.py
`transition`): the turn limit, the budget block, the kept stop token, the token count.

Real Docker sandbox, real HTTP; the model is the scripted server, whose tokenizer /tokenize and
prompt_tokens share, so the counts below are exact.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cwm_agent import protocol
from cwm_agent.agent import Agent, Exit, Limits
from cwm_agent.models.connect import connect
from cwm_agent.testing.scripted_server import Reply, ScriptedServer, count_tokens, think

pytestmark = pytest.mark.docker

CONTEXT = 131072


SUMMARY = "Done.\n</think>\n## Issue Summary\n\nFixed."


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "repo"
    path.mkdir()
    (path / "app.py").write_text("def add(a, b):\n    return a - b\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


def episode(repo: Path, sandbox_image: str, script: list, issue: str = "add() subtracts", **limits):
    from cwm_agent.sandbox.docker import DockerSandbox

    with ScriptedServer(script, model_id="facebook/cwm") as server:
        model = connect(base_url=server.base_url)
        with DockerSandbox(sandbox_image, repo=repo, run_id="test-agent") as sandbox:
            agent = Agent(model, sandbox, limits=Limits(**limits))
            result = agent.run(issue)
        tokenize_requests = sum(1 for path, _ in server.requests if path == "/tokenize")
    return agent, result, tokenize_requests


def budgets(agent: Agent) -> list[tuple[int, int]]:
    return [(int(t), int(n)) for t, n in re.findall(r"\* Remaining turns: (\d+)\n\* Remaining tokens: (-?\d+)",
                                                     agent.transcript.text)]


FIX = "sed -i 's/a - b/a + b/' app.py && git diff > fix.patch"


def test_at_most_max_turns_minus_one_actions_run_and_the_last_reply_fails(repo, sandbox_image):
    script = [think("Fix.", "bash", FIX), think("Submit.", "submit", "fix.patch"),
              think("Look again.", "bash", "cat app.py"),
              Reply(think("Again.", "bash", "touch never-ran"), stop_token="<|eom_id|>")]
    agent, result, _ = episode(repo, sandbox_image, script, max_turns=4)
    assert result.exit is Exit.TURN_LIMIT and not result.exit.finished
    assert result.turns == 4 and result.submission is not None  # submitted, and failed all the same
    assert [t for t, _ in budgets(agent)] == [3, 2, 1]  # `Remaining turns: 0` is never shown
    # The fourth reply is in the transcript, and nothing after it: its action never ran.
    assert agent.transcript.text.endswith("touch never-ran\n</tool><|eom_id|><|eot_id|>")
    # Counted through the last reply's stop token; the <|eot_id|> after it would open the next message.
    assert agent.tokens_used == count_tokens(agent.transcript.text.removesuffix("<|eot_id|>"))


def test_a_summary_in_the_last_reply_fails(repo, sandbox_image):
    script = [think("Fix.", "bash", FIX), think("Submit.", "submit", "fix.patch"), SUMMARY]
    _, result, _ = episode(repo, sandbox_image, script, max_turns=3)
    assert result.exit is Exit.TURN_LIMIT and result.summary is None
    _, result, _ = episode(repo, sandbox_image, script, max_turns=4)
    assert result.exit is Exit.SUBMITTED and result.exit.finished and result.summary == "## Issue Summary\n\nFixed."


def test_budget_and_running_count_are_exact_with_one_count_per_observation(repo, sandbox_image):
    script = [think("Look.", "bash", "seq 1 40"), Reply(think("Eom.", "bash", "echo hi"), stop_token="<|eom_id|>"),
              Reply("I was thinking and then the tokens ran o", finish_reason="length"),
              think("Fix.", "bash", FIX), think("Submit.", "submit", "fix.patch"), SUMMARY]
    agent, result, tokenize_requests = episode(repo, sandbox_image, script, max_turns=20)
    assert result.exit is Exit.SUBMITTED
    text = agent.transcript.text
    # The generated stop token stays; <|eot_id|> follows unless it was <|eot_id|> (dialog.py `transition`).
    assert "echo hi\n</tool><|eom_id|><|eot_id|><|start_header_id|>tool: bash" in text
    assert "tokens ran o<|eot_id|><|start_header_id|>user<|end_header_id|>" in text
    assert "</tool><|eot_id|><|eot_id|>" not in text
    # The running count is exactly the server's count of the final transcript.
    assert agent.tokens_used == count_tokens(text)
    # Every Remaining tokens is CWM's: context - tokens so far (through this reply and its stop
    # token) - one count of the message with the budget placeholders unformatted.
    for match in re.finditer(r"<\|start_header_id\|>tool: (\w+)<\|end_header_id\|>\n\n(<output>\n.*?\n</output>)"
                             r"\n\n<budget>\n\* Remaining turns: \d+\n\* Remaining tokens: (-?\d+)\n</budget>",
                             text, re.DOTALL):
        tool, output, remaining = match.group(1), match.group(2), int(match.group(3))
        before = text[: match.start()]
        if before.endswith(protocol.EOM + protocol.EOT):  # the closing <|eot_id|> comes with the observation
            before = before.removesuffix(protocol.EOT)
        so_far = count_tokens(before)
        estimate = count_tokens(protocol.render_message(f"tool: {tool}", output + "\n\n" + protocol.BUDGET_TEMPLATE))
        assert remaining == CONTEXT - so_far - estimate
    # One count per observation (its estimate). Besides: connect()'s probe, the first prompt, the
    # user message's cap, the format error's message, and once each (then cached) a closing
    # <|eot_id|> and the generation prompt. Before, it was about three a turn.
    observations = len(budgets(agent))
    assert tokenize_requests == observations + 6


def test_format_errors_end_an_episode_only_when_asked(repo, sandbox_image):
    rambling = ["No tool here.\n</think>\nhmm"] * 5
    _, never, _ = episode(repo, sandbox_image, [*rambling, think("Fix.", "bash", FIX)], max_turns=6,
                          max_format_errors=0)
    assert never.exit is Exit.TURN_LIMIT and never.turns == 6  # CWM's evaluation: each just costs a turn
    _, ended, _ = episode(repo, sandbox_image, rambling, max_turns=6, max_format_errors=2)
    assert ended.exit is Exit.FORMAT_ERRORS and ended.turns == 2


def test_a_huge_issue_is_cut_from_the_left_with_the_whole_message_capped(repo, sandbox_image):
    issue = "HEAD-OF-ISSUE " + "the parser drops a token. " * 6000
    agent, result, _ = episode(repo, sandbox_image, [SUMMARY], issue=issue, max_turns=1)
    role, body = agent.transcript.messages[1]
    assert role == "user" and body.startswith("[...]") and "HEAD-OF-ISSUE" not in body
    assert body.endswith("with the current working directory set to the repo root.")
    assert count_tokens(protocol.render_message("user", body)) <= protocol.ISSUE_TOKEN_LIMIT
    assert result.exit is Exit.TURN_LIMIT
