"""`cwm-agent github`: the GitHub Action's entry point. An issue in, a draft pull request out.

Driven by the Actions environment (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_REPOSITORY,
GITHUB_WORKSPACE, GITHUB_TOKEN, GITHUB_SERVER_URL, GITHUB_RUN_ID, GITHUB_API_URL):

1. Triggers: the issue got the label (default `cwm-agent`), or a comment starting with the
   command (default `/cwm`, instructions may follow) from an OWNER, MEMBER or COLLABORATOR.
   Anything else (other labels, other people, pull-request comments, closed or locked issues)
   logs one line, touches nothing, exits 0.
2. An open pull request of ours for the issue already: a comment saying so, exit 0.
3. One tracking comment, updated as the work goes; the episode runs in a sandbox copy of the
   workspace (the token never enters it, nor the trajectory, nor the model's context).
4. A finished episode whose patch applies: branch `cwm-agent/issue-N` (`-2`, `-3`... when
   taken; never the default branch), one commit, pushed to origin; a draft pull request
   `Fix #N: TITLE` with the summary, diffstat, turns, tokens, time and the run's link; the
   tracking comment points at it, and `pr_url` goes to GITHUB_OUTPUT. Exit 0.
   Any other end: the tracking comment says what happened; no branch, no PR. Exit 1.
   Broken set-up (environment, GitHub's API, the model's endpoint, Docker): exit 2.

Everything the model wrote is neutralised before it is posted: no @-mentions that ping
people, no closing keywords that would close other issues.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwm_agent import episode
from cwm_agent.agent import EpisodeResult, Events
from cwm_agent.config import Settings
from cwm_agent.github.api import GitHubError, call, client, server_url_from
from cwm_agent.github.issues import Issue, IssueRef, fetch_issue, token_config
from cwm_agent.models.client import ModelError
from cwm_agent.sandbox.base import SandboxError
from cwm_agent.trajectory import Step

LABEL, COMMAND, BRANCH_PREFIX = "cwm-agent", "/cwm", "cwm-agent/"
AUTHOR = "cwm-agent[bot] <cwm-agent[bot]@users.noreply.github.com>"
TRUSTED = ("OWNER", "MEMBER", "COLLABORATOR")
MAX_BRANCH_TRIES = 20
PROGRESS_EVERY_S = 60.0  # the tracking comment's progress updates, at most this often
EXIT_OK, EXIT_NO_PR, EXIT_SETUP = 0, 1, 2
SIGNATURE = "🤖 **cwm-agent**"


class ActionError(Exception):
    """The Action cannot run (its environment, its options): one line, exit 2."""


@dataclass
class ActionOptions:
    label: str = LABEL
    command: str = COMMAND
    draft: bool = True
    branch_prefix: str = BRANCH_PREFIX
    author: str = AUTHOR
    out: Path | None = None


@dataclass
class ActionEnv:
    event_name: str
    event: dict[str, Any]
    owner: str
    repo: str
    workspace: Path
    token: str | None
    server_url: str
    api_url: str | None
    run_id: str | None
    output_file: Path | None = None
    runner_temp: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ActionEnv:
        env = os.environ if environ is None else environ
        missing = [name for name in ("GITHUB_EVENT_NAME", "GITHUB_EVENT_PATH", "GITHUB_REPOSITORY",
                                     "GITHUB_WORKSPACE") if not env.get(name)]
        if missing:
            raise ActionError(f"not in a GitHub Actions job: {', '.join(missing)} unset (run `cwm-agent github` "
                              "from the action, or use `cwm-agent solve --issue URL` by hand)")
        path = Path(env["GITHUB_EVENT_PATH"])
        try:
            event = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ActionError(f"cannot read the event payload {path}: {exc}") from None
        owner, _, repo = env["GITHUB_REPOSITORY"].partition("/")
        if not owner or not repo:
            raise ActionError(f"GITHUB_REPOSITORY is {env['GITHUB_REPOSITORY']!r}, not OWNER/REPO")
        workspace = Path(env["GITHUB_WORKSPACE"])
        if not (workspace / ".git").exists():
            raise ActionError(f"GITHUB_WORKSPACE {workspace} is not a git checkout: add `actions/checkout` "
                              "before this action")
        return cls(env["GITHUB_EVENT_NAME"], event, owner, repo, workspace,
                   env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None, server_url_from(env),
                   env.get("GITHUB_API_URL"), env.get("GITHUB_RUN_ID"),
                   Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
                   Path(env["RUNNER_TEMP"]) if env.get("RUNNER_TEMP") else None)

    @property
    def run_url(self) -> str | None:
        return f"{self.server_url}/{self.owner}/{self.repo}/actions/runs/{self.run_id}" if self.run_id else None


@dataclass
class Trigger:
    number: int
    by: str
    instructions: str | None = None


def triggered(env: ActionEnv, opts: ActionOptions) -> Trigger | str:
    """The issue to answer, or why this event is not one to answer."""
    event, issue = env.event, env.event.get("issue") or {}
    number = issue.get("number")
    if env.event_name == "issues":
        label = (event.get("label") or {}).get("name")
        if event.get("action") != "labeled":
            return f"issues event {event.get('action')!r}: only 'labeled' starts cwm-agent"
        if label != opts.label:
            return f"label {label!r} is not {opts.label!r}"
        by = (event.get("sender") or {}).get("login", "?")
        instructions = None
    elif env.event_name == "issue_comment":
        comment = event.get("comment") or {}
        body = (comment.get("body") or "").strip()
        by = (comment.get("user") or {}).get("login", "?")
        if event.get("action") != "created":
            return f"comment {event.get('action')!r}: only new comments start cwm-agent"
        if not (body == opts.command or body.startswith(opts.command + " ") or body.startswith(opts.command + "\n")):
            return f"the comment does not start with {opts.command}"
        if comment.get("author_association") not in TRUSTED:
            return (f"{by} is {comment.get('author_association')}: only an owner, member or collaborator "
                    f"can start cwm-agent")
        if issue.get("pull_request"):
            return "a comment on a pull request: cwm-agent answers issues"
        instructions = body[len(opts.command):].strip() or None
    else:
        return f"event {env.event_name!r}: cwm-agent answers 'issues' (labeled) and 'issue_comment' (created)"
    if not isinstance(number, int):
        return "the event names no issue"
    if issue.get("state") != "open":
        return f"issue #{number} is {issue.get('state')}"
    if issue.get("locked"):
        return f"issue #{number} is locked"
    return Trigger(number, by, instructions)


# --- what is posted ---------------------------------------------------------------------------

_MENTION = re.compile(r"(?<![\w@/`.+-])@(?=[A-Za-z0-9])")
_CLOSING = re.compile(r"\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(\s*:?\s*)"
                      r"((?:[\w.-]+/[\w.-]+)?#\d+|https?://[^\s)\]]+/(?:issues|pull)/\d+)", re.IGNORECASE)


def neutralise(text: str) -> str:
    """Text the model wrote, safe to post: @-mentions broken with a zero-width space (no ping),
    issue references after closing keywords put in code spans (nothing closes)."""
    text = _MENTION.sub("@\u200b", text)
    return _CLOSING.sub(lambda m: f"{m.group(1)}{m.group(2)}`{m.group(3)}`", text)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --- the run ----------------------------------------------------------------------------------

class _Progress(Events):
    """Action log lines per turn; the tracking comment's progress, at most every minute."""

    def __init__(self, log: Callable[[str], None], update: Callable[[str], None], max_turns: int):
        self.log, self.update, self.max_turns = log, update, max_turns
        self._last = time.monotonic()

    def on_action(self, step: Step) -> None:
        body = " ".join(step.action["body"].split())
        self.log(f"turn {step.index}: {step.action['tool']}: {body[:120]}")

    def on_step(self, step: Step) -> None:
        if step.format_error:
            self.log(f"turn {step.index}: format error")
        if time.monotonic() - self._last >= PROGRESS_EVERY_S and step.action:
            self._last = time.monotonic()
            self.update(f"turn {step.index} of at most {self.max_turns}; last action: `{step.action['tool']}`")


@dataclass
class _Run:
    env: ActionEnv
    opts: ActionOptions
    settings: Settings
    log: Callable[[str], None]
    gh: Any = None
    requests: int = 0
    github_s: float = 0.0
    tracking_id: int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def api(self, what: str, request: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return call(what, request, token=bool(self.env.token))
        finally:
            self.github_s += time.perf_counter() - t0

    def comment(self, number: int, body: str) -> None:
        """The tracking comment: created once, then edited."""
        owner, repo = self.env.owner, self.env.repo
        if self.tracking_id is None:
            made = self.api("posting the tracking comment",
                            lambda: self.gh.rest.issues.create_comment(owner, repo, number, body=body).parsed_data)
            self.tracking_id = made.id
        else:
            self.api("updating the tracking comment",
                     lambda: self.gh.rest.issues.update_comment(owner, repo, self.tracking_id, body=body))

    def count_request(self, request: Any) -> None:
        self.requests += 1


def run_action(env: ActionEnv, opts: ActionOptions, settings: Settings, *,
               log: Callable[[str], None] = print) -> int:
    started = time.monotonic()
    trigger = triggered(env, opts)
    if isinstance(trigger, str):
        log(f"cwm-agent: nothing to do: {trigger}")
        return EXIT_OK
    number = trigger.number
    out = (opts.out or (env.runner_temp / "cwm-agent" if env.runner_temp else Path("cwm-runs") / f"github-issue-{number}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(env, opts, settings, log)
    run.gh = client(env.token, env.api_url, on_request=run.count_request)
    log(f"cwm-agent: issue #{number} (started by {trigger.by}); run folder {out}")
    code, setup_s, episode_s = EXIT_SETUP, 0.0, 0.0
    try:
        existing = _open_pull(run, number)
        if existing is not None:
            run.comment(number, f"{SIGNATURE}: pull request #{existing.number} is already open for this issue "
                                f"({existing.html_url}). Close it to ask for a new attempt.")
            log(f"cwm-agent: #{existing.number} is already open for issue #{number}; stopping")
            return EXIT_OK
        link = f" ([run]({env.run_url}))" if env.run_url else ""
        run.comment(number, f"{SIGNATURE} is working on this issue{link}. This comment is updated as it goes.")
        ref = IssueRef(env.owner, env.repo, number)
        issue = run.api(f"reading issue #{number}", lambda: fetch_issue(ref, run.gh, token=env.token or ""))
        base = run.api("reading the repository", lambda: run.gh.rest.repos.get(env.owner, env.repo).parsed_data)
        setup_s = time.monotonic() - started
        t_episode = time.monotonic()
        try:
            result, patch, applies, stats = _episode(run, issue, trigger, out)
        except (ModelError, SandboxError) as exc:
            kind = "the model's endpoint" if isinstance(exc, ModelError) else "the sandbox"
            run.comment(number, f"{SIGNATURE} could not work on this issue: {kind} failed: "
                                f"{neutralise(str(exc))}{link}")
            log(f"cwm-agent: {kind} failed: {exc}")
            return EXIT_SETUP
        finally:
            episode_s = time.monotonic() - t_episode
        if not (result.exit.finished and patch and applies):
            why = (f"the episode ended with `{result.exit.value}` ({neutralise(result.detail)})"
                   if not result.exit.finished else
                   "the submitted patch does not apply to the base" if patch else "no patch was submitted")
            run.comment(number, f"{SIGNATURE} did not open a pull request: {why}.{link}")
            log(f"cwm-agent: no pull request: {why}")
            code = EXIT_NO_PR
            return code
        branch = _push(run, number, issue, patch, base.default_branch, out)
        pull = _pull_request(run, issue, branch, base.default_branch, result, stats, time.monotonic() - started)
        run.comment(number, f"{SIGNATURE} opened draft pull request #{pull.number}: {pull.html_url}{link}"
                    if opts.draft else f"{SIGNATURE} opened pull request #{pull.number}: {pull.html_url}{link}")
        run.report["pr_url"] = pull.html_url
        if env.output_file:
            with env.output_file.open("a", encoding="utf-8") as fh:
                fh.write(f"pr_url={pull.html_url}\n")
        log(f"cwm-agent: opened {pull.html_url} from branch {branch}")
        code = EXIT_OK
        return code
    except GitHubError as exc:
        log(f"cwm-agent: {exc}")
        if run.tracking_id is not None and exc.status not in (401, 403):
            try:
                run.comment(number, f"{SIGNATURE} stopped: {neutralise(str(exc))}")
            except GitHubError:
                pass
        return EXIT_SETUP
    finally:
        total = time.monotonic() - started
        run.report.update(issue=number, exit_code=code, api_requests=run.requests,
                          timings={"setup": round(setup_s, 3), "episode": round(episode_s, 3),
                                   "github": round(run.github_s, 3), "total": round(total, 3)})
        (out / "action.json").write_text(json.dumps(run.report, indent=2) + "\n", encoding="utf-8")


def _open_pull(run: _Run, number: int) -> Any:
    """Our open pull request for the issue, if any (by its branch name)."""
    env, stem = run.env, f"{run.opts.branch_prefix}issue-{number}"
    pulls = run.api("listing open pull requests",
                    lambda: list(run.gh.rest.paginate(run.gh.rest.pulls.list, owner=env.owner, repo=env.repo,
                                                 state="open", per_page=100)))
    for pull in pulls:
        ref = pull.head.ref
        if ref == stem or re.fullmatch(re.escape(stem) + r"-\d+", ref):
            return pull
    return None


def _episode(run: _Run, issue: Issue, trigger: Trigger, out: Path):
    from cwm_agent.sandbox import patch as patch_mod

    settings, number = run.settings, issue.ref.number
    model = episode.connect_model(settings)
    text = issue.text(trigger.instructions)
    progress = _Progress(run.log, lambda line: _progress(run, number, line), settings.max_turns)
    with episode.open_episode(model, settings, repo=run.env.workspace, run_id=f"gh-{uuid.uuid4().hex[:10]}",
                              trajectory_path=out / "trajectory.json",
                              task={"label": issue.ref.slug, "issue": text, "url": issue.html_url},
                              events=progress) as ep:
        result: EpisodeResult = ep.agent.run(text)
        patch = result.submission or ""
        applies = False
        if patch and result.exit.finished:
            try:
                applies = bool(patch_mod.check_applies(patch, ep.sandbox))
            except Exception:
                applies = False
    (out / "patch.diff").write_bytes(patch.encode("utf-8", "surrogateescape"))
    stats = patch_mod.diffstat(patch) if patch and applies else []
    run.report.update(exit=result.exit.value, detail=result.detail, turns=result.turns, tokens=result.tokens,
                      episode_timings=result.timings, patch_applies=applies)
    run.log(f"cwm-agent: episode ended: {result.exit.value} after {result.turns} turns")
    return result, patch, applies, stats


def _progress(run: _Run, number: int, line: str) -> None:
    link = f" ([run]({run.env.run_url}))" if run.env.run_url else ""
    try:
        run.comment(number, f"{SIGNATURE} is working on this issue{link}: {line}.")
    except GitHubError as exc:  # progress is a courtesy: the run goes on
        run.log(f"cwm-agent: could not update the tracking comment: {exc}")


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    if done.returncode != 0:
        raise GitHubError(f"git {args[0]} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def _push(run: _Run, number: int, issue: Issue, patch: str, default_branch: str, out: Path) -> str:
    """One commit with the patch on a fresh branch, pushed to origin; returns the branch."""
    from cwm_agent.sandbox import patch as patch_mod

    workspace, opts = run.env.workspace, run.opts
    taken = {line.split("refs/heads/", 1)[1] for line in
             _git(["ls-remote", "--heads", "origin"], workspace).splitlines() if "refs/heads/" in line}
    stem = f"{opts.branch_prefix}issue-{number}"
    names = [stem] + [f"{stem}-{k}" for k in range(2, MAX_BRANCH_TRIES + 1)]
    branch = next((name for name in names if name not in taken), None)
    if branch is None:
        raise GitHubError(f"branches {stem} to {names[-1]} are all taken on origin; delete old ones")
    if branch in (default_branch, "main", "master"):
        raise GitHubError(f"refusing to push to {branch}: a run never pushes to the default branch")
    name, _, email = opts.author.partition("<")
    who = {"GIT_AUTHOR_NAME": name.strip() or "cwm-agent", "GIT_AUTHOR_EMAIL": email.rstrip(">").strip(),
           "GIT_COMMITTER_NAME": name.strip() or "cwm-agent", "GIT_COMMITTER_EMAIL": email.rstrip(">").strip()}
    message = f"Fix #{number}: {issue.title}\n\nWritten by cwm-agent (CWM) for issue #{number}."
    tree = Path(tempfile.mkdtemp(prefix="cwm-agent-pr-"))
    _git(["worktree", "add", "--detach", "--quiet", str(tree), "HEAD"], workspace)
    try:
        patch_mod.apply_to_repo(patch, tree)
        _git(["add", "-A"], tree)
        _git(["-c", "core.hooksPath=/dev/null", "commit", "--quiet", "--no-verify", "-m", message], tree, who)
        _git(["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], tree, token_config(run.env.token) if run.env.token else None)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=workspace, capture_output=True)
    run.report["branch"] = branch
    return branch


def _pull_request(run: _Run, issue: Issue, branch: str, base: str, result: EpisodeResult,
                  stats: list[tuple[str, int, int]], elapsed: float) -> Any:
    env, number = run.env, issue.ref.number
    added, removed = sum(a for _, a, _ in stats), sum(r for _, _, r in stats)
    t = result.timings
    lines = [neutralise(result.summary or "_The model gave no summary._"), "", "---", "",
             f"Issue #{number}. Written by [cwm-agent](https://github.com/facebookresearch/cwm) with CWM"
             + (f"; the trajectory is attached to [this run]({env.run_url}) as an artifact." if env.run_url else "."),
             "", "| | |", "|---|---|",
             f"| files | {len(stats)} changed, +{added} -{removed} |",
             f"| turns | {result.turns} |", f"| tokens | {result.tokens:,} |",
             f"| time | {_duration(elapsed)} (model {_duration(t.get('model', 0))}, "
             f"sandbox {_duration(t.get('command', 0))}) |", "", "```text"]
    lines += [f"{path}  +{a} -{r}" for path, a, r in stats] + ["```", ""]
    title = f"Fix #{number}: {issue.title}"
    return run.api("opening the pull request", lambda: run.gh.rest.pulls.create(
        env.owner, env.repo, title=title, head=branch, base=base, body="\n".join(lines),
        draft=run.opts.draft).parsed_data)
