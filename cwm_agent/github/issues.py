"""Issues by URL: `--issue https://github.com/OWNER/REPO/issues/N` for solve, chat and eval rows.

The issue's title, body and the comments of people (bots left out) become the task text; the
repository can be cloned at its default branch (or a ref) when no --repo is given.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cwm_agent.github.api import GitHubError, call, client, server_url_from, token_from

_PATH = re.compile(r"^/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)/issues/(\d+)/?$")


@dataclass(frozen=True)
class IssueRef:
    owner: str
    repo: str
    number: int

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.repo}#{self.number}"


@dataclass
class Issue:
    ref: IssueRef
    title: str
    body: str
    state: str
    locked: bool
    html_url: str
    comments: list[tuple[str, str]] = field(default_factory=list)  # (login, body) of people, oldest first
    is_pull_request: bool = False

    def text(self, instructions: str | None = None) -> str:
        """The task as the model reads it: title, body, the people's comments, then instructions."""
        parts = [f"# {self.title}", self.body.strip() or "(no description)"]
        for login, body in self.comments:
            parts.append(f"## Comment by {login}\n\n{body.strip()}")
        if instructions and instructions.strip():
            parts.append(f"## Instructions\n\n{instructions.strip()}")
        return "\n\n".join(parts) + "\n"


def parse_issue_url(text: str, server_url: str | None = None) -> IssueRef | None:
    """An issue URL on github.com or on GITHUB_SERVER_URL's host, else None."""
    text = text.strip()
    if "\n" in text or " " in text or not text.startswith(("https://", "http://")):
        return None
    url = urlparse(text)
    hosts = {"github.com", "www.github.com", urlparse(server_url or server_url_from()).netloc}
    match = _PATH.match(url.path)
    if url.netloc not in hosts or not match or url.query:
        return None
    return IssueRef(match.group(1), match.group(2), int(match.group(3)))


def is_bot(user: Any) -> bool:
    return user is None or getattr(user, "type", "") == "Bot" or str(getattr(user, "login", "")).endswith("[bot]")


def fetch_issue(ref: IssueRef, gh: Any = None, *, token: str | None = None) -> Issue:
    """The issue and its people's comments, through the REST API."""
    token = token if token is not None else token_from()
    gh = gh or client(token)
    data = call(f"reading issue {ref.slug}",
                lambda: gh.rest.issues.get(ref.owner, ref.repo, ref.number).parsed_data, token=bool(token))
    comments = call(f"reading the comments of {ref.slug}",
                    lambda: list(gh.rest.paginate(gh.rest.issues.list_comments, owner=ref.owner, repo=ref.repo,
                                             issue_number=ref.number, per_page=100)), token=bool(token))
    people = [(c.user.login, c.body or "") for c in comments if not is_bot(c.user) and (c.body or "").strip()]
    return Issue(ref, data.title, data.body or "", data.state, bool(data.locked), data.html_url, people,
                 is_pull_request=bool(getattr(data, "pull_request", None)))


def repository(ref: IssueRef, gh: Any = None, *, token: str | None = None) -> Any:
    token = token if token is not None else token_from()
    gh = gh or client(token)
    return call(f"reading repository {ref.owner}/{ref.repo}",
                lambda: gh.rest.repos.get(ref.owner, ref.repo).parsed_data, token=bool(token))


def clone(ref: IssueRef, dest: Path, *, git_ref: str | None = None, token: str | None = None,
          gh: Any = None) -> Path:
    """Clone the issue's repository into ``dest`` at its default branch (or ``git_ref``). The token
    travels in git's environment (GIT_CONFIG_*), never in a URL or an argument."""
    token = token if token is not None else token_from()
    repo = repository(ref, gh, token=token)
    url = repo.clone_url
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if token and url.startswith(("https://", "http://")):
        env.update(token_config(token))
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["git", "clone", "--quiet", "--no-recurse-submodules", url, str(dest)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise GitHubError(f"cannot clone {url}: {done.stderr.strip()[-300:]}; pass --repo PATH to a checkout")
    if git_ref:  # (the clone is at the default branch already)
        done = subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", git_ref], capture_output=True, text=True)
        if done.returncode != 0:
            raise GitHubError(f"{ref.owner}/{ref.repo} has no ref {git_ref!r}: {done.stderr.strip()[-200:]}")
    return dest


def token_config(token: str) -> dict[str, str]:
    """git's environment for authenticated HTTP: the token as a header through GIT_CONFIG_*,
    never in a URL, an argument or .git/config (which a sandbox copies)."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}"}


_fetched: dict[str, str] = {}
_fetched_lock = threading.Lock()


def issue_statement(statement: str) -> str:
    """An eval row's problem statement: the text itself, or, when it is a GitHub issue URL, that
    issue's text (fetched once per run, whatever the attempts and workers)."""
    ref = parse_issue_url(statement)
    if ref is None:
        return statement
    with _fetched_lock:
        if statement not in _fetched:
            _fetched[statement] = fetch_issue(ref).text()
        return _fetched[statement]
