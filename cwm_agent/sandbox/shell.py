"""What DockerSandbox and BwrapSandbox share: the model's session with its rebuild on a
broken sandbox, the start-up script that makes the starting state the base commit, and
the diff against it. Each subclass supplies how to start, stop and run a side program."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import TracebackType

from cwm_agent.sandbox.base import CommandResult, SandboxError
from cwm_agent.sandbox.session import Session, SessionBroken, quote

log = logging.getLogger(__name__)

GIT_IDENTITY = ("cwm-agent", "cwm-agent@localhost")
BASE_MESSAGE = "cwm-agent: starting state"


class SessionSandbox:
    """The Sandbox protocol over a Session; subclasses implement _stop, _rebuild and _exec."""

    run_id: str
    repo_root: str
    base_commit: str
    _session: Session | None
    _closed: bool

    @property
    def session(self) -> Session:
        if self._session is None:
            raise SandboxError("the sandbox is closed")
        return self._session

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        try:
            return self.session.run(command, timeout=timeout)
        except KeyboardInterrupt:
            # Ctrl-C while the command ran (chat stops the step this way): end every process it
            # started, so the session is fresh for the next command, then let the interrupt go on.
            self._fresh_session()
            raise
        except SessionBroken as broken:
            # The sandbox itself is unusable (its keeper was killed, bash was deleted...):
            # start over from the starting state; the model sees the usual restart notice.
            log.warning("sandbox %s broke (%s); rebuilding it from the starting state", self.run_id, broken)
            self._rebuild()
            return CommandResult("", None, broken.status, broken.seconds)

    def _fresh_session(self) -> None:
        try:
            self.session.restart()
        except SessionBroken as broken:
            log.warning("sandbox %s broke (%s); rebuilding it from the starting state", self.run_id, broken)
            self._rebuild()

    def diff(self, *, exclude: Sequence[str] = ()) -> str:
        """`git diff --binary` of the work tree against `base_commit` (new, deleted and
        binary files included) through a throwaway index, so the model's index is untouched.
        git runs in the sandbox, beside the session, never on the host (the model controls
        .git/config, hooks included)."""
        paths = []
        for path in exclude:
            rel = os.path.relpath(path, self.repo_root) if path.startswith("/") else path
            if not rel.startswith(".."):  # outside the repository: never in the diff anyway
                paths.append(f":(exclude){rel}")
        code, out, err = self._exec(["bash", "-c", DIFF_SCRIPT, "diff", self.base_commit, *paths], timeout=600)
        if code != 0:
            raise SandboxError(f"git diff in the sandbox failed (exit {code}): "
                               f"{(err or out).decode(errors='replace').strip()[-500:]}")
        return out.decode("utf-8", errors="replace")

    def exec(self, argv: list[str], *, timeout: float = 600) -> tuple[int, bytes, bytes]:
        """Run a program beside the model's session (its own process and output, the repo root as
        its working directory, the session's cwd and variables untouched): (exit code, stdout,
        stderr). For the harness's own work in the sandbox: diffs, snapshots."""
        return self._exec(argv, timeout=timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten sandbox still goes away with the object
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass

    def _stop(self) -> None:
        raise NotImplementedError

    def _rebuild(self) -> None:
        raise NotImplementedError

    def _exec(self, argv: list[str], *, timeout: float) -> tuple[int, bytes, bytes]:
        """Run a program beside the session: (exit code, stdout, stderr)."""
        raise NotImplementedError


# --- start-up inside the sandbox ------------------------------------------------------------

MAX_LISTED_PATHS = 2000  # more dirty paths than this: let git find them itself


def setup_script(root: str, *, commit_date: int, dirty: list[str] | None = None) -> str:
    """The start-up, run as the session's first command. Prints BASE=<sha>.

    - git identity and safe.directory (the copy may be owned by another uid);
    - the starting state (uncommitted changes, untracked files) committed as the base.
      `dirty` lists the changed paths when the host knew them: then git hashes just
      those, not the whole tree (the copied index's stat data is stale);
    - the scrub of cwm-interface.md section 7: remotes (and credentials in .git/config), every ref but the current
      branch, upstream, reflogs, and `git gc --prune=now` when any object is left
      that HEAD does not reach (counting is much cheaper than a gc of a big repo).
    The commit date is fixed, so a rebuilt sandbox gets the same base commit."""
    name, email = GIT_IDENTITY
    date = quote(f"@{commit_date} +0000")
    if dirty is None:
        starting = (
            'if ! git rev-parse -q --verify HEAD >/dev/null || '
            '[ -n "$(git status --porcelain --untracked-files=all | head -c 1)" ]; then\n'
            '  git add -A\n  commit_base\nfi'
        )
    elif not dirty:
        starting = ":"
    elif len(dirty) > MAX_LISTED_PATHS:
        starting = "git add -A\ncommit_base"
    else:
        # A listed path that is not in the work tree leaves the index (`git rm --cached`
        # does nothing when a staged `git rm` or `git mv` already took it out, where `git
        # add` would fail: "pathspec did not match any files"); the others are added.
        listed = " ".join(quote(path) for path in dirty)
        starting = f"""here=() gone=()
for path in {listed}; do
  if [ -e "$path" ] || [ -L "$path" ]; then here+=("$path"); else gone+=("$path"); fi
done
[ ${{#gone[@]}} -eq 0 ] || git --literal-pathspecs rm -q -r --cached --ignore-unmatch -- "${{gone[@]}}"
[ ${{#here[@]}} -eq 0 ] || git --literal-pathspecs add -A -- "${{here[@]}}"
commit_base"""
    return f"""builtin cd -- {quote(root)} || exit 1
# (Appended in one write, not three `git config --global` processes; the newline first
# in case the image's file lacks its last one.)
printf '\n[user]\n\tname = %s\n\temail = %s\n[safe]\n\tdirectory = *\n' {quote(name)} {quote(email)} >> ~/.gitconfig
(
set -e
export GIT_AUTHOR_DATE={date} GIT_COMMITTER_DATE={date}
export GIT_AUTHOR_NAME={quote(name)} GIT_COMMITTER_NAME={quote(name)} GIT_AUTHOR_EMAIL={quote(email)} GIT_COMMITTER_EMAIL={quote(email)}
commit_base() {{
  # Plumbing, not `git commit`: that would re-hash every file whose stat data is stale.
  tree=$(git write-tree)
  if parent=$(git rev-parse -q --verify HEAD); then set -- -p "$parent"; else set --; fi
  git update-ref -m {quote(BASE_MESSAGE)} HEAD "$(git commit-tree "$tree" "$@" -m {quote(BASE_MESSAGE)})"
}}
[ -e .git ] || git init -q
git config --local --unset-all core.worktree 2>/dev/null || true
{starting}
for remote in $(git remote); do git remote remove "$remote"; done
# Credentials a CI checkout leaves in .git/config (actions/checkout's http.<url>.extraheader holds
# the job's token) never reach the model.
git config --local --name-only --get-regexp '^(http\\..*extraheader|credential\\..*|url\\..*\\.insteadof)$' 2>/dev/null |
  while read -r key; do git config --local --unset-all "$key" || true; done
branch=$(git symbolic-ref -q HEAD || true)
git for-each-ref --format='delete %(refname)' | {{ grep -v -x -F "delete $branch" || true; }} | git update-ref --stdin
git branch --unset-upstream 2>/dev/null || true
git reflog expire --expire=now --all
stored=0
while read -r key value; do
  case $key in count:|in-pack:) stored=$((stored + value));; esac
done < <(git count-objects -v)
reachable=$(git rev-list --objects --all --indexed-objects | wc -l)
if [ "$stored" -ne "$reachable" ]; then git gc --prune=now --quiet; fi
echo "BASE=$(git rev-parse HEAD)"
)"""


# `diff()`, in DockerSandbox and BwrapSandbox alike: the work tree against the base commit
# through a throw-away index, so new files are included and the model's own index is left
# alone. $1: the base commit; then pathspecs (excludes). Only the patch goes to stdout.
DIFF_SCRIPT = (
    'set -e; index=$(mktemp); trap \'rm -f "$index"\' EXIT; '
    # Refresh the stat data first (content unchanged), so git hashes only what changed.
    'git update-index -q --refresh >/dev/null 2>&1 || true; '
    'real=$(git rev-parse --git-path index); [ ! -f "$real" ] || cp "$real" "$index"; '
    'export GIT_INDEX_FILE="$index"; git add -A; '
    'base=$1; shift; '
    'git -c core.quotepath=false diff --cached --binary --no-color --no-ext-diff --no-textconv '
    '--src-prefix=a/ --dst-prefix=b/ "$base" -- . "$@"'
)


