"""A loopback stand-in for the GitHub REST API, for the tests of cwm-agent's GitHub features.

It is the one stand-in for GitHub the tests allow, so everything on the wire is GitHub's:
a ThreadingHTTPServer on 127.0.0.1 answers, under ``api_url`` (what ``GITHUB_API_URL`` is
set to), with the paths, JSON shapes, status codes, error bodies and headers of
api.github.com. Its tests validate every response against githubkit's models for REST
API version 2026-03-10 (githubkit-schemas), so a response that lacks a field GitHub
always sends, or sends it with the wrong type, fails there rather than against GitHub.
This module imports nothing but the standard library (git is run as a subprocess).

Implemented, for one repository ``owner/repo`` (names match case-insensitively, as on
GitHub; ``/repositories/{id}/...``, the form GitHub's ``Link`` headers use, works too):

- ``GET /repos/{o}/{r}``: the full repository (``clone_url`` is ``origin`` as a
  ``file://`` URL when one is given, so ``git push`` to it works);
- ``GET /repos/{o}/{r}/issues/{n}``: an issue (a pull request is an issue too);
- ``GET|POST /repos/{o}/{r}/issues/{n}/comments``: list (``per_page``, ``page``,
  ``since``; a ``Link`` header with rel="prev"/"next"/"last"/"first" when there are more
  pages) or create (201, with a ``Location`` header);
- ``GET|PATCH /repos/{o}/{r}/issues/comments/{id}``: get, or edit the body;
- ``GET|POST /repos/{o}/{r}/pulls``: list (``state``, ``head=OWNER:BRANCH``, ``base``,
  ``sort``, ``direction``, ``per_page``, ``page``; like GitHub, a ``head`` without the
  ``OWNER:`` prefix is ignored) or create (201, draft honoured). Creating checks the bare
  ``origin`` with git: 422 "Validation Failed" with GitHub's ``errors`` array when the head
  (or base) branch does not exist there, when head == base or head has no commits base
  lacks ("No commits between"), or when an open pull request from that head exists;
  ``draft_prs=False`` answers drafts as a repository that does not support them;
  ``actions_can_create_prs=False`` forbids github-actions[bot] to open one (403);
- ``GET /repos/{o}/{r}/pulls/{n}``; ``GET /rate_limit``.

Behaviour as GitHub's: ``Authorization: Bearer X``, ``token X`` (and Basic with the token as
password) are accepted; with ``token`` set, any other token gets 401 "Bad credentials";
without a token reads of a public repository work and writes get 401 "Requires
authentication"; a ``private`` repository is 404 "Not Found" to anyone without a valid
token. Authenticated requests act as ``actor`` (default ``github-actions[bot]``, as with
GITHUB_TOKEN in an Action). The ``X-GitHub-Api-Version`` header selects the response shape:
2026-03-10 (what githubkit sends) drops the fields that version removed (``assignee``,
``merge_commit_sha``, ``has_downloads``, rate_limit's ``rate``), and a request without the
header gets 2022-11-28, GitHub's default; an unknown version gets 400. Every response has
``content-type: application/json; charset=utf-8``, ``x-github-api-version-selected``,
``x-github-request-id``, the ``x-ratelimit-*`` headers (limit 1000 for github-actions[bot],
5000 for other tokens, 60 unauthenticated), and GETs carry GitHub's caching headers
(``cache-control: private, max-age=60, s-maxage=60``, ``etag``, ``vary``; a matching
``If-None-Match`` gets 304 without counting against the rate limit: githubkit's HTTP cache
revalidates every GET that way). Unknown paths get GitHub's 404 JSON. Nothing is logged per
request; a bug in the stand-in itself answers 500 and prints its traceback.

Failures are injected in order of arrival: ``fail(method, path_pattern, status, times=...)``
answers the next ``times`` requests whose method and path (a shell-style pattern such as
``/repos/*/*/issues/*/comments``) match with GitHub's error JSON
(``{"message", "documentation_url", "status"}``) and any extra headers;
``rate_limit(times=..., reset_in=...)`` answers the next requests with the primary rate
limit's 403 (``x-ratelimit-remaining: 0``, ``x-ratelimit-reset``), or with ``secondary=True``
the secondary limit's 403 with ``retry-after``.

State is set up with ``add_issue``, ``add_comment``, ``add_pull`` and inspected with
``comments(n)``, ``pulls``, ``issue(n)`` and ``requests`` (every request: method, path with
query, lowercased headers, JSON body). ``event(kind, ...)`` builds the webhook payload
GitHub Actions writes to GITHUB_EVENT_PATH ("issues.opened", "issues.labeled",
"issue_comment.created"). Run it by hand:
``python -m cwm_agent.testing.github_stand_in --origin origin.git --issue 1 "Title" "Body"``.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import re
import subprocess
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from cwm_agent.testing.loopback import Loopback

LATEST_API_VERSION = "2026-03-10"
DEFAULT_API_VERSION = "2022-11-28"  # what GitHub selects when X-GitHub-Api-Version is absent
API_VERSIONS = (DEFAULT_API_VERSION, LATEST_API_VERSION)

DOCS = "https://docs.github.com/rest"
_DOC = {
    "repo": f"{DOCS}/repos/repos#get-a-repository",
    "issue": f"{DOCS}/issues/issues#get-an-issue",
    "list_comments": f"{DOCS}/issues/comments#list-issue-comments",
    "create_comment": f"{DOCS}/issues/comments#create-an-issue-comment",
    "get_comment": f"{DOCS}/issues/comments#get-an-issue-comment",
    "update_comment": f"{DOCS}/issues/comments#update-an-issue-comment",
    "list_pulls": f"{DOCS}/pulls/pulls#list-pull-requests",
    "create_pull": f"{DOCS}/pulls/pulls#create-a-pull-request",
    "get_pull": f"{DOCS}/pulls/pulls#get-a-pull-request",
    "rate_limit": f"{DOCS}/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user",
    "primary_limit": f"{DOCS}/overview/rate-limits-for-the-rest-api",
    "secondary_limit": f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
    "versions": f"{DOCS}/about-the-rest-api/api-versions",
}

# GitHub's default labels keep their real colours and descriptions.
_DEFAULT_LABELS = {
    "bug": ("d73a4a", "Something isn't working"),
    "documentation": ("0075ca", "Improvements or additions to documentation"),
    "duplicate": ("cfd3d7", "This issue or pull request already exists"),
    "enhancement": ("a2eeef", "New feature or request"),
    "good first issue": ("7057ff", "Good for newcomers"),
    "help wanted": ("008672", "Extra attention is needed"),
    "invalid": ("e4e669", "This doesn't seem right"),
    "question": ("d876e3", "Further information is requested"),
    "wontfix": ("ffffff", "This will not be worked on"),
}

# Accounts whose real ids are well known.
_KNOWN_IDS = {"github-actions[bot]": 41898282, "dependabot[bot]": 49699333, "copilot-swe-agent[bot]": 198982749}
_APP_IDS = {"github-actions[bot]": 15368, "dependabot[bot]": 29110, "copilot-swe-agent[bot]": 1143301}

_ASSOCIATIONS = {"COLLABORATOR", "CONTRIBUTOR", "FIRST_TIMER", "FIRST_TIME_CONTRIBUTOR", "MANNEQUIN", "MEMBER",
                 "NONE", "OWNER"}



@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lowercased
    json: Any  # the parsed body; None without one (or when it was not JSON)
    status: int = 0  # the status the stand-in answered

    @property
    def route(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, doc: str = DOCS, *, headers: dict[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.doc = doc
        self.headers = headers or {}
        self.errors = errors

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        out["documentation_url"] = self.doc
        out["status"] = str(self.status)
        return out


@dataclass
class _Injected:
    method: str
    pattern: str
    status: int
    remaining: int
    headers: dict[str, str]
    message: str | None
    kind: str = "fail"  # or "primary" / "secondary" rate limit
    reset_in: int = 60


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _legacy_node_id(kind: str, number: int) -> str:
    """GitHub's legacy global node id: base64 of "0<len(kind)>:<Kind><id>" ("04:User1",
    "010:Repository1296269")."""
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def _stable(text: str, modulo: int) -> int:
    return zlib.crc32(text.encode()) % modulo


class GitHubStandIn(Loopback):
    """A loopback GitHub REST API for one repository; use as a context manager.

    ``origin`` is the bare git repository pull requests are checked against (and what
    ``clone_url`` points to). ``token`` makes it demand that token; ``private`` hides the
    repository from requests without a valid one. ``actor`` is whom authenticated requests
    act as; ``owner_type`` is "Organization" or "User". ``server_url`` is the web host the
    ``html_url`` fields use.
    """

    thread_name = "github-stand-in"

    def __init__(
        self,
        *,
        owner: str = "octo-org",
        repo: str = "calc",
        default_branch: str = "main",
        origin: Path | None = None,
        private: bool = False,
        token: str | None = None,
        server_url: str = "https://github.com",
        actor: str = "github-actions[bot]",
        owner_type: str = "Organization",
        draft_prs: bool = True,
        actions_can_create_prs: bool = True,
        port: int = 0,
    ) -> None:
        self.owner = owner
        self.repo = repo
        self.default_branch = default_branch
        self.origin = Path(origin) if origin is not None else None
        self.private = private
        self.token = token
        self.server_url = server_url.rstrip("/")
        self.actor = actor
        self.owner_type = owner_type
        self.draft_prs = draft_prs
        self.actions_can_create_prs = actions_can_create_prs
        self.requests: list[Recorded] = []
        self._lock = threading.RLock()
        self._issues: dict[int, dict[str, Any]] = {}
        self._comments: dict[int, dict[str, Any]] = {}
        self._pulls: dict[int, dict[str, Any]] = {}
        self._labels: dict[str, dict[str, Any]] = {}
        self._injected: list[_Injected] = []
        self._next_comment_id = 2_871_000_001
        self._next_pull_id = 2_437_000_001
        self._next_issue_id = 3_102_000_001
        self._clock = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        self.repo_id = 800_000_000 + _stable(f"{owner}/{repo}", 99_000_000)
        self._repo_created = datetime(2024, 1, 15, 9, 30, 0, tzinfo=timezone.utc)
        self._repo_updated = self._clock
        self._rate_reset = int(time.time()) + 3600
        self._rate_used: dict[str, int] = {}
        self._listen(_make_handler(self), port)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.root_url

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def clone_url(self) -> str:
        if self.origin is not None:
            return self.origin.resolve().as_uri()
        return f"{self.server_url}/{self.full_name}.git"


    stop = Loopback.close

    # -- set-up --------------------------------------------------------------------------

    def add_issue(
        self,
        number: int,
        title: str,
        body: str | None,
        *,
        user: str = "alice",
        labels: tuple[str | dict[str, Any], ...] | list[str | dict[str, Any]] = (),
        state: str = "open",
        locked: bool = False,
        author_association: str = "OWNER",
        pull_request: bool = False,
    ) -> dict[str, Any]:
        """Add issue ``number``; ``pull_request=True`` marks it as a pull request's issue
        (the ``pull_request`` links and a /pull/ html_url; no pull request is created)."""
        if state not in ("open", "closed"):
            raise ValueError(f"state must be open or closed, not {state!r}")
        _check_association(author_association)
        with self._lock:
            if number in self._issues:
                raise ValueError(f"issue #{number} exists")
            created = self._tick()
            self._issues[number] = {
                "number": number,
                "id": self._new_issue_id(),
                "title": title,
                "body": body,
                "user": user,
                "labels": [self._label(label)["name"] for label in labels],
                "state": state,
                "state_reason": "completed" if state == "closed" else None,
                "locked": locked,
                "author_association": author_association,
                "pull_request": pull_request,
                "created_at": created,
                "updated_at": created,
                "closed_at": created if state == "closed" else None,
                "closed_by": user if state == "closed" else None,
            }
            return self.issue(number)

    def add_comment(
        self,
        issue_number: int,
        body: str,
        *,
        user: str = "bob",
        user_type: str = "User",
        author_association: str = "MEMBER",
    ) -> dict[str, Any]:
        """Add a comment by ``user`` to issue ``issue_number``; returns it as the REST API shows it."""
        _check_association(author_association)
        with self._lock:
            if issue_number not in self._issues:
                raise KeyError(f"no issue #{issue_number}")
            comment = self._new_comment(issue_number, body, user, author_association, user_type=user_type)
            return self._comment_json(comment, LATEST_API_VERSION)

    def add_pull(self, title: str, head: str, base: str | None = None, body: str | None = None, *,
                 draft: bool = False, user: str | None = None) -> dict[str, Any]:
        """Open a pull request as ``user`` (default: the actor) with the same checks as the API."""
        payload = {"title": title, "head": head, "base": base or self.default_branch, "body": body, "draft": draft}
        with self._lock:
            pull = self._create_pull(payload, user or self.actor)
            return self._pull_json(pull, LATEST_API_VERSION, full=True)

    def fail(self, method: str, path_pattern: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, message: str | None = None) -> None:
        """Answer the next ``times`` requests matching ``method`` ("*" for any) and the shell-style
        ``path_pattern`` (matched against the path without its query) with ``status`` and
        GitHub's error JSON; ``headers`` are added to those answers."""
        with self._lock:
            self._injected.append(_Injected(method.upper(), path_pattern, status, times,
                                            {k.lower(): v for k, v in (headers or {}).items()}, message))

    def rate_limit(self, *, times: int = 1, reset_in: int = 60, secondary: bool = False,
                   retry_after: int | None = None, path_pattern: str = "*") -> None:
        """Answer the next ``times`` requests as rate limited: the primary limit's 403 with
        ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` ``reset_in`` seconds ahead, or
        (``secondary``) the secondary limit's 403 with ``retry-after`` (default ``reset_in``)."""
        extra = {"retry-after": str(reset_in if retry_after is None else retry_after)} if secondary else {}
        with self._lock:
            self._injected.append(_Injected("*", path_pattern, 403, times, extra, None,
                                            kind="secondary" if secondary else "primary", reset_in=reset_in))

    # -- state, for assertions ---------------------------------------------------------

    def issue(self, number: int) -> dict[str, Any]:
        with self._lock:
            return self._issue_json(self._issues[number], LATEST_API_VERSION, single=True)

    def comments(self, issue_number: int) -> list[dict[str, Any]]:
        with self._lock:
            return [self._comment_json(c, LATEST_API_VERSION) for c in self._comments.values()
                    if c["issue"] == issue_number]

    @property
    def pulls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._pull_json(p, LATEST_API_VERSION, full=True) for p in self._pulls.values()]

    def requests_to(self, method: str, pattern: str) -> list[Recorded]:
        """The recorded requests with ``method`` whose path matches the shell-style ``pattern``."""
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and fnmatch.fnmatchcase(r.route, pattern)]

    # -- webhook payloads --------------------------------------------------------------

    def event(self, kind: str, **kw: Any) -> dict[str, Any]:
        """The payload GitHub Actions writes to GITHUB_EVENT_PATH for ``kind``:

        - "issues.opened": ``issue`` (number), ``sender`` (login; default the issue's author);
        - "issues.labeled": ``issue``, ``label`` (name; added to the issue if missing),
          ``sender`` (login; default "alice");
        - "issue_comment.created": ``issue``, and ``comment`` (an id) or ``body`` (a new
          comment by ``user``, default "bob"); the sender is the comment's author.
        """
        with self._lock:
            if kind in ("issues.opened", "issues.labeled"):
                record = self._issues[int(kw.pop("issue"))]
                payload: dict[str, Any] = {"action": kind.split(".", 1)[1]}
                if kind == "issues.labeled":
                    name = kw.pop("label")
                    label = self._label(name)
                    if label["name"] not in record["labels"]:
                        record["labels"].append(label["name"])
                        record["updated_at"] = self._tick()
                    payload["issue"] = self._webhook_issue(record)
                    payload["label"] = self._label_json(label)
                    sender = kw.pop("sender", "alice")
                else:
                    payload["issue"] = self._webhook_issue(record)
                    sender = kw.pop("sender", record["user"])
            elif kind == "issue_comment.created":
                number = int(kw.pop("issue"))
                record = self._issues[number]
                if "comment" in kw:
                    comment = self._comments[int(kw.pop("comment"))]
                else:
                    comment = self._new_comment(
                        number, kw.pop("body"), kw.pop("user", "bob"),
                        kw.pop("author_association", "MEMBER"), user_type=kw.pop("user_type", "User"))
                payload = {"action": "created", "issue": self._webhook_issue(record),
                           "comment": self._webhook_comment(comment)}
                sender = comment["user"]
            else:
                raise ValueError(f"unknown event kind {kind!r}")
            if kw:
                raise TypeError(f"unexpected arguments for {kind}: {sorted(kw)}")
            payload["repository"] = self._repository_json(LATEST_API_VERSION, webhook=True)
            if self.owner_type == "Organization":
                payload["organization"] = self._organization_json()
            payload["sender"] = self._user(sender)
            return payload

    # -- records -----------------------------------------------------------------------

    def _tick(self) -> datetime:
        """A timestamp strictly after every earlier one (GitHub's have whole seconds)."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self._clock = max(now, self._clock + timedelta(seconds=1))
        return self._clock

    def _new_issue_id(self) -> int:
        self._next_issue_id += 1
        return self._next_issue_id

    def _new_comment(self, issue_number: int, body: str, user: str, association: str, *,
                     user_type: str | None = None) -> dict[str, Any]:
        created = self._tick()
        comment = {"id": self._next_comment_id, "issue": issue_number, "body": body, "user": user,
                   "user_type": user_type, "author_association": association,
                   "created_at": created, "updated_at": created}
        self._next_comment_id += 1
        self._comments[comment["id"]] = comment
        self._issues[issue_number]["updated_at"] = created
        return comment

    def _label(self, label: str | dict[str, Any]) -> dict[str, Any]:
        spec = {"name": label} if isinstance(label, str) else dict(label)
        name = spec["name"]
        if name not in self._labels:
            color, description = _DEFAULT_LABELS.get(name, (None, None))
            self._labels[name] = {
                "id": 5_100_000_000 + _stable(name, 899_999_999),
                "name": name,
                "color": spec.get("color") or color or f"{_stable(name, 0xFFFFFF):06x}",
                "description": spec.get("description", description),
                "default": name in _DEFAULT_LABELS,
            }
        return self._labels[name]

    def _association(self, login: str) -> str:
        if login.endswith("[bot]"):
            return "NONE"
        if login.lower() == self.owner.lower():
            return "OWNER"
        return "MEMBER" if self.owner_type == "Organization" else "COLLABORATOR"

    # -- JSON shapes -------------------------------------------------------------------

    def _user(self, login: str, user_type: str | None = None) -> dict[str, Any]:
        api, web = self.api_url, self.server_url
        bot = login.endswith("[bot]")
        kind = user_type or ("Bot" if bot else "Organization" if login == self.owner and
                             self.owner_type == "Organization" else "User")
        uid = _KNOWN_IDS.get(login) or 10_000_000 + _stable(login.lower(), 180_000_000)
        path = quote(login, safe="")
        if bot and login in _APP_IDS:
            avatar = f"https://avatars.githubusercontent.com/in/{_APP_IDS[login]}?v=4"
        else:
            avatar = f"https://avatars.githubusercontent.com/u/{uid}?v=4"
        if not web.endswith("github.com"):
            avatar = f"{web}/avatars/u/{uid}?"
        node_kind = {"Bot": "Bot", "Organization": "Organization"}.get(kind, "User")
        html = f"{web}/apps/{login[:-5]}" if bot else f"{web}/{login}"
        return {
            "login": login,
            "id": uid,
            "node_id": _legacy_node_id(node_kind, uid),
            "avatar_url": avatar,
            "gravatar_id": "",
            "url": f"{api}/users/{path}",
            "html_url": html,
            "followers_url": f"{api}/users/{path}/followers",
            "following_url": f"{api}/users/{path}/following{{/other_user}}",
            "gists_url": f"{api}/users/{path}/gists{{/gist_id}}",
            "starred_url": f"{api}/users/{path}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/users/{path}/subscriptions",
            "organizations_url": f"{api}/users/{path}/orgs",
            "repos_url": f"{api}/users/{path}/repos",
            "events_url": f"{api}/users/{path}/events{{/privacy}}",
            "received_events_url": f"{api}/users/{path}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _organization_json(self) -> dict[str, Any]:
        api, org = self.api_url, self.owner
        user = self._user(org)
        return {
            "login": org,
            "id": user["id"],
            "node_id": user["node_id"],
            "url": f"{api}/orgs/{org}",
            "repos_url": f"{api}/orgs/{org}/repos",
            "events_url": f"{api}/orgs/{org}/events",
            "hooks_url": f"{api}/orgs/{org}/hooks",
            "issues_url": f"{api}/orgs/{org}/issues",
            "members_url": f"{api}/orgs/{org}/members{{/member}}",
            "public_members_url": f"{api}/orgs/{org}/public_members{{/member}}",
            "avatar_url": user["avatar_url"],
            "description": None,
        }

    def _repository_json(self, version: str, *, full: bool = False, webhook: bool = False,
                         authenticated: bool = True) -> dict[str, Any]:
        """The repository: the "repository" shape (pull requests' head/base), the full one
        (GET /repos/{o}/{r}), or the webhook one (event payloads)."""
        api, web, name = self.api_url, self.server_url, self.full_name
        base = f"{api}/repos/{name}"
        host = urlsplit(web).hostname or "github.com"
        open_issues = sum(1 for i in self._issues.values() if i["state"] == "open") + sum(
            1 for p in self._pulls.values() if p["state"] == "open")
        out: dict[str, Any] = {
            "id": self.repo_id,
            "node_id": _legacy_node_id("Repository", self.repo_id),
            "name": self.repo,
            "full_name": name,
            "private": self.private,
            "owner": self._user(self.owner),
            "html_url": f"{web}/{name}",
            "description": "A small calculator.",
            "fork": False,
            "url": base,
            "forks_url": f"{base}/forks",
            "keys_url": f"{base}/keys{{/key_id}}",
            "collaborators_url": f"{base}/collaborators{{/collaborator}}",
            "teams_url": f"{base}/teams",
            "hooks_url": f"{base}/hooks",
            "issue_events_url": f"{base}/issues/events{{/number}}",
            "events_url": f"{base}/events",
            "assignees_url": f"{base}/assignees{{/user}}",
            "branches_url": f"{base}/branches{{/branch}}",
            "tags_url": f"{base}/tags",
            "blobs_url": f"{base}/git/blobs{{/sha}}",
            "git_tags_url": f"{base}/git/tags{{/sha}}",
            "git_refs_url": f"{base}/git/refs{{/sha}}",
            "trees_url": f"{base}/git/trees{{/sha}}",
            "statuses_url": f"{base}/statuses/{{sha}}",
            "languages_url": f"{base}/languages",
            "stargazers_url": f"{base}/stargazers",
            "contributors_url": f"{base}/contributors",
            "subscribers_url": f"{base}/subscribers",
            "subscription_url": f"{base}/subscription",
            "commits_url": f"{base}/commits{{/sha}}",
            "git_commits_url": f"{base}/git/commits{{/sha}}",
            "comments_url": f"{base}/comments{{/number}}",
            "issue_comment_url": f"{base}/issues/comments{{/number}}",
            "contents_url": f"{base}/contents/{{+path}}",
            "compare_url": f"{base}/compare/{{base}}...{{head}}",
            "merges_url": f"{base}/merges",
            "archive_url": f"{base}/{{archive_format}}{{/ref}}",
            "downloads_url": f"{base}/downloads",
            "issues_url": f"{base}/issues{{/number}}",
            "pulls_url": f"{base}/pulls{{/number}}",
            "milestones_url": f"{base}/milestones{{/number}}",
            "notifications_url": f"{base}/notifications{{?since,all,participating}}",
            "labels_url": f"{base}/labels{{/name}}",
            "releases_url": f"{base}/releases{{/id}}",
            "deployments_url": f"{base}/deployments",
            "created_at": _iso(self._repo_created),
            "updated_at": _iso(self._repo_updated),
            "pushed_at": _iso(self._repo_updated),
            "git_url": f"git://{host}/{name}.git",
            "ssh_url": f"git@{host}:{name}.git",
            "clone_url": self.clone_url,
            "svn_url": f"{web}/{name}",
            "homepage": None,
            "size": 42,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": "Python",
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": not self.private,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "allow_forking": not self.private,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if self.private else "public",
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": self.default_branch,
        }
        if webhook:
            out["custom_properties"] = {}
            return out
        if version != DEFAULT_API_VERSION:
            del out["has_downloads"]
        if full:
            if authenticated:
                out["permissions"] = {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}
                if self.private:
                    out["temp_clone_token"] = ""
            out["custom_properties"] = {}
            if self.owner_type == "Organization":
                out["organization"] = self._user(self.owner)
            out["network_count"] = 0
            out["subscribers_count"] = 1
        return out

    def _label_json(self, label: dict[str, Any]) -> dict[str, Any]:
        quoted = quote(label["name"], safe="")
        out = {
            "id": label["id"],
            "node_id": _legacy_node_id("Label", label["id"]),
            "url": f"{self.api_url}/repos/{self.full_name}/labels/{quoted}",
            "name": label["name"],
            "color": label["color"],
            "default": label["default"],
            "description": label["description"],
        }
        # Labels can be archived now; GitHub sends both fields, null for a live label.
        out["archived_at"] = None
        out["archived_by"] = None
        return out

    def _reactions(self, url: str) -> dict[str, Any]:
        return {"url": f"{url}/reactions", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
                "confused": 0, "heart": 0, "rocket": 0, "eyes": 0}

    def _issue_json(self, issue: dict[str, Any], version: str, *, single: bool = False) -> dict[str, Any]:
        api, web = self.api_url, self.server_url
        number = issue["number"]
        url = f"{api}/repos/{self.full_name}/issues/{number}"
        kind = "pull" if issue["pull_request"] else "issues"
        comment_count = sum(1 for c in self._comments.values() if c["issue"] == number)
        out: dict[str, Any] = {
            "url": url,
            "repository_url": f"{api}/repos/{self.full_name}",
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": f"{web}/{self.full_name}/{kind}/{number}",
            "id": issue["id"],
            "node_id": _legacy_node_id("Issue", issue["id"]),
            "number": number,
            "title": issue["title"],
            "user": self._user(issue["user"]),
            "labels": [self._label_json(self._labels[n]) for n in issue["labels"]],
            "state": issue["state"],
            "locked": issue["locked"],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": comment_count,
            "created_at": _iso(issue["created_at"]),
            "updated_at": _iso(issue["updated_at"]),
            "closed_at": _iso(issue["closed_at"]) if issue["closed_at"] else None,
            "author_association": issue["author_association"],
            "type": None,
            "active_lock_reason": None,
            "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
            "issue_dependencies_summary": {"blocked_by": 0, "total_blocked_by": 0, "blocking": 0,
                                           "total_blocking": 0},
        }
        if issue["pull_request"]:
            pull = self._pulls.get(number)
            out["draft"] = bool(pull and pull["draft"])
            out["pull_request"] = {
                "url": f"{api}/repos/{self.full_name}/pulls/{number}",
                "html_url": f"{web}/{self.full_name}/pull/{number}",
                "diff_url": f"{web}/{self.full_name}/pull/{number}.diff",
                "patch_url": f"{web}/{self.full_name}/pull/{number}.patch",
                "merged_at": None,
            }
        out["body"] = issue["body"]
        if single:
            out["closed_by"] = self._user(issue["closed_by"]) if issue["closed_by"] else None
        out["reactions"] = self._reactions(url)
        out["timeline_url"] = f"{url}/timeline"
        out["performed_via_github_app"] = None
        out["state_reason"] = issue["state_reason"]
        if version != DEFAULT_API_VERSION:
            del out["assignee"]
        return out

    def _webhook_issue(self, issue: dict[str, Any]) -> dict[str, Any]:
        return self._issue_json(issue, DEFAULT_API_VERSION)  # webhooks are not versioned: the classic shape

    def _comment_json(self, comment: dict[str, Any], version: str) -> dict[str, Any]:
        api, web = self.api_url, self.server_url
        number = comment["issue"]
        kind = "pull" if self._issues[number]["pull_request"] else "issues"
        url = f"{api}/repos/{self.full_name}/issues/comments/{comment['id']}"
        return {
            "url": url,
            "html_url": f"{web}/{self.full_name}/{kind}/{number}#issuecomment-{comment['id']}",
            "issue_url": f"{api}/repos/{self.full_name}/issues/{number}",
            "id": comment["id"],
            "node_id": _legacy_node_id("IssueComment", comment["id"]),
            "user": self._user(comment["user"], comment["user_type"]),
            "created_at": _iso(comment["created_at"]),
            "updated_at": _iso(comment["updated_at"]),
            "body": comment["body"],
            "author_association": comment["author_association"],
            "reactions": self._reactions(url),
            "performed_via_github_app": None,
        }

    def _webhook_comment(self, comment: dict[str, Any]) -> dict[str, Any]:
        return self._comment_json(comment, DEFAULT_API_VERSION)

    def _pull_json(self, pull: dict[str, Any], version: str, *, full: bool) -> dict[str, Any]:
        api, web, name = self.api_url, self.server_url, self.full_name
        number = pull["number"]
        url = f"{api}/repos/{name}/pulls/{number}"
        issue = self._issues[number]
        repo = self._repository_json(version)
        owner = self._user(self.owner)

        def side(ref: str, sha: str) -> dict[str, Any]:
            return {"label": f"{self.owner}:{ref}", "ref": ref, "sha": sha, "user": owner, "repo": repo}

        out: dict[str, Any] = {
            "url": url,
            "id": pull["id"],
            "node_id": _legacy_node_id("PullRequest", pull["id"]),
            "html_url": f"{web}/{name}/pull/{number}",
            "diff_url": f"{web}/{name}/pull/{number}.diff",
            "patch_url": f"{web}/{name}/pull/{number}.patch",
            "issue_url": f"{api}/repos/{name}/issues/{number}",
            "number": number,
            "state": pull["state"],
            "locked": issue["locked"],
            "title": issue["title"],
            "user": self._user(issue["user"]),
            "body": issue["body"],
            "created_at": _iso(issue["created_at"]),
            "updated_at": _iso(issue["updated_at"]),
            "closed_at": _iso(issue["closed_at"]) if issue["closed_at"] else None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [self._label_json(self._labels[n]) for n in issue["labels"]],
            "milestone": None,
            "draft": pull["draft"],
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{api}/repos/{name}/pulls/comments{{/number}}",
            "comments_url": f"{api}/repos/{name}/issues/{number}/comments",
            "statuses_url": f"{api}/repos/{name}/statuses/{pull['head_sha']}",
            "head": side(pull["head"], pull["head_sha"]),
            "base": side(pull["base"], pull["base_sha"]),
            "_links": {
                "self": {"href": url},
                "html": {"href": f"{web}/{name}/pull/{number}"},
                "issue": {"href": f"{api}/repos/{name}/issues/{number}"},
                "comments": {"href": f"{api}/repos/{name}/issues/{number}/comments"},
                "review_comments": {"href": f"{url}/comments"},
                "review_comment": {"href": f"{api}/repos/{name}/pulls/comments{{/number}}"},
                "commits": {"href": f"{url}/commits"},
                "statuses": {"href": f"{api}/repos/{name}/statuses/{pull['head_sha']}"},
            },
            "author_association": issue["author_association"],
            "auto_merge": None,
            "active_lock_reason": None,
        }
        if full:
            out.update({
                "merged": False,
                # GitHub computes mergeability in the background: unknown right after creation.
                "mergeable": None,
                "rebaseable": None,
                "mergeable_state": "unknown",
                "merged_by": None,
                "comments": sum(1 for c in self._comments.values() if c["issue"] == number),
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": pull["commits"],
                "additions": pull["additions"],
                "deletions": pull["deletions"],
                "changed_files": pull["changed_files"],
            })
        if version != DEFAULT_API_VERSION:
            del out["assignee"], out["merge_commit_sha"]
        return out

    # -- git -----------------------------------------------------------------------------

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.origin is not None
        return subprocess.run(["git", "--git-dir", str(self.origin), *args], capture_output=True, text=True,
                              check=False)

    def _branch_sha(self, branch: str) -> str | None:
        if self.origin is None:
            return hashlib.sha1(branch.encode()).hexdigest()
        done = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
        return done.stdout.strip() if done.returncode == 0 else None

    def _compare(self, base_sha: str, head_sha: str) -> tuple[int, int, int, int]:
        """(commits, additions, deletions, changed_files) of head over base."""
        if self.origin is None:
            return (1, 1, 0, 1)
        count = self._git("rev-list", "--count", f"{base_sha}..{head_sha}")
        commits = int(count.stdout.strip() or 0) if count.returncode == 0 else 0
        adds = dels = files = 0
        numstat = self._git("diff", "--numstat", f"{base_sha}...{head_sha}")
        for line in numstat.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                files += 1
                adds += int(parts[0]) if parts[0].isdigit() else 0
                dels += int(parts[1]) if parts[1].isdigit() else 0
        return commits, adds, dels, files

    # -- pull requests -----------------------------------------------------------------

    def _create_pull(self, body: dict[str, Any], login: str) -> dict[str, Any]:
        doc = _DOC["create_pull"]
        missing = [k for k in ("head", "base") if not isinstance(body.get(k), str) or not body.get(k)]
        if missing:
            names = ", ".join(f'"{k}"' for k in missing)
            raise _HTTPError(422, f"Invalid request.\n\n{names} {'wasn' if len(missing) == 1 else 'weren'}'t supplied.",
                             doc)
        if not isinstance(body.get("title"), str) or not body["title"]:
            raise _HTTPError(422, "Validation Failed", doc,
                             errors=[{"resource": "PullRequest", "code": "missing_field", "field": "title"}])
        head, base = body["head"], body["base"]
        if ":" in head:
            head_owner, head = head.split(":", 1)
            if head_owner.lower() != self.owner.lower():  # a fork this stand-in does not have
                raise _HTTPError(422, "Validation Failed", doc,
                                 errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        if login == "github-actions[bot]" and not self.actions_can_create_prs:
            raise _HTTPError(403, "GitHub Actions is not permitted to create or approve pull requests.", doc)
        head_sha = self._branch_sha(head)
        base_sha = self._branch_sha(base)
        errors = []
        if base_sha is None:
            errors.append({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if head_sha is None:
            errors.append({"resource": "PullRequest", "field": "head", "code": "invalid"})
        if errors:
            raise _HTTPError(422, "Validation Failed", doc, errors=errors)
        assert head_sha is not None and base_sha is not None
        for other in self._pulls.values():
            if other["state"] == "open" and other["head"] == head and other["base"] == base:
                raise _HTTPError(422, "Validation Failed", doc, errors=[{
                    "resource": "PullRequest", "code": "custom",
                    "message": f"A pull request already exists for {self.owner}:{head}."}])
        commits, adds, dels, files = self._compare(base_sha, head_sha)
        if head == base or commits == 0:
            raise _HTTPError(422, "Validation Failed", doc, errors=[{
                "resource": "PullRequest", "code": "custom", "message": f"No commits between {base} and {head}"}])
        draft = bool(body.get("draft", False))
        if draft and not self.draft_prs:
            raise _HTTPError(422, "Validation Failed", doc, errors=[{
                "resource": "PullRequest", "code": "custom",
                "message": "Draft pull requests are not supported in this repository."}])
        number = max([*self._issues, 0]) + 1
        created = self._tick()
        self._issues[number] = {
            "number": number, "id": self._new_issue_id(), "title": body["title"], "body": body.get("body"),
            "user": login, "labels": [], "state": "open", "state_reason": None, "locked": False,
            "author_association": self._association(login), "pull_request": True,
            "created_at": created, "updated_at": created, "closed_at": None, "closed_by": None,
        }
        pull = {"number": number, "id": self._next_pull_id, "state": "open", "draft": draft,
                "head": head, "base": base, "head_sha": head_sha, "base_sha": base_sha,
                "commits": commits, "additions": adds, "deletions": dels, "changed_files": files}
        self._next_pull_id += 1
        self._pulls[number] = pull
        return pull

    # -- request handling --------------------------------------------------------------

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any, status: int) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body, status))

    def _take_injected(self, method: str, route: str) -> _Injected | None:
        with self._lock:
            for entry in self._injected:
                if entry.remaining > 0 and entry.method in ("*", method) and fnmatch.fnmatchcase(route, entry.pattern):
                    entry.remaining -= 1
                    return entry
            return None

    def _rate_headers(self, identity: str, *, count: bool, exhausted: int | None = None) -> dict[str, str]:
        limit = 60 if identity == "" else 1000 if identity == "github-actions[bot]" else 5000
        with self._lock:
            if count:
                self._rate_used[identity] = self._rate_used.get(identity, 0) + 1
            used = self._rate_used.get(identity, 0)
        if exhausted is not None:
            return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(exhausted), "x-ratelimit-used": str(limit),
                    "x-ratelimit-resource": "core"}
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(max(limit - used, 0)),
                "x-ratelimit-reset": str(self._rate_reset), "x-ratelimit-used": str(used),
                "x-ratelimit-resource": "core"}

    def _authenticate(self, headers: dict[str, str]) -> bool:
        """True for a valid token, False without one; raises 401 for a bad one."""
        raw = headers.get("authorization")
        if raw is None:
            return False
        scheme, _, value = raw.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                value = ""
        elif scheme.lower() not in ("bearer", "token"):
            value = ""
        if not value or (self.token is not None and value != self.token):
            raise _HTTPError(401, "Bad credentials", DOCS)
        return True

    def _dispatch(self, method: str, target: str, headers: dict[str, str],
                  raw: bytes) -> tuple[int, dict[str, str], Any]:
        """Answer one request, and record it: (status, headers, JSON body or None)."""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        try:
            status, out_headers, payload = self._answer(method, target, headers, body, bad_json)
        except Exception as exc:  # a bug here, not GitHub behaviour: say so loudly
            import traceback

            traceback.print_exc()
            status, out_headers, payload = 500, {}, {"message": f"github stand-in error: {exc!r}",
                                                     "documentation_url": DOCS, "status": "500"}
        self._record(method, target, headers, body, status)
        return status, out_headers, payload

    def _answer(self, method: str, target: str, headers: dict[str, str], body: Any,
                bad_json: bool) -> tuple[int, dict[str, str], Any]:
        split = urlsplit(target)
        route = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        request_id = f"{uuid.uuid4().hex[:4].upper()}:{uuid.uuid4().hex[:5].upper()}:" \
                     f"{uuid.uuid4().hex[:7].upper()}:{uuid.uuid4().hex[:7].upper()}:{uuid.uuid4().hex[:8].upper()}"
        requested = headers.get("x-github-api-version")
        version = requested or DEFAULT_API_VERSION
        identity = ""
        out_headers: dict[str, str] = {"x-github-request-id": request_id}
        count = route != "/rate_limit"
        try:
            if requested is not None and requested not in API_VERSIONS:
                version = DEFAULT_API_VERSION
                raise _HTTPError(400, f"API version '{requested}' is not supported.", _DOC["versions"])
            authenticated = self._authenticate(headers)
            identity = self.actor if authenticated else ""
            injected = self._take_injected(method, route)
            if injected is not None:
                raise self._injected_error(injected, identity, request_id)
            if bad_json:
                raise _HTTPError(400, "Problems parsing JSON", DOCS)
            status, payload, extra = self._route(method, route, query, body, version, authenticated)
            out_headers.update(extra)
        except _HTTPError as err:
            out_headers.update(self._rate_headers(identity, count=count))
            out_headers.update(err.headers)
            out_headers["x-github-api-version-selected"] = version
            return err.status, out_headers, err.body()
        if method == "GET" and status == 200:
            encoded = _encode(payload)
            etag = f'W/"{hashlib.sha256(encoded).hexdigest()}"'
            out_headers["etag"] = etag
            out_headers["cache-control"] = (
                f"{'private' if identity else 'public'}, max-age=60, s-maxage=60")
            out_headers["vary"] = ("Accept, Authorization, Cookie, X-GitHub-OTP,"
                                   "Accept-Encoding, Accept, X-Requested-With")
            inm = headers.get("if-none-match")
            if inm is not None and etag in [t.strip() for t in inm.split(",")]:
                # A conditional request answered 304 does not count against the rate limit.
                out_headers.update(self._rate_headers(identity, count=False))
                out_headers["x-github-api-version-selected"] = version
                return 304, out_headers, None
        out_headers.update(self._rate_headers(identity, count=count))
        out_headers["x-github-api-version-selected"] = version
        return status, out_headers, payload

    def _injected_error(self, entry: _Injected, identity: str, request_id: str) -> _HTTPError:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        support = (f"If you reach out to GitHub Support for help, please include the request ID {request_id} "
                   f"and timestamp {stamp} UTC.")
        if entry.kind == "primary":
            who = f"user ID {self._user(identity)['id']}" if identity else "127.0.0.1"
            extra = "" if identity else (" (But here's the good news: Authenticated requests get a higher rate "
                                         "limit. Check out the documentation for more details.)")
            reset = int(time.time()) + entry.reset_in
            headers = self._rate_headers(identity, count=True, exhausted=reset)
            return _HTTPError(403, f"API rate limit exceeded for {who}.{extra} {support}", _DOC["primary_limit"],
                              headers=headers)
        if entry.kind == "secondary":
            return _HTTPError(403, "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                              f"try again. {support}", _DOC["secondary_limit"], headers=dict(entry.headers))
        message = entry.message or _default_message(entry.status)
        return _HTTPError(entry.status, message, DOCS, headers=dict(entry.headers))

    def _route(self, method: str, route: str, query: dict[str, str], body: Any, version: str,
               authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        if route == "/rate_limit" and method == "GET":
            return 200, self._rate_limit_json(version, authenticated), {}
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", route) or re.fullmatch(
            r"/repositories/(\d+)()(/.*)?", route)
        if match is None:
            raise _HTTPError(404, "Not Found", DOCS)
        if route.startswith("/repositories/"):
            known = match.group(1) == str(self.repo_id)
        else:
            known = (match.group(1).lower(), match.group(2).lower()) == (self.owner.lower(), self.repo.lower())
        if not known or (self.private and not authenticated):
            raise _HTTPError(404, "Not Found", _DOC["repo"] if not match.group(3) else DOCS)
        rest = match.group(3) or ""
        with self._lock:
            return self._repo_route(method, rest, query, body, version, authenticated)

    def _repo_route(self, method: str, rest: str, query: dict[str, str], body: Any, version: str,
                    authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        def need_auth(doc: str) -> None:
            if not authenticated:
                raise _HTTPError(401, "Requires authentication", doc)

        def need_object(doc: str) -> dict[str, Any]:
            if not isinstance(body, dict):
                raise _HTTPError(400, "Problems parsing JSON", doc)
            return body

        if rest == "" and method == "GET":
            return 200, self._repository_json(version, full=True, authenticated=authenticated), {}
        if m := re.fullmatch(r"/issues/(\d+)", rest):
            if method == "GET":
                issue = self._issues.get(int(m.group(1)))
                if issue is None:
                    raise _HTTPError(404, "Not Found", _DOC["issue"])
                return 200, self._issue_json(issue, version, single=True), _last_modified(issue["updated_at"])
        elif m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(m.group(1))
            if method == "GET":
                if number not in self._issues:
                    raise _HTTPError(404, "Not Found", _DOC["list_comments"])
                items = [c for c in self._comments.values() if c["issue"] == number]
                if "since" in query:
                    since = _parse_time(query["since"])
                    items = [c for c in items if since is None or c["updated_at"] >= since]
                items.sort(key=lambda c: c["id"])
                page, links = self._page(items, query, f"/issues/{number}/comments")
                return 200, [self._comment_json(c, version) for c in page], links
            if method == "POST":
                doc = _DOC["create_comment"]
                need_auth(doc)
                data = need_object(doc)
                if number not in self._issues:
                    raise _HTTPError(404, "Not Found", doc)
                if not isinstance(data.get("body"), str):
                    raise _HTTPError(422, 'Invalid request.\n\n"body" wasn\'t supplied.', doc)
                if not data["body"].strip():
                    raise _HTTPError(422, "Validation Failed", doc, errors=[
                        {"resource": "IssueComment", "code": "unprocessable", "field": "data",
                         "message": "Body cannot be blank"}])
                comment = self._new_comment(number, data["body"], self.actor, self._association(self.actor))
                out = self._comment_json(comment, version)
                return 201, out, {"location": out["url"]}
        elif m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            comment = self._comments.get(int(m.group(1)))
            if method == "GET":
                if comment is None:
                    raise _HTTPError(404, "Not Found", _DOC["get_comment"])
                return 200, self._comment_json(comment, version), _last_modified(comment["updated_at"])
            if method == "PATCH":
                doc = _DOC["update_comment"]
                need_auth(doc)
                data = need_object(doc)
                if comment is None:
                    raise _HTTPError(404, "Not Found", doc)
                if not isinstance(data.get("body"), str):
                    raise _HTTPError(422, 'Invalid request.\n\n"body" wasn\'t supplied.', doc)
                comment["body"] = data["body"]
                comment["updated_at"] = self._tick()
                return 200, self._comment_json(comment, version), {}
        elif rest == "/pulls":
            if method == "GET":
                return self._list_pulls(query, version)
            if method == "POST":
                need_auth(_DOC["create_pull"])
                pull = self._create_pull(need_object(_DOC["create_pull"]), self.actor)
                out = self._pull_json(pull, version, full=True)
                return 201, out, {"location": out["url"]}
        elif m := re.fullmatch(r"/pulls/(\d+)", rest):
            if method == "GET":
                pull = self._pulls.get(int(m.group(1)))
                if pull is None:
                    raise _HTTPError(404, "Not Found", _DOC["get_pull"])
                return 200, self._pull_json(pull, version, full=True), {}
        raise _HTTPError(404, "Not Found", DOCS)

    def _list_pulls(self, query: dict[str, str], version: str) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _HTTPError(422, "Validation Failed", _DOC["list_pulls"], errors=[
                {"resource": "Search", "field": "state", "code": "invalid"}])
        items = [p for p in self._pulls.values() if state == "all" or p["state"] == state]
        head = query.get("head")
        if head and ":" in head:  # GitHub ignores a head filter without the OWNER: prefix
            head_owner, branch = head.split(":", 1)
            items = [p for p in items if head_owner.lower() == self.owner.lower() and p["head"] == branch]
        if query.get("base"):
            items = [p for p in items if p["base"] == query["base"]]
        sort = query.get("sort", "created")
        direction = query.get("direction", "desc" if sort == "created" else "asc")
        key = "updated_at" if sort in ("updated", "long-running") else "created_at"
        items.sort(key=lambda p: (self._issues[p["number"]][key], p["number"]), reverse=direction == "desc")
        page, links = self._page(items, query, "/pulls")
        return 200, [self._pull_json(p, version, full=False) for p in page], links

    def _page(self, items: list[Any], query: dict[str, str], suffix: str) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` and, when there are more, GitHub's Link header (whose URLs
        use the /repositories/{id} form, as GitHub's do)."""
        per_page = min(max(_int(query.get("per_page"), 30), 1), 100)
        page = max(_int(query.get("page"), 1), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        if last == 1:
            return chunk, {}
        params = [(k, v) for k, v in query.items() if k != "page"]

        def link(n: int, rel: str) -> str:
            query_string = urlencode([*params, ("page", n)])
            return f'<{self.api_url}/repositories/{self.repo_id}{suffix}?{query_string}>; rel="{rel}"'

        rels = []
        if page > 1:
            rels.append(link(min(page - 1, last), "prev"))
        if page < last:
            rels.append(link(page + 1, "next"))
            rels.append(link(last, "last"))
        if page > 1:
            rels.append(link(1, "first"))
        return chunk, {"link": ", ".join(rels)}

    def _rate_limit_json(self, version: str, authenticated: bool) -> dict[str, Any]:
        identity = self.actor if authenticated else ""
        headers = self._rate_headers(identity, count=False)
        core = {"limit": int(headers["x-ratelimit-limit"]), "used": int(headers["x-ratelimit-used"]),
                "remaining": int(headers["x-ratelimit-remaining"]), "reset": self._rate_reset}

        def fresh(limit: int, seconds: int) -> dict[str, int]:
            return {"limit": limit, "used": 0, "remaining": limit, "reset": int(time.time()) + seconds}

        out: dict[str, Any] = {"resources": {
            "core": core,
            "search": fresh(30 if authenticated else 10, 60),
            "graphql": fresh(5000 if authenticated else 0, 3600),
            "integration_manifest": fresh(5000, 3600),
            "source_import": fresh(100, 60),
            "code_scanning_upload": fresh(1000, 3600),
            "actions_runner_registration": fresh(10000, 3600),
            "scim": fresh(15000, 3600),
            "dependency_snapshots": fresh(100, 60),
            "code_search": fresh(10, 60),
        }}
        if version == DEFAULT_API_VERSION:
            out["rate"] = dict(core)
        return out


def _check_association(value: str) -> None:
    if value not in _ASSOCIATIONS:
        raise ValueError(f"author_association must be one of {sorted(_ASSOCIATIONS)}, not {value!r}")


def _default_message(status: int) -> str:
    return {401: "Bad credentials", 404: "Not Found", 422: "Validation Failed"}.get(
        status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _last_modified(moment: datetime) -> dict[str, str]:
    return {"last-modified": format_datetime(moment, usegmt=True)}


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _make_handler(stand_in: GitHubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        github = stand_in

    return Handler


class _Handler(BaseHTTPRequestHandler):
    github: GitHubStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as GitHub's front ends do
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "github.com"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload = self.github._dispatch(self.command, self.path, headers, raw)
        data = b"" if payload is None else _encode(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("x-github-media-type", "github.v3; format=json")
        self.send_header("x-content-type-options", "nosniff")
        self.send_header("access-control-allow-origin", "*")
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.end_headers()
        if status != 304:
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a loopback stand-in for the GitHub REST API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--owner", default="octo-org")
    parser.add_argument("--repo", default="calc")
    parser.add_argument("--default-branch", default="main")
    parser.add_argument("--origin", type=Path, help="the bare git repository pull requests are checked against")
    parser.add_argument("--token", help="the only token accepted")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--issue", nargs=3, action="append", default=[], metavar=("NUMBER", "TITLE", "BODY"))
    args = parser.parse_args(argv)
    stand_in = GitHubStandIn(owner=args.owner, repo=args.repo, default_branch=args.default_branch, origin=args.origin,
                             token=args.token, private=args.private, port=args.port)
    for number, title, body in args.issue:
        stand_in.add_issue(int(number), title, body)
    with stand_in:
        print(f"GITHUB_API_URL={stand_in.api_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
