"""The GitHub stand-in answers as GitHub does: checked with a real githubkit client.

Every response is parsed by githubkit (``.parsed_data``) and validated again in pydantic's
strict mode against githubkit's models for REST API version 2026-03-10, so a missing field,
a wrong type or a number sent as a string fails here rather than against GitHub.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit import GitHub
from githubkit.exception import PrimaryRateLimitExceeded, RequestFailed, SecondaryRateLimitExceeded
from githubkit.retry import RetryChainDecision, RetryServerError
from githubkit.utils import UNSET
from githubkit.webhooks import parse_obj
from pydantic import TypeAdapter, ValidationError

with warnings.catch_warnings():
    warnings.simplefilter("error")  # githubkit_schemas.latest imports without a deprecation warning
    from githubkit_schemas.latest.models import (
        BasicError,
        FullRepository,
        Issue,
        IssueComment,
        PullRequest,
        PullRequestSimple,
        RateLimitOverview,
    )
    from githubkit_schemas.latest.models import ValidationError as GitHubValidationError
    from githubkit_schemas.latest.models import WebhookIssueCommentCreated, WebhookIssuesLabeled

from cwm_agent.testing.github_stand_in import GitHubStandIn

O, R = "octo-org", "calc"
TOKEN = "ghs_0123456789abcdefABCDEF0123456789abcd"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# The keys of a real `GET /repos/{o}/{r}/issues/{n}` answer (API version 2022-11-28, captured
# from api.github.com) and of the simple-user objects in it: the stand-in sends all of them.
REAL_ISSUE_KEYS = {
    "url", "repository_url", "labels_url", "comments_url", "events_url", "html_url", "id", "node_id", "number",
    "title", "user", "labels", "state", "locked", "assignee", "assignees", "milestone", "comments", "created_at",
    "updated_at", "closed_at", "author_association", "type", "active_lock_reason", "sub_issues_summary",
    "issue_dependencies_summary", "body", "closed_by", "reactions", "timeline_url", "performed_via_github_app",
    "state_reason",
}
REAL_USER_KEYS = {
    "login", "id", "node_id", "avatar_url", "gravatar_id", "url", "html_url", "followers_url", "following_url",
    "gists_url", "starred_url", "subscriptions_url", "organizations_url", "repos_url", "events_url",
    "received_events_url", "type", "user_view_type", "site_admin",
}
REAL_LABEL_KEYS = {"id", "node_id", "url", "name", "color", "default", "description"}


def strict(model: Any, response: Any) -> Any:
    """Validate a response body against ``model`` in pydantic's strict mode."""
    raw = response.content if hasattr(response, "content") else json.dumps(response)
    return TypeAdapter(model).validate_json(raw, strict=True)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
           "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin with main, "fix" (one commit: +3 -1 in one file, one new file) and
    "same" (main's commit, nothing to merge)."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    (work / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "calc")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(work, "push", "-q", "origin", "HEAD:same")
    git(work, "checkout", "-qb", "fix")
    (work / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n")
    (work / "test_calc.py").write_text("")
    git(work, "add", ".")
    git(work, "commit", "-qm", "fix add")
    git(work, "push", "-q", "origin", "fix")
    return bare


@pytest.fixture
def stand_in(origin: Path):
    with GitHubStandIn(origin=origin, token=TOKEN) as server:
        server.add_issue(7, "add() subtracts", "`add(2, 2)` returns 0.", labels=("bug", "cwm"))
        yield server


@pytest.fixture
def gh(stand_in: GitHubStandIn):
    with GitHub(TOKEN, base_url=stand_in.api_url, auto_retry=False) as client:
        yield client


def status_of(excinfo: pytest.ExceptionInfo[RequestFailed]) -> int:
    return excinfo.value.response.status_code


# -- shapes ------------------------------------------------------------------------------


def test_strict_validation_is_live() -> None:
    """The validation the other tests rely on rejects a body that lacks a required field or
    has a wrongly typed one (so their passing means something)."""
    with GitHubStandIn() as server:
        body = httpx.get(f"{server.api_url}/repos/{O}/{R}").json()
    strict(FullRepository, body)
    with pytest.raises(ValidationError, match="node_id"):
        strict(FullRepository, {k: v for k, v in body.items() if k != "node_id"})
    with pytest.raises(ValidationError, match="forks_count"):
        strict(FullRepository, {**body, "forks_count": "0"})


def test_get_repository_is_githubs_full_repository(gh: GitHub, stand_in: GitHubStandIn, origin: Path) -> None:
    response = gh.rest.repos.get(O, R)
    repo = response.parsed_data
    strict(FullRepository, response)
    assert isinstance(repo, FullRepository)
    assert (repo.full_name, repo.default_branch, repo.private, repo.visibility) == (f"{O}/{R}", "main", False, "public")
    assert repo.clone_url == origin.resolve().as_uri()
    assert repo.html_url == f"https://github.com/{O}/{R}"
    assert repo.url == f"{stand_in.api_url}/repos/{O}/{R}"
    assert repo.owner.login == O and repo.owner.type == "Organization" and repo.organization.login == O
    assert repo.permissions.push and not repo.permissions.admin
    assert base64.b64decode(repo.node_id).decode() == f"010:Repository{repo.id}"
    assert repo.open_issues_count == 1
    raw = response.json()
    assert all(ISO_Z.match(raw[k]) for k in ("created_at", "updated_at", "pushed_at"))
    assert "has_downloads" not in raw  # removed in 2026-03-10
    assert response.headers["x-github-api-version-selected"] == "2026-03-10"


def test_get_issue_has_githubs_shape(gh: GitHub, stand_in: GitHubStandIn) -> None:
    response = gh.rest.issues.get(O, R, 7)
    issue = response.parsed_data
    strict(Issue, response)
    assert (issue.number, issue.title, issue.body, issue.state) == (7, "add() subtracts", "`add(2, 2)` returns 0.",
                                                                   "open")
    assert issue.html_url == f"https://github.com/{O}/{R}/issues/7"
    assert issue.url == f"{stand_in.api_url}/repos/{O}/{R}/issues/7"
    assert issue.pull_request is UNSET and "pull_request" not in response.json()
    assert (issue.user.login, issue.author_association) == ("alice", "OWNER")
    bug, cwm = issue.labels
    assert (bug.name, bug.color, bug.default, bug.description) == ("bug", "d73a4a", True, "Something isn't working")
    assert (cwm.name, cwm.default) == ("cwm", False) and re.fullmatch(r"[0-9a-f]{6}", cwm.color)
    raw = response.json()
    assert REAL_ISSUE_KEYS - {"assignee"} <= raw.keys() and "assignee" not in raw  # 2026-03-10 dropped it
    assert REAL_USER_KEYS <= raw["user"].keys()
    assert all(REAL_LABEL_KEYS <= label.keys() for label in raw["labels"])
    assert ISO_Z.match(raw["created_at"]) and ISO_Z.match(raw["updated_at"])
    assert base64.b64decode(issue.node_id).decode() == f"05:Issue{issue.id}"
    assert response.headers["last-modified"].endswith(" GMT")


def test_a_closed_locked_pull_request_issue(gh: GitHub, stand_in: GitHubStandIn) -> None:
    stand_in.add_issue(9, "Old PR", None, user="erin", state="closed", locked=True,
                       author_association="CONTRIBUTOR", pull_request=True)
    response = gh.rest.issues.get(O, R, 9)
    strict(Issue, response)
    issue = response.parsed_data
    assert (issue.state, issue.state_reason, issue.locked, issue.body) == ("closed", "completed", True, None)
    assert ISO_Z.match(response.json()["closed_at"]) and issue.closed_by.login == "erin"
    assert issue.html_url == f"https://github.com/{O}/{R}/pull/9"
    assert issue.pull_request.url == f"{stand_in.api_url}/repos/{O}/{R}/pulls/9"
    comment = stand_in.add_comment(9, "bot says", user="renovate[bot]", user_type="Bot", author_association="NONE")
    assert comment["html_url"].endswith(f"/pull/9#issuecomment-{comment['id']}")
    assert comment["user"]["type"] == "Bot" and comment["user"]["html_url"] == "https://github.com/apps/renovate"
    with pytest.raises(ValueError):
        stand_in.add_issue(10, "t", "b", author_association="BOSS")
    with pytest.raises(ValueError):
        stand_in.add_issue(9, "again", "b")


def test_a_request_without_a_version_header_gets_2022_11_28(stand_in: GitHubStandIn) -> None:
    response = httpx.get(f"{stand_in.api_url}/repos/{O}/{R}/issues/7", headers={"Authorization": f"token {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["x-github-api-version-selected"] == "2022-11-28"
    assert REAL_ISSUE_KEYS <= response.json().keys()  # assignee included
    bad = httpx.get(f"{stand_in.api_url}/repos/{O}/{R}", headers={"X-GitHub-Api-Version": "2099-01-01"})
    assert bad.status_code == 400 and "2099-01-01" in bad.json()["message"]


def test_every_response_has_githubs_headers(stand_in: GitHubStandIn) -> None:
    answers = [
        httpx.get(f"{stand_in.api_url}/repos/{O}/{R}", headers={"X-GitHub-Api-Version": "2026-03-10"}),
        httpx.get(f"{stand_in.api_url}/nope", headers={"X-GitHub-Api-Version": "2026-03-10"}),
        httpx.post(f"{stand_in.api_url}/repos/{O}/{R}/issues/7/comments", json={"body": "x"},
                   headers={"X-GitHub-Api-Version": "2026-03-10"}),
    ]
    assert [a.status_code for a in answers] == [200, 404, 401]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json; charset=utf-8"
        assert answer.headers["x-github-api-version-selected"] == "2026-03-10"
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used",
                "x-ratelimit-resource", "x-github-request-id"} <= answer.headers.keys()
        assert int(answer.headers["x-ratelimit-reset"]) > time.time()
    assert answers[1].json() == {"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                                 "status": "404"}
    strict(BasicError, answers[1])
    assert answers[0].headers["x-ratelimit-limit"] == "60"  # unauthenticated
    assert int(answers[2].headers["x-ratelimit-remaining"]) == 60 - 3


# -- comments ----------------------------------------------------------------------------


def test_list_comments_paginates_with_githubs_link_header(gh: GitHub, stand_in: GitHubStandIn) -> None:
    for n in range(5):
        stand_in.add_comment(7, f"comment {n}", user="carol" if n % 2 else "bob")
    first = gh.rest.issues.list_comments(O, R, 7, per_page=2)
    strict(list[IssueComment], first)
    assert [c.body for c in first.parsed_data] == ["comment 0", "comment 1"]
    rid = stand_in.repo_id
    assert first.headers["link"] == (
        f'<{stand_in.api_url}/repositories/{rid}/issues/7/comments?per_page=2&page=2>; rel="next", '
        f'<{stand_in.api_url}/repositories/{rid}/issues/7/comments?per_page=2&page=3>; rel="last"')
    last = gh.rest.issues.list_comments(O, R, 7, per_page=2, page=3)
    strict(list[IssueComment], last)
    assert [c.body for c in last.parsed_data] == ["comment 4"]
    assert 'rel="next"' not in last.headers["link"]
    assert 'page=2>; rel="prev"' in last.headers["link"] and 'page=1>; rel="first"' in last.headers["link"]
    beyond = gh.rest.issues.list_comments(O, R, 7, per_page=2, page=4)
    assert beyond.parsed_data == []
    # githubkit's paginator follows the Link URLs (the /repositories/{id} form) to the end.
    everything = list(gh.rest.paginate(gh.rest.issues.list_comments, owner=O, repo=R, issue_number=7, per_page=2))
    assert [c.body for c in everything] == [f"comment {n}" for n in range(5)]
    assert [c.user.login for c in everything] == ["bob", "carol", "bob", "carol", "bob"]
    followed = [r for r in stand_in.requests if r.route.startswith("/repositories/")]
    assert [r.query["page"] for r in followed] == ["2", "3"]
    # githubkit's paginator sends the next pages without X-GitHub-Api-Version, so GitHub (and
    # the stand-in) answer them in its default version, 2022-11-28.
    assert all("x-github-api-version" not in r.headers for r in followed)
    assert all(ISO_Z.match(c["created_at"]) for c in first.json())


def test_create_and_update_a_comment(gh: GitHub, stand_in: GitHubStandIn) -> None:
    created = gh.rest.issues.create_comment(O, R, 7, body="Working on it.")
    assert created.status_code == 201
    strict(IssueComment, created)
    comment = created.parsed_data
    assert comment.body == "Working on it." and comment.author_association == "NONE"
    assert (comment.user.login, comment.user.type, comment.user.id) == ("github-actions[bot]", "Bot", 41898282)
    assert comment.user.html_url == "https://github.com/apps/github-actions"
    assert comment.html_url == f"https://github.com/{O}/{R}/issues/7#issuecomment-{comment.id}"
    assert comment.issue_url == f"{stand_in.api_url}/repos/{O}/{R}/issues/7"
    comment_url = f"{stand_in.api_url}/repos/{O}/{R}/issues/comments/{comment.id}"
    assert created.headers["location"] == comment.url == comment_url
    assert gh.rest.issues.get(O, R, 7).parsed_data.comments == 1
    assert stand_in.requests_to("POST", "/repos/*/*/issues/7/comments")[0].json == {"body": "Working on it."}

    updated = gh.rest.issues.update_comment(O, R, comment.id, body="Done: #8")
    assert updated.status_code == 200
    strict(IssueComment, updated)
    assert updated.parsed_data.body == "Done: #8" and updated.parsed_data.id == comment.id
    assert updated.parsed_data.updated_at > comment.updated_at == updated.parsed_data.created_at
    assert [c["body"] for c in stand_in.comments(7)] == ["Done: #8"]
    assert gh.rest.issues.get_comment(O, R, comment.id).parsed_data.body == "Done: #8"

    with pytest.raises(RequestFailed) as missing:
        gh.rest.issues.update_comment(O, R, 12345, body="x")
    assert status_of(missing) == 404
    with pytest.raises(RequestFailed) as unknown_issue:
        gh.rest.issues.create_comment(O, R, 99, body="x")
    assert status_of(unknown_issue) == 404


def test_a_comment_without_a_body_is_rejected(stand_in: GitHubStandIn) -> None:
    answer = httpx.post(f"{stand_in.api_url}/repos/{O}/{R}/issues/7/comments", json={},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 422 and answer.json()["message"] == 'Invalid request.\n\n"body" wasn\'t supplied.'
    garbage = httpx.post(f"{stand_in.api_url}/repos/{O}/{R}/issues/7/comments", content=b"{not json",
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert garbage.status_code == 400 and garbage.json()["message"] == "Problems parsing JSON"
    assert stand_in.comments(7) == []


def test_a_repeated_get_is_revalidated_and_answered_304(gh: GitHub, stand_in: GitHubStandIn) -> None:
    first = gh.rest.issues.get(O, R, 7)
    second = gh.rest.issues.get(O, R, 7)
    assert second.parsed_data.title == first.parsed_data.title == "add() subtracts"
    wire = stand_in.requests_to("GET", "/repos/*/*/issues/7")
    assert [r.status for r in wire] == [200, 304]
    assert wire[1].headers["if-none-match"] == first.headers["etag"]
    assert first.headers["cache-control"] == "private, max-age=60, s-maxage=60"
    # A change shows up at once: githubkit sends Cache-Control: no-cache, so its cache revalidates.
    gh.rest.issues.create_comment(O, R, 7, body="x")
    assert gh.rest.issues.get(O, R, 7).parsed_data.comments == 1
    assert stand_in.requests_to("GET", "/repos/*/*/issues/7")[-1].status == 200


# -- pull requests -----------------------------------------------------------------------


def test_create_a_draft_pull_request_and_find_it_by_head(gh: GitHub, stand_in: GitHubStandIn, origin: Path) -> None:
    created = gh.rest.pulls.create(O, R, title="Fix add()", head="fix", base="main", body="Fixes #7", draft=True)
    assert created.status_code == 201
    strict(PullRequest, created)
    pull = created.parsed_data
    assert (pull.number, pull.draft, pull.state, pull.title, pull.body) == (8, True, "open", "Fix add()", "Fixes #7")
    head_sha = git(origin, "rev-parse", "refs/heads/fix")
    assert (pull.head.ref, pull.head.sha, pull.head.label) == ("fix", head_sha, f"{O}:fix")
    assert (pull.base.ref, pull.base.sha) == ("main", git(origin, "rev-parse", "refs/heads/main"))
    assert (pull.commits, pull.additions, pull.deletions, pull.changed_files) == (1, 4, 1, 2)
    assert (pull.merged, pull.mergeable, pull.mergeable_state) == (False, None, "unknown")
    assert pull.html_url == f"https://github.com/{O}/{R}/pull/8"
    assert created.headers["location"] == pull.url == f"{stand_in.api_url}/repos/{O}/{R}/pulls/8"
    assert pull.user.login == "github-actions[bot]" and pull.head.repo.clone_url == origin.resolve().as_uri()
    assert "merge_commit_sha" not in created.json()  # removed in 2026-03-10
    assert [p["number"] for p in stand_in.pulls] == [8]

    as_issue = gh.rest.issues.get(O, R, 8)  # a pull request is an issue
    strict(Issue, as_issue)
    assert as_issue.parsed_data.pull_request.html_url == pull.html_url and as_issue.parsed_data.draft is True
    assert gh.rest.pulls.get(O, R, 8).parsed_data.head.sha == head_sha

    listed = gh.rest.pulls.list(O, R, head=f"{O}:fix")
    strict(list[PullRequestSimple], listed)
    assert [(p.number, p.draft, p.head.ref) for p in listed.parsed_data] == [(8, True, "fix")]
    assert gh.rest.pulls.list(O, R, head=f"{O}:other").parsed_data == []
    assert gh.rest.pulls.list(O, R, base="release").parsed_data == []
    assert gh.rest.pulls.list(O, R, state="closed").parsed_data == []
    assert [p.number for p in gh.rest.pulls.list(O, R, state="all").parsed_data] == [8]
    # As on GitHub, a head filter without the OWNER: prefix is ignored: it finds every pull request.
    assert [p.number for p in gh.rest.pulls.list(O, R, head="other").parsed_data] == [8]


def test_pull_requests_list_newest_first_and_page(gh: GitHub, stand_in: GitHubStandIn, origin: Path) -> None:
    work = origin.parent / "work"
    for n in range(3):
        git(work, "checkout", "-qb", f"b{n}", "fix")
        (work / f"f{n}.txt").write_text(str(n))
        git(work, "add", ".")
        git(work, "commit", "-qm", f"b{n}")
        git(work, "push", "-q", "origin", f"b{n}")
        stand_in.add_pull(f"PR {n}", f"b{n}")
    page = gh.rest.pulls.list(O, R, per_page=2)
    strict(list[PullRequestSimple], page)
    assert [p.title for p in page.parsed_data] == ["PR 2", "PR 1"]
    assert 'rel="next"' in page.headers["link"]
    assert [p.title for p in gh.rest.pulls.list(O, R, direction="asc").parsed_data] == ["PR 0", "PR 1", "PR 2"]


@pytest.mark.parametrize(
    ("head", "base", "error"),
    [
        ("nope", "main", {"resource": "PullRequest", "field": "head", "code": "invalid"}),
        ("fix", "nope", {"resource": "PullRequest", "field": "base", "code": "invalid"}),
        ("main", "main", {"resource": "PullRequest", "code": "custom", "message": "No commits between main and main"}),
        ("same", "main", {"resource": "PullRequest", "code": "custom", "message": "No commits between main and same"}),
    ],
)
def test_create_pull_request_validation_failures(gh: GitHub, stand_in: GitHubStandIn, head: str, base: str,
                                                 error: dict[str, str]) -> None:
    with pytest.raises(RequestFailed) as failed:
        gh.rest.pulls.create(O, R, title="t", head=head, base=base)
    assert status_of(failed) == 422
    body = strict(GitHubValidationError, failed.value.response)
    assert body.message == "Validation Failed"
    assert failed.value.response.json()["errors"] == [error]
    assert failed.value.response.json()["status"] == "422"
    assert stand_in.pulls == []


def test_a_second_pull_request_from_one_head_is_refused(gh: GitHub, stand_in: GitHubStandIn) -> None:
    gh.rest.pulls.create(O, R, title="one", head="fix", base="main")
    with pytest.raises(RequestFailed) as failed:
        gh.rest.pulls.create(O, R, title="two", head=f"{O}:fix", base="main")
    assert status_of(failed) == 422
    assert failed.value.response.json()["errors"][0]["message"] == f"A pull request already exists for {O}:fix."
    assert [p["title"] for p in stand_in.pulls] == ["one"]


def test_drafts_unsupported_and_actions_not_permitted(origin: Path) -> None:
    with GitHubStandIn(origin=origin, draft_prs=False) as server, GitHub(
            "t", base_url=server.api_url, auto_retry=False) as client:
        with pytest.raises(RequestFailed) as draft:
            client.rest.pulls.create(O, R, title="t", head="fix", base="main", draft=True)
        assert status_of(draft) == 422
        assert "Draft pull requests are not supported" in draft.value.response.json()["errors"][0]["message"]
        assert client.rest.pulls.create(O, R, title="t", head="fix", base="main").parsed_data.draft is False
    with GitHubStandIn(origin=origin, actions_can_create_prs=False) as server, GitHub(
            "t", base_url=server.api_url, auto_retry=False) as client:
        with pytest.raises(RequestFailed) as forbidden:
            client.rest.pulls.create(O, R, title="t", head="fix", base="main")
        assert status_of(forbidden) == 403
        assert forbidden.value.response.json()["message"] == (
            "GitHub Actions is not permitted to create or approve pull requests.")


# -- authentication ----------------------------------------------------------------------


def test_a_wrong_token_gets_bad_credentials(stand_in: GitHubStandIn) -> None:
    with GitHub("ghp_wrong", base_url=stand_in.api_url, auto_retry=False) as client:
        with pytest.raises(RequestFailed) as failed:
            client.rest.issues.get(O, R, 7)
    assert status_of(failed) == 401
    assert failed.value.response.json()["message"] == "Bad credentials"
    strict(BasicError, failed.value.response)
    for scheme in ("Bearer", "token"):
        answer = httpx.get(f"{stand_in.api_url}/repos/{O}/{R}/issues/7", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert answer.status_code == 200, scheme


def test_without_a_token_reads_work_and_writes_need_authentication(stand_in: GitHubStandIn) -> None:
    with GitHub(base_url=stand_in.api_url, auto_retry=False) as anonymous:
        repo = anonymous.rest.repos.get(O, R)
        strict(FullRepository, repo)
        assert repo.parsed_data.permissions is UNSET  # GitHub shows permissions only to a token
        assert anonymous.rest.issues.get(O, R, 7).parsed_data.number == 7
        with pytest.raises(RequestFailed) as failed:
            anonymous.rest.issues.create_comment(O, R, 7, body="x")
    assert status_of(failed) == 401
    assert failed.value.response.json()["message"] == "Requires authentication"
    assert stand_in.comments(7) == []


def test_a_private_repository_is_not_found_without_a_valid_token(origin: Path) -> None:
    with GitHubStandIn(origin=origin, private=True, token=TOKEN) as server:
        server.add_issue(1, "t", "b")
        with GitHub(base_url=server.api_url, auto_retry=False) as anonymous:
            for call in (lambda: anonymous.rest.repos.get(O, R), lambda: anonymous.rest.issues.get(O, R, 1)):
                with pytest.raises(RequestFailed) as failed:
                    call()
                assert status_of(failed) == 404
                assert failed.value.response.json()["message"] == "Not Found"
        with GitHub(TOKEN, base_url=server.api_url, auto_retry=False) as client:
            repo = client.rest.repos.get(O, R)
            strict(FullRepository, repo)
            assert repo.parsed_data.private is True and repo.parsed_data.visibility == "private"


def test_names_match_case_insensitively(gh: GitHub) -> None:
    assert gh.rest.repos.get("Octo-Org", "CALC").parsed_data.full_name == f"{O}/{R}"
    with pytest.raises(RequestFailed) as failed:
        gh.rest.repos.get(O, "other")
    assert status_of(failed) == 404


# -- rate limits and injected failures ---------------------------------------------------


def test_primary_rate_limit(gh: GitHub, stand_in: GitHubStandIn) -> None:
    stand_in.rate_limit(times=1, reset_in=120)
    with pytest.raises(PrimaryRateLimitExceeded) as limited:
        gh.rest.issues.get(O, R, 7)
    response = limited.value.response
    assert response.status_code == 403
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert 110 <= int(response.headers["x-ratelimit-reset"]) - time.time() <= 121
    assert timedelta(seconds=110) <= limited.value.retry_after <= timedelta(seconds=121)
    assert response.json()["message"].startswith("API rate limit exceeded for user ID 41898282.")
    strict(BasicError, response)
    assert gh.rest.issues.get(O, R, 7).parsed_data.number == 7  # only the one request was limited


def test_secondary_rate_limit(gh: GitHub, stand_in: GitHubStandIn) -> None:
    stand_in.rate_limit(secondary=True, retry_after=30)
    with pytest.raises(SecondaryRateLimitExceeded) as limited:
        gh.rest.issues.create_comment(O, R, 7, body="x")
    assert limited.value.retry_after == timedelta(seconds=30)
    assert limited.value.response.json()["message"].startswith("You have exceeded a secondary rate limit.")
    assert stand_in.comments(7) == []


def test_githubkit_retries_a_rate_limit_once_after_the_reset(stand_in: GitHubStandIn) -> None:
    stand_in.rate_limit(times=1, reset_in=1)
    with GitHub(TOKEN, base_url=stand_in.api_url) as client:  # auto_retry=True: the default
        started = time.monotonic()
        assert client.rest.issues.get(O, R, 7).parsed_data.number == 7
        assert time.monotonic() - started < 3
        assert [r.status for r in stand_in.requests] == [403, 200]
        stand_in.rate_limit(times=2, reset_in=1)
        with pytest.raises(PrimaryRateLimitExceeded):  # one retry only
            client.rest.issues.get(O, R, 7)
    assert [r.status for r in stand_in.requests] == [403, 200, 403, 403]


def test_fail_then_success_with_githubkits_server_error_retry(stand_in: GitHubStandIn) -> None:
    stand_in.fail("GET", "/repos/*/*/issues/*", 500, times=1)
    with GitHub(TOKEN, base_url=stand_in.api_url) as client:  # RETRY_SERVER_ERROR waits 1 s, then 4 s, 9 s
        started = time.monotonic()
        assert client.rest.issues.get(O, R, 7).parsed_data.number == 7
        assert 0.9 <= time.monotonic() - started < 3
    assert [r.status for r in stand_in.requests] == [500, 200]
    stand_in.fail("*", "/repos/*/*/issues/*/comments", 500, times=2, message="Server Error")
    with GitHub(TOKEN, base_url=stand_in.api_url,
                auto_retry=RetryChainDecision(RetryServerError(max_retry=1))) as client:
        with pytest.raises(RequestFailed) as failed:
            client.rest.issues.create_comment(O, R, 7, body="x")
    assert status_of(failed) == 500
    assert failed.value.response.json() == {"message": "Server Error",
                                            "documentation_url": "https://docs.github.com/rest", "status": "500"}
    assert [r.status for r in stand_in.requests][-2:] == [500, 500]
    assert stand_in.comments(7) == []


def test_fail_matches_method_and_path_and_adds_headers(gh: GitHub, stand_in: GitHubStandIn) -> None:
    stand_in.fail("POST", "/repos/*/*/pulls", 403, headers={"X-Accepted-GitHub-Permissions": "pull_requests=write"},
                  message="Resource not accessible by integration")
    assert gh.rest.issues.get(O, R, 7).status_code == 200  # another method and path: untouched
    with pytest.raises(RequestFailed) as failed:
        gh.rest.pulls.create(O, R, title="t", head="fix", base="main")
    assert status_of(failed) == 403
    assert failed.value.response.headers["x-accepted-github-permissions"] == "pull_requests=write"
    assert failed.value.response.json()["message"] == "Resource not accessible by integration"
    assert gh.rest.pulls.create(O, R, title="t", head="fix", base="main").status_code == 201


def test_rate_limit_endpoint(gh: GitHub, stand_in: GitHubStandIn) -> None:
    gh.rest.issues.get(O, R, 7)
    response = gh.rest.rate_limit.get()
    strict(RateLimitOverview, response)
    core = response.parsed_data.resources.core
    assert (core.limit, core.used, core.remaining) == (1000, 1, 999)
    assert "rate" not in response.json()  # removed in 2026-03-10
    legacy = httpx.get(f"{stand_in.api_url}/rate_limit", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert legacy["rate"] == legacy["resources"]["core"]


# -- webhook payloads, requests, quiet ---------------------------------------------------


def test_issues_labeled_event_is_githubs_payload(stand_in: GitHubStandIn) -> None:
    payload = stand_in.event("issues.labeled", issue=7, label="cwm-fix", sender="alice")
    json.dumps(payload)  # written to GITHUB_EVENT_PATH as JSON
    event = parse_obj("issues", payload)
    assert isinstance(event, WebhookIssuesLabeled)
    strict(WebhookIssuesLabeled, payload)
    assert event.action == "labeled" and event.label.name == "cwm-fix"
    assert event.issue.number == 7 and [lb.name for lb in event.issue.labels] == ["bug", "cwm", "cwm-fix"]
    assert event.repository.full_name == f"{O}/{R}" and event.repository.clone_url == stand_in.clone_url
    assert event.sender.login == "alice" and event.organization.login == O
    assert payload["issue"]["html_url"] == f"https://github.com/{O}/{R}/issues/7"
    assert [lb["name"] for lb in stand_in.issue(7)["labels"]] == ["bug", "cwm", "cwm-fix"]


def test_issue_comment_created_event_is_githubs_payload(stand_in: GitHubStandIn) -> None:
    payload = stand_in.event("issue_comment.created", issue=7, body="@cwm please fix", user="dave")
    event = parse_obj("issue_comment", payload)
    assert isinstance(event, WebhookIssueCommentCreated)
    strict(WebhookIssueCommentCreated, payload)
    assert event.action == "created" and event.comment.body == "@cwm please fix"
    assert event.comment.user.login == "dave" and event.sender.login == "dave"
    assert event.issue.number == 7 and event.issue.pull_request is UNSET
    assert [c["body"] for c in stand_in.comments(7)] == ["@cwm please fix"]
    again = stand_in.event("issue_comment.created", issue=7, comment=event.comment.id)
    assert again["comment"]["id"] == event.comment.id and len(stand_in.comments(7)) == 1
    with pytest.raises(ValueError):
        stand_in.event("push")


def test_a_comment_event_on_a_pull_request(gh: GitHub, stand_in: GitHubStandIn) -> None:
    number = gh.rest.pulls.create(O, R, title="Fix", head="fix", base="main").parsed_data.number
    payload = stand_in.event("issue_comment.created", issue=number, body="@cwm also test sub()")
    event = parse_obj("issue_comment", payload)
    strict(WebhookIssueCommentCreated, payload)
    assert event.issue.pull_request.html_url == f"https://github.com/{O}/{R}/pull/{number}"
    assert event.comment.html_url.endswith(f"/pull/{number}#issuecomment-{event.comment.id}")
    opened = stand_in.event("issues.opened", issue=7)
    assert parse_obj("issues", opened).action == "opened" and opened["sender"]["login"] == "alice"


def test_requests_are_recorded(gh: GitHub, stand_in: GitHubStandIn) -> None:
    gh.rest.issues.list_comments(O, R, 7, per_page=5)
    gh.rest.issues.create_comment(O, R, 7, body="hello")
    get, post = stand_in.requests
    assert (get.method, get.path, get.json, get.status) == ("GET", f"/repos/{O}/{R}/issues/7/comments?per_page=5",
                                                            None, 200)
    assert get.query == {"per_page": "5"} and get.route == f"/repos/{O}/{R}/issues/7/comments"
    assert (post.method, post.json, post.status) == ("POST", {"body": "hello"}, 201)
    assert post.headers["authorization"] == f"token {TOKEN}"  # githubkit's scheme
    assert post.headers["x-github-api-version"] == "2026-03-10"
    assert all(k == k.lower() for k in post.headers)


def test_the_stand_in_logs_nothing_per_request(stand_in: GitHubStandIn, gh: GitHub,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    gh.rest.issues.get(O, R, 7)
    httpx.get(f"{stand_in.api_url}/nope")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_timestamps_are_utc_and_advance(stand_in: GitHubStandIn) -> None:
    first = stand_in.add_comment(7, "a")
    second = stand_in.add_comment(7, "b")
    assert ISO_Z.match(first["created_at"]) and second["created_at"] > first["created_at"]
    moment = datetime.strptime(second["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(moment - datetime.now(timezone.utc)) < timedelta(hours=2)


def test_the_module_imports_only_the_standard_library() -> None:
    code = ("import sys, cwm_agent.testing.github_stand_in; "
            "print(sorted(m for m in ('githubkit', 'httpx', 'pydantic', 'hishel') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cli_serves_issues(origin: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cwm_agent.testing.github_stand_in", "--origin", str(origin), "--token", TOKEN,
         "--issue", "3", "Crash", "It crashes."],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("GITHUB_API_URL=http://127.0.0.1:")
        with GitHub(TOKEN, base_url=line.split("=", 1)[1].strip(), auto_retry=False) as client:
            issue = client.rest.issues.get(O, R, 3)
            strict(Issue, issue)
            assert (issue.parsed_data.title, issue.parsed_data.body) == ("Crash", "It crashes.")
            assert client.rest.repos.get(O, R).parsed_data.clone_url == origin.resolve().as_uri()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
