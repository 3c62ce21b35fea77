"""`cwm-agent chat` in a real terminal: tmux runs it against the scripted server and real Docker,
send-keys types at its prompts, capture-pane reads the screen, and the requests the server got
show exactly what CWM was told.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwm_agent import protocol
from cwm_agent.protocol import Action
from cwm_agent.testing.scripted_server import Reply, ScriptedServer, think

from _tmux import Terminal

pytestmark = pytest.mark.docker

SUMMARY = "Done.\n</think>\n## Summary\n\nFixed add()."
FIX = "sed -i 's/a - b/a + b/' app.py && git diff > /tmp/fix.patch"
PROMPT = r"run\? \[Y/n/e/a\]"


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("def add(a, b):\n    return a - b\n")
    (path / "notes.txt").write_text("keep me\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


@pytest.fixture
def containers(docker_client, sandbox_image):
    """Fails the test when a chat left a container of ours behind."""
    from cwm_agent.sandbox.docker import our_containers

    before = {c.id for c in our_containers(docker_client)}
    yield docker_client
    deadline = time.monotonic() + 10
    while (left := [c for c in our_containers(docker_client) if c.id not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"containers left behind: {[c.short_id for c in left]}"


def chat(tmp_path: Path, server: ScriptedServer, *args: str) -> Terminal:
    argv = [sys.executable, "-m", "cwm_agent.cli", "chat", "--base-url", server.base_url, *args]
    return Terminal(argv, cwd=tmp_path)


def prompts(server: ScriptedServer) -> list[str]:
    return [body["prompt"] for _, body in server.generation_requests()]


def quit_at_the_end(term: Terminal, server: ScriptedServer) -> tuple[str, list[str]]:
    """At the prompt after the episode: the screen, then /quit (exit 0), then what CWM was sent."""
    term.wait_for(r"you >")
    screen = term.screen()
    term.line("/quit")
    assert term.wait_exit() == 0
    return screen, prompts(server)


def user_messages(prompt: str) -> list[str]:
    return re.findall(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", prompt, re.DOTALL)


def steps(run: Path) -> list[dict]:
    return json.loads((run / "trajectory.json").read_text())["steps"]


def test_confirm_reject_edit_allow(tmp_path, repo, containers):
    script = [think("Look.", "bash", "cat app.py"),
              think("Grep.", "bash", "grep -n return app.py"),
              think("List.", "bash", "ls -la"),
              think("List again.", "bash", "ls app.py"),
              think("Echo.", "bash", "echo hi"),
              think("Fix.", "bash", FIX),
              think("Submit.", "submit", "/tmp/fix.patch"), SUMMARY]
    run = tmp_path / "run"
    with ScriptedServer(script, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--repo", str(repo), "--issue", "add() subtracts", "--out", str(run)) as term:
        term.wait_for(PROMPT, timeout=120)
        term.line("n use grep instead")  # reject, with a message for the model
        term.wait_for(PROMPT, count=2)
        term.send("e")
        term.send("Enter")
        term.wait_for(r"edit bash: grep -n return app.py")  # the command, pre-filled for editing
        term.send("C-u", "grep -c return app.py", "Enter")
        term.wait_for(PROMPT, count=3)
        term.line("a")  # run `ls -la` and allow `ls ...` from now on
        term.wait_for(r"allowed: ls")  # `ls app.py` ran without asking
        term.wait_for(PROMPT, count=4)
        term.line("/allowed")
        term.wait_for(r"allowed first words: ls")
        term.wait_for(PROMPT, count=5)  # asked again after the command
        term.line("y")
        term.wait_for(PROMPT, count=6)
        term.line("")
        term.wait_for(PROMPT, count=7)
        term.line("y")
        screen, sent = quit_at_the_end(term, server)
    assert "CWM submitted and summarised" in screen and screen.count("run? [Y/n/e/a]") == 7
    # The rejection, in the request after it: a user message, nothing ran.
    assert protocol.human_message("rejected_saying", tool="bash", message="use grep instead") == user_messages(sent[1])[-1]
    # The edit: the model is told what ran instead, and reads its output (one match) and budget.
    edited = user_messages(sent[2])[-1]
    assert edited.startswith(protocol.human_message("edited", tool="bash", action=Action("bash", "grep -c return app.py")))
    assert "<output>\n1\n\n</output>" in edited and "* Remaining turns: 126" in edited
    recorded = steps(run)
    assert recorded[0]["human"] == {"rejected": "use grep instead"} and recorded[0]["observation"] is None
    assert recorded[1]["human"] == {"replaced_with": {"tool": "bash", "body": "grep -c return app.py"}}
    assert recorded[1]["action"]["body"] == "grep -n return app.py"  # what the model proposed stays on record
    assert "app.py" in recorded[3]["observation"]  # the allowed command ran
    # The session file holds the measured time from the reply to the action on screen.
    saved = json.loads((run / "chat.json").read_text())
    assert saved["allowed"] == ["ls"] and len(saved["display_ms"]) == 7
    print("display ms:", saved["display_ms"])
    assert (repo / "app.py").read_text().endswith("a - b\n")  # the host repository is untouched


def test_undo_apply_and_a_follow_up(tmp_path, repo, containers):
    script = [think("Fix.", "bash", "sed -i 's/a - b/a + b/' app.py"),
              think("Tidy.", "bash", "rm notes.txt && mkdir -p new/dir && echo x > new/dir/extra.txt"),
              think("Check.", "bash", "ls; ls new 2>&1; cat app.py"),
              think("Patch.", "bash", "git diff > /tmp/fix.patch"),
              think("Submit.", "submit", "/tmp/fix.patch"), SUMMARY,
              think("Docstring.", "bash", "sed -i '1a\\    \"\"\"Add.\"\"\"' app.py && git diff > /tmp/fix.patch"),
              "Added.\n</think>\nAdded the docstring."]
    run = tmp_path / "run"
    with ScriptedServer(script, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--repo", str(repo), "--issue", "add() subtracts", "--out", str(run)) as term:
        term.wait_for(PROMPT, timeout=120)
        term.line("y")
        term.wait_for(PROMPT, count=2)
        term.line("y")
        term.wait_for(PROMPT, count=3)
        term.line("/undo")  # turn 2's changes go; turn 1's fix stays
        term.wait_for(r"undid turn 2 \(bash\)")
        term.wait_for(PROMPT, count=4)  # asked again after the command
        term.line("y")
        screen = term.wait_for(PROMPT, count=5)
        after_check = screen[screen.rindex("ls; ls new"):]
        assert "notes.txt" in after_check and "No such file or directory" in after_check and "a + b" in after_check
        term.line("y")
        term.wait_for(PROMPT, count=6)
        term.line("y")
        term.wait_for(r"you >")
        assert (repo / "app.py").read_text().endswith("a - b\n")  # nothing reached the host yet
        term.line("/diff")
        term.wait_for(r"^\+    return a \+ b")
        term.line("/save")
        term.wait_for(r"saved: .*patch.diff")
        assert "+    return a + b" in (run / "patch.diff").read_text()
        term.line("/apply")
        term.wait_for(r"apply these changes to .*\? \[y/N\]")
        term.line("")  # the default is no
        term.wait_for(r"not applied")
        assert (repo / "app.py").read_text().endswith("a - b\n")
        term.line("/apply")
        term.wait_for(r"\[y/N\]", count=2)
        term.line("y")
        term.wait_for(r"applied to ")
        assert (repo / "app.py").read_text().endswith("a + b\n") and (repo / "notes.txt").exists()
        term.line("also add a docstring")  # a follow-up: the episode goes on in the same sandbox
        term.wait_for(PROMPT, count=7)
        term.line("y")
        term.wait_for(r"Added the docstring")
        term.wait_for(r"you >", count=2)
        term.line("/quit")
        assert term.wait_exit() == 0
        sent = prompts(server)
    undone = protocol.human_message("undone", turn="2", tool="bash", paths="new/dir/extra.txt, notes.txt")
    assert undone in user_messages(sent[3])  # told after turn 3's result
    assert user_messages(sent[6])[-1] == "also add a docstring"
    assert sent[6].startswith(sent[5])  # append-only: the follow-up continues the same transcript
    assert '"""Add."""' not in (repo / "app.py").read_text()  # only /apply reaches the host


def test_human_mode_then_yolo(tmp_path, repo, containers):
    script = [think("Read it.", "bash", "cat mine.txt"),
              think("Stage.", "bash", "git add -A && git diff --cached > /tmp/p.diff"),
              think("Submit.", "submit", "/tmp/p.diff"), SUMMARY]
    run = tmp_path / "run"
    with ScriptedServer(script, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--repo", str(repo), "--out", str(run), "--mode", "human") as term:
        term.wait_for(r"What should CWM do\?", timeout=120)  # no --issue: asked for
        term.line("look at mine.txt")
        term.wait_for(r"you \$")
        term.line("echo typed-by-me > mine.txt; echo done-typing")
        term.wait_for(r"^done-typing", count=1)
        assert not server.generation_requests()  # the model waits while the person holds the shell
        term.line("/mode yolo")
        screen, sent = quit_at_the_end(term, server)
    assert "run? [Y/n/e/a]" not in screen  # yolo: nothing asked
    typed = protocol.human_message("typed", action=Action("bash", "echo typed-by-me > mine.txt; echo done-typing"),
                                   output=protocol.OUTPUT_TEMPLATE.format(feedback="done-typing\n"))
    assert user_messages(sent[0])[-1] == typed
    assert "<output>\ntyped-by-me\n\n</output>" in sent[1]  # CWM's own command saw the file
    assert steps(run)[0]["human"] == {"typed": True}
    assert "look at mine.txt" in user_messages(sent[0])[0]  # the task typed at the prompt is the issue


def test_ctrl_c_stops_a_command_or_the_model_and_a_second_one_leaves(tmp_path, repo, containers):
    script = [think("Wait.", "bash", "sleep 1000"),
              Reply(think("Slow.", "bash", "echo never"), delay=0.5),
              think("Echo.", "bash", "echo fine"),
              think("Wait again.", "bash", "sleep 1000")]
    run = tmp_path / "run"
    with ScriptedServer(script, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--repo", str(repo), "--issue", "x", "--out", str(run)) as term:
        term.wait_for(PROMPT, timeout=120)
        term.line("y")
        time.sleep(1.5)
        term.send("C-c")  # stops `sleep 1000`
        term.wait_for(r"stopped the command; message for CWM")
        term.line("do not sleep")
        term.wait_for(r"model writing")
        term.send("C-c")  # stops the slow reply mid-stream
        term.wait_for(r"stopped the model; message for CWM")
        term.line("be quick")
        term.wait_for(PROMPT, count=2)
        term.line("y")
        term.wait_for(PROMPT, count=3)
        term.line("y")
        time.sleep(1.0)
        term.send("C-c")
        term.wait_for(r"stopped the command", count=2)
        term.send("C-c")  # a second Ctrl-C at the prompt leaves
        assert term.wait_exit(timeout=60) == 130
        screen = term.screen()
        sent = prompts(server)
    assert f"resume with: cwm-agent chat --resume {run}" in screen
    interrupted = protocol.HUMAN["interrupted_command"]
    assert f"<output>\n{interrupted}\n</output>" in sent[1] and user_messages(sent[1])[-1] == "do not sleep"
    # The stopped reply is not in the transcript; the message is.
    assert "echo never" not in sent[2] and user_messages(sent[2])[-1] == "be quick"
    assert sent[2].startswith(sent[1].removesuffix(protocol.generation_prompt()))
    kinds = [s.get("human") for s in steps(run)]
    assert kinds[0] == {"interrupted": "command", "message": "do not sleep"}
    assert kinds[1] == {"interrupted": "model", "message": "be quick"}
    # The steps' prompt deltas still add up to the transcript: no generation prompt for the lost reply.
    recorded = steps(run)
    assert not recorded[1]["prompt_delta"].endswith(protocol.generation_prompt())
    assert recorded[2]["prompt_delta"] == protocol.render_message("user", "be quick") + protocol.generation_prompt()
    assert sent[2].endswith(recorded[2]["prompt_delta"])


def test_kill_9_then_resume(tmp_path, repo, containers, docker_client):
    from cwm_agent.sandbox.docker import our_containers

    first = [think("Fix.", "bash", "sed -i 's/a - b/a + b/' app.py"),
             think("New file.", "bash", "echo fresh > new.txt && cd /tmp && export SECRET_VAR=1"),
             think("Wait.", "bash", "sleep 1000")]
    run = tmp_path / "run"
    before = {c.id for c in our_containers(docker_client)}
    with ScriptedServer(first, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--repo", str(repo), "--issue", "add() subtracts", "--out", str(run)) as term:
        for n in (1, 2, 3):
            term.wait_for(PROMPT, timeout=120, count=n)
            term.line("y")
        time.sleep(1.0)
        term.kill9()
        term.wait_exit()
        old_prompt = prompts(server)[-1]
    # The killed chat's container goes by itself, its `sleep 1000` notwithstanding (the keeper: issue 19).
    deadline = time.monotonic() + 10
    while [c for c in our_containers(docker_client) if c.id not in before] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in our_containers(docker_client) if c.id not in before]
    second = [think("Check.", "bash", "pwd; echo \"[$SECRET_VAR]\"; cat app.py new.txt"),
              think("Patch.", "bash", "git add -A && git diff --cached > /tmp/p.diff"),
              think("Submit.", "submit", "/tmp/p.diff"), SUMMARY]
    with ScriptedServer(second, model_id="facebook/cwm") as server, \
            chat(tmp_path, server, "--resume", str(run)) as term:
        term.wait_for(r"resumed at turn 2", timeout=120)
        for n in (1, 2, 3):
            term.wait_for(PROMPT, count=n)
            term.line("y")
        screen, sent = quit_at_the_end(term, server)
    check = screen[screen.rindex("cat app.py new.txt"):]
    assert "/testbed\n[]" in check and "a + b" in check and "fresh" in check  # files back, shell fresh
    # The transcript continues exactly where the last saved step left it, then the restart notice.
    assert sent[0].startswith(old_prompt.removesuffix(protocol.generation_prompt()))
    assert user_messages(sent[0])[-1] == protocol.HUMAN["resumed"]
    trajectory = json.loads((run / "trajectory.json").read_text())
    assert [s["index"] for s in trajectory["steps"]][:2] == [1, 2] and trajectory["resumed"]
    assert trajectory["exit"] == "submitted"
