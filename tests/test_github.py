"""GitHub without GitHub: the loopback REST stand-in (cwm_agent/testing/github_stand_in.py), a
bare git repository as origin, the scripted model and real Docker. The Action's entry point and
`--issue URL` run as users run them: the CLI in a subprocess, driven by the environment.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cwm_agent.testing.github_stand_in import GitHubStandIn
from cwm_agent.testing.scripted_server import ScriptedServer, think

pytestmark = pytest.mark.docker

TOKEN = "ghs_cwmAgentTestToken0123456789abcdef"
FIX = "sed -i 's/a - b/a + b/' calc.py && git diff > /tmp/fix.patch"
SUMMARY = "Done.\n</think>\nFixed add(); thanks @alice. This also fixes #3, resolves octo-org/other#9."
HIDDEN_TEST = "from calc import add; assert add(2, 3) == 5, add(2, 3)"


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def origin(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base", cwd=src)
    bare = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    return bare


@pytest.fixture
def workspace(tmp_path, origin) -> Path:
    """The repository as actions/checkout leaves it, its persisted credential included."""
    ws = tmp_path / "workspace"
    git("clone", "-q", str(origin), str(ws), cwd=tmp_path)
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    git("config", "--local", "http.https://github.com/.extraheader", f"AUTHORIZATION: basic {basic}", cwd=ws)
    return ws


@pytest.fixture
def hub(origin):
    with GitHubStandIn(origin=origin, token=TOKEN) as stand_in:
        stand_in.add_issue(7, "add() subtracts", "calc.add(2, 3) returns -1.\n\ncc @bob", user="alice")
        stand_in.add_comment(7, "It broke in the last release.", user="bob")
        stand_in.add_comment(7, "Thanks for the report! (automated)", user="helper-bot[bot]", user_type="Bot",
                             author_association="NONE")
        yield stand_in


def action(tmp_path: Path, hub: GitHubStandIn, workspace: Path, event: dict, base_url: str, *args: str,
           token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event))
    env = {**os.environ, "GITHUB_EVENT_NAME": "issue_comment" if "comment" in event else "issues",
           "GITHUB_EVENT_PATH": str(event_path), "GITHUB_REPOSITORY": "octo-org/calc",
           "GITHUB_WORKSPACE": str(workspace), "GITHUB_TOKEN": token, "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_RUN_ID": "4242", "GITHUB_API_URL": hub.api_url, "GITHUB_OUTPUT": str(tmp_path / "output.txt")}
    return subprocess.run([sys.executable, "-m", "cwm_agent.cli", "github", "--base-url", base_url,
                           "--out", str(tmp_path / "run"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def branches(origin: Path) -> list[str]:
    return git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=origin).split()


def test_a_labeled_issue_becomes_a_draft_pull_request(tmp_path, hub, origin, workspace):
    script = [think("Where am I?", "bash", "env | sort; cat .git/config"), think("Fix.", "bash", FIX),
              think("Submit.", "submit", "/tmp/fix.patch"), SUMMARY]
    with ScriptedServer(script, model_id="facebook/cwm") as model:
        done = action(tmp_path, hub, workspace, hub.event("issues.labeled", issue=7, label="cwm-agent"),
                      model.base_url)
        first_prompt = model.generation_requests()[0][1]["prompt"]
    assert done.returncode == 0, done.stdout + done.stderr
    # The model read the issue, the person's comment and not the bot's.
    assert "calc.add(2, 3) returns -1." in first_prompt and "It broke in the last release." in first_prompt
    assert "(automated)" not in first_prompt
    # One branch, one commit on top of main, whose tree passes the hidden test; main untouched.
    assert sorted(branches(origin)) == ["cwm-agent/issue-7", "main"]
    assert git("rev-list", "--count", "main..cwm-agent/issue-7", cwd=origin).strip() == "1"
    check = tmp_path / "check"
    git("clone", "-q", "-b", "cwm-agent/issue-7", str(origin), str(check), cwd=tmp_path)
    assert subprocess.run([sys.executable, "-c", HIDDEN_TEST], cwd=check).returncode == 0
    author = git("log", "-1", "--format=%an <%ae>|%s", cwd=check)
    assert author.strip() == "cwm-agent[bot] <cwm-agent[bot]@users.noreply.github.com>|Fix #7: add() subtracts"
    # The draft pull request, its body neutralised (no ping, nothing else closes).
    (pull,) = hub.pulls
    assert pull["draft"] and pull["head"]["ref"] == "cwm-agent/issue-7" and pull["base"]["ref"] == "main"
    assert pull["title"] == "Fix #7: add() subtracts"
    body = pull["body"]
    assert "@\u200balice" in body and "@alice" not in body
    assert "fixes `#3`" in body and "resolves `octo-org/other#9`" in body
    assert "https://github.com/octo-org/calc/actions/runs/4242" in body and "| turns | 4 |" in body
    assert "calc.py  +1 -1" in body
    # One tracking comment, created then updated with the link.
    ours = [c for c in hub.comments(7) if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and pull["html_url"] in ours[0]["body"]
    assert len(hub.requests_to("POST", "/repos/*/*/issues/7/comments")) == 1
    assert len(hub.requests_to("PATCH", "/repos/*/*/issues/comments/*")) >= 1
    assert (tmp_path / "output.txt").read_text() == f"pr_url={pull['html_url']}\n"
    report = json.loads((tmp_path / "run" / "action.json").read_text())
    assert report["api_requests"] == len(hub.requests) and report["pr_url"] == pull["html_url"]
    print("action report:", json.dumps({k: report[k] for k in ("api_requests", "timings")}),
          [f"{r.method} {r.route}" for r in hub.requests])
    # The token is nowhere the run wrote, nor in what the model saw (its `env` and .git/config).
    secret = [TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()]
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "trajectory.json" for p in written)
    for path in written:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secret), path
    trajectory = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    assert "GITHUB" not in trajectory["steps"][0]["observation"]  # the sandbox's environment is its own


@pytest.mark.parametrize("make_event", [
    lambda hub: hub.event("issues.labeled", issue=7, label="bug"),
    lambda hub: hub.event("issue_comment.created", issue=7, body="/cwm please fix", user="mallory",
                          author_association="NONE"),
    lambda hub: hub.event("issue_comment.created", issue=7, body="thanks, /cwm is great", user="bob"),
    lambda hub: hub.event("issue_comment.created", issue=8, body="/cwm", user="bob"),
    lambda hub: hub.event("issues.labeled", issue=9, label="cwm-agent"),
], ids=["other-label", "not-a-member", "not-the-command", "pull-request-comment", "closed-issue"])
def test_anything_else_touches_nothing(tmp_path, hub, origin, workspace, make_event):
    hub.add_issue(8, "a pull request", "", pull_request=True)
    hub.add_issue(9, "old", "", state="closed")
    event = make_event(hub)
    before = len(hub.requests)
    done = action(tmp_path, hub, workspace, event, "http://127.0.0.1:9/v1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to do" in done.stdout
    assert len(hub.requests) == before and branches(origin) == ["main"]


def test_a_member_command_with_instructions_reaches_the_model(tmp_path, hub, origin, workspace):
    script = [think("Fix.", "bash", FIX), think("Submit.", "submit", "/tmp/fix.patch"), SUMMARY]
    event = hub.event("issue_comment.created", issue=7, body="/cwm keep the signature unchanged", user="bob")
    with ScriptedServer(script, model_id="facebook/cwm") as model:
        done = action(tmp_path, hub, workspace, event, model.base_url, "--no-draft", "--branch-prefix", "bot/")
        first_prompt = model.generation_requests()[0][1]["prompt"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "## Instructions\n\nkeep the signature unchanged" in first_prompt
    (pull,) = hub.pulls
    assert not pull["draft"] and pull["head"]["ref"] == "bot/issue-7"


def test_an_unreachable_model_is_reported_and_nothing_is_pushed(tmp_path, hub, origin, workspace):
    hub.fail("POST", "/repos/*/*/issues/*/comments", 500)  # GitHub's hiccup: retried
    done = action(tmp_path, hub, workspace, hub.event("issues.labeled", issue=7, label="cwm-agent"),
                  "http://127.0.0.1:9/v1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(hub.requests_to("POST", "/repos/*/*/issues/7/comments")) == 2
    ours = [c for c in hub.comments(7) if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and "could not work on this issue: the model's endpoint failed" in ours[0]["body"]
    assert branches(origin) == ["main"] and not hub.pulls


def test_a_bad_token_is_one_clear_line(tmp_path, hub, origin, workspace):
    done = action(tmp_path, hub, workspace, hub.event("issues.labeled", issue=7, label="cwm-agent"),
                  "http://127.0.0.1:9/v1", token="ghs_wrong")
    assert done.returncode == 2
    assert "GitHub rejected the token" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert not [c for c in hub.comments(7) if c["user"]["login"] == "github-actions[bot]"]


def test_a_second_trigger_while_our_pull_request_is_open_comments_and_stops(tmp_path, hub, origin, workspace):
    other = tmp_path / "other"
    git("clone", "-q", str(origin), str(other), cwd=tmp_path)
    (other / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "fix", cwd=other)
    git("push", "-q", "origin", "HEAD:refs/heads/cwm-agent/issue-7", cwd=other)
    pull = hub.add_pull("Fix #7: add() subtracts", "cwm-agent/issue-7", draft=True)
    with ScriptedServer([], model_id="facebook/cwm") as model:
        done = action(tmp_path, hub, workspace, hub.event("issues.labeled", issue=7, label="cwm-agent"),
                      model.base_url)
        assert not model.generation_requests()
    assert done.returncode == 0, done.stdout + done.stderr
    ours = [c for c in hub.comments(7) if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and f"#{pull['number']} is already open" in ours[0]["body"]
    assert len(hub.pulls) == 1


def test_issue_url_for_solve_clones_and_reads_the_issue(tmp_path, hub, origin):
    script = [think("Fix.", "bash", FIX), think("Submit.", "submit", "/tmp/fix.patch"), SUMMARY]
    out = tmp_path / "out"
    env = {**os.environ, "GITHUB_API_URL": hub.api_url, "GITHUB_TOKEN": TOKEN}
    with ScriptedServer(script, model_id="facebook/cwm") as model:
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "solve", "--issue",
                               "https://github.com/octo-org/calc/issues/7", "--base-url", model.base_url,
                               "--out", str(out), "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        first_prompt = model.generation_requests()[0][1]["prompt"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "repo" / "calc.py").read_text().endswith("a - b\n")  # the clone; only the sandbox changed
    assert "# add() subtracts" in first_prompt and "## Comment by bob" in first_prompt
    assert "(automated)" not in first_prompt
    assert "+    return a + b" in (out / "patch.diff").read_text()


@pytest.mark.parametrize("setup, token, words", [
    (lambda hub: None, "", "set GITHUB_TOKEN if the repository is private"),
    (lambda hub: hub.rate_limit(times=5), TOKEN, "rate limit is exhausted"),
    (lambda hub: None, "ghs_wrong", "GitHub rejected the token"),
], ids=["private-without-token", "rate-limited", "bad-token"])
def test_issue_url_errors_are_one_line_and_exit_2(tmp_path, origin, setup, token, words):
    with GitHubStandIn(origin=origin, token=TOKEN, private=True) as hub:
        hub.add_issue(7, "add() subtracts", "body")
        setup(hub)
        env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}
        env.update({"GITHUB_API_URL": hub.api_url, **({"GITHUB_TOKEN": token} if token else {})})
        done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "solve", "--issue",
                               "https://github.com/octo-org/calc/issues/7", "--base-url", "http://127.0.0.1:9/v1",
                               "--out", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # one line (rich may wrap a long one)


def test_an_eval_row_may_name_its_issue_by_url(hub, monkeypatch):
    from cwm_agent.bench import attempts
    from cwm_agent.github.issues import issue_statement

    monkeypatch.setenv("GITHUB_API_URL", hub.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert attempts.issue_statement is issue_statement  # what run_attempt gives the agent
    text = issue_statement("https://github.com/octo-org/calc/issues/7")
    assert text.startswith("# add() subtracts\n\ncalc.add(2, 3) returns -1.") and "It broke" in text
    again = issue_statement("https://github.com/octo-org/calc/issues/7")
    assert again == text and len(hub.requests_to("GET", "/repos/*/*/issues/7")) == 1  # fetched once per run
    assert issue_statement("Fix https://github.com/octo-org/calc/issues/7 please") == (
        "Fix https://github.com/octo-org/calc/issues/7 please")  # only a bare URL is fetched
