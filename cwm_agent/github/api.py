"""The REST client and its errors: one line each, saying what to do.

Tokens come from the caller or from GITHUB_TOKEN / GH_TOKEN; the API from GITHUB_API_URL
(GitHub Enterprise, the tests' stand-in) or api.github.com. Server errors (5xx) are retried
three times (after 1, 4 and 9 s, githubkit's RetryServerError); a rate limit is not waited
out: it fails at once with the time it resets.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
SERVER_RETRIES = 3

T = TypeVar("T")


class GitHubError(Exception):
    """A GitHub request failed; the message is one line with the fix."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def token_from(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or None


def api_url_from(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def server_url_from(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")


def client(token: str | None = None, api_url: str | None = None, *,
           on_request: Callable[[Any], None] | None = None) -> Any:
    """A githubkit client: the token given (or none: public data only), the API given;
    ``on_request`` sees every HTTP request it sends (retries too)."""
    from githubkit import GitHub
    from githubkit.retry import RetryChainDecision, RetryServerError

    # githubkit logs each retry with a traceback; ours is the one line of GitHubError.
    logging.getLogger("githubkit").setLevel(logging.ERROR)
    return GitHub(token, base_url=api_url or api_url_from(), user_agent="cwm-agent", timeout=30,
                  auto_retry=RetryChainDecision(RetryServerError(SERVER_RETRIES)), http_cache=False,
                  event_hooks={"request": [on_request]} if on_request else None)


def call(what: str, request: Callable[[], T], *, token: bool) -> T:
    """Run one request; a failure becomes a GitHubError saying what `what` needed."""
    from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed, RequestTimeout

    try:
        return request()
    except RateLimitExceeded as exc:
        reset = exc.response.headers.get("x-ratelimit-reset")
        when = (f" (it resets at {time.strftime('%H:%M:%S', time.localtime(int(reset)))})"
                if reset and reset.isdigit() else "")
        hint = "" if token else "; set GITHUB_TOKEN for a higher limit"
        raise GitHubError(f"GitHub's API rate limit is exhausted while {what}{when}{hint}", 403) from None
    except RequestFailed as exc:
        status = exc.response.status_code
        message = _message(exc.response)
        if status == 401:
            raise GitHubError(f"GitHub rejected the token while {what} (401 {message}); check GITHUB_TOKEN "
                              "(or GH_TOKEN): it may be expired or mistyped", 401) from None
        if status == 403:
            raise GitHubError(f"GitHub refused {what} (403 {message}); the token needs more permissions "
                              "(contents, issues and pull-requests: write for the Action)", 403) from None
        if status == 404:
            hint = ("; check the URL, or, for a private repository, that the token can read it" if token else
                    "; check the URL, or set GITHUB_TOKEN if the repository is private")
            raise GitHubError(f"GitHub found nothing while {what} (404){hint}", 404) from None
        raise GitHubError(f"GitHub answered {status} while {what}: {message}", status) from None
    except RequestTimeout:
        raise GitHubError(f"GitHub did not answer in time while {what}; try again later") from None
    except RequestError as exc:
        raise GitHubError(f"cannot reach GitHub's API while {what}: {exc}; check GITHUB_API_URL and the "
                          "network") from None


def _message(response: Any) -> str:
    try:
        data = response.json()
    except Exception:
        return (response.text or "").strip()[:200]
    if isinstance(data, dict):
        message = str(data.get("message", ""))
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(str(e.get("message") or e.get("code")) if isinstance(e, dict) else str(e)
                                for e in errors)
            message = f"{message}: {details}"
        return message[:300]
    return str(data)[:200]
