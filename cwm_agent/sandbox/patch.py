"""Patches: parse them, count them, and ask git whether they apply.

A patch here is the text of a `git diff --binary` (what the model submits and
what `Sandbox.diff()` returns). Parsing uses unidiff, which returns an empty
PatchSet for garbage instead of raising, so `parse_patch` checks that it found
files. Whether a patch applies is git's call, never ours:

- In a sandbox, `check_applies` checks against the *base commit*, not the
  working tree the model has been editing: it builds a throw-away index from
  the base commit (`GIT_INDEX_FILE=tmp git read-tree BASE`) and runs
  `git apply --cached --check` against that index. Neither the working tree,
  the real index, nor HEAD is touched, so it is safe mid-episode.
- On the host, `apply_to_repo` (behind `solve --apply`) applies to the
  working tree as the user has it; local changes that conflict make it fail
  rather than be overwritten.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

if TYPE_CHECKING:
    from cwm_agent.sandbox.base import Sandbox

# Lines of base64 in a here-document; the terminator has "_", which base64 never uses.
HEREDOC_END = "CWM_AGENT_B64_END"


class PatchError(ValueError):
    """A patch is malformed or does not apply; the message says what to do."""


class FileStat(NamedTuple):
    path: str
    added: int
    removed: int


@dataclass(frozen=True)
class ApplyCheck:
    """git's verdict on a patch: `ok`, and git's own words in `output`."""

    ok: bool
    output: str

    def __bool__(self) -> bool:
        return self.ok


def parse_patch(text: str) -> PatchSet:
    """Parse a unified/git diff; raise PatchError when it is not one."""
    try:
        patch = PatchSet(text)
    except UnidiffParseError as exc:
        raise PatchError(f"the patch is malformed ({exc}); regenerate it with `git diff`") from exc
    if len(patch) == 0:
        start = text.strip().splitlines()[0][:80] if text.strip() else "(empty)"
        raise PatchError(f"no file changes found in the patch (it starts with {start!r}); "
                         "a patch must be the output of `git diff`")
    return patch


def diffstat(text: str) -> list[FileStat]:
    """(path, lines added, lines removed) per file; binary files count 0 and 0."""
    return [FileStat(f.path, f.added, f.removed) for f in parse_patch(text)]


def summarize(stats: list[FileStat]) -> str:
    """One line in git's --shortstat words: "2 files changed, 3 insertions(+), 1 deletion(-)"."""
    files = len(stats)
    added = sum(s.added for s in stats)
    removed = sum(s.removed for s in stats)
    parts = [f"{files} file{'s' if files != 1 else ''} changed"]
    # git shows both counts when both are zero, else only the non-zero ones.
    if added or not removed:
        parts.append(f"{added} insertion{'s' if added != 1 else ''}(+)")
    if removed or not added:
        parts.append(f"{removed} deletion{'s' if removed != 1 else ''}(-)")
    return ", ".join(parts)


def diffstat_summary(text: str) -> str:
    return summarize(diffstat(text))


def heredoc_b64(data: bytes) -> str:
    """`data` as a quoted here-document body of base64 lines, terminator included.

    Safe to splice into any shell command: only base64 characters and the
    terminator line reach the shell, whatever bytes `data` holds.
    """
    encoded = base64.encodebytes(data).decode("ascii")  # 76-column lines, ends with "\n"
    return f"<<'{HEREDOC_END}'\n{encoded}{HEREDOC_END}\n"


def check_applies(patch: str, target: Sandbox | str | Path, *, base: str | None = None) -> ApplyCheck:
    """Would `patch` apply cleanly to the base commit? Checks only; changes nothing.

    target: a Sandbox (checked inside it, against its base commit) or a host
    git repository (checked against `base`, default HEAD). See the module doc.
    """
    if not patch.strip():
        return ApplyCheck(False, "the patch is empty")
    if isinstance(target, (str, Path)):
        return _check_on_host(patch, Path(target), base or "HEAD")
    return _check_in_sandbox(patch, target, base or getattr(target, "base_commit", None) or "HEAD")


def _check_in_sandbox(patch: str, sandbox: Sandbox, base: str) -> ApplyCheck:
    # One subshell, so the model's session keeps its cwd, variables and $?.
    command = (
        "( tmp=$(mktemp -d) || exit 99; trap 'rm -rf \"$tmp\"' EXIT\n"
        f"base64 -d > \"$tmp/patch\" {heredoc_b64(_encode(patch))}"
        f"cd {shlex.quote(sandbox.repo_root)} || exit 99\n"
        f"GIT_INDEX_FILE=\"$tmp/index\" git read-tree {shlex.quote(base)} 2>&1 || exit 98\n"
        "GIT_INDEX_FILE=\"$tmp/index\" git apply --cached --check \"$tmp/patch\" 2>&1 )"
    )
    result = sandbox.run(command)
    if result.status != "ok":
        return ApplyCheck(False, f"the check itself failed in the sandbox: {result.feedback}")
    return ApplyCheck(result.exit_code == 0, result.output)


def _git(args: list[str], cwd: Path, *, stdin: bytes = b"", env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **(env or {}),
                # Never let git wander up into a repository that merely contains cwd.
                "GIT_CEILING_DIRECTORIES": str(cwd.resolve().parent)}
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, env=full_env)


def _words(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace").strip()


def _check_on_host(patch: str, repo: Path, base: str) -> ApplyCheck:
    if not repo.is_dir():
        raise PatchError(f"{repo} is not a directory")
    with tempfile.TemporaryDirectory(prefix="cwm-agent-check-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        read = _git(["read-tree", base], repo, env=env)
        if read.returncode != 0:
            raise PatchError(f"cannot read {base} of {repo}: {_words(read)}; is it a git repository?")
        check = _git(["apply", "--cached", "--check", "-"], repo, stdin=_encode(patch), env=env)
    return ApplyCheck(check.returncode == 0, _words(check))


def apply_to_repo(patch: str, repo_path: str | Path, check_only: bool = False) -> ApplyCheck:
    """Apply `patch` to the working tree of the host repository at `repo_path` (unstaged).

    It checks first and changes nothing unless the whole patch applies; raises
    PatchError when it does not. Works on a plain directory too (git apply then
    acts like `patch -p1`).
    """
    repo = Path(repo_path)
    if not repo.is_dir():
        raise PatchError(f"{repo} is not a directory; pass the root of the repository the patch is for")
    parse_patch(patch)
    data = _encode(patch)
    check = _git(["apply", "--check", "-"], repo, stdin=data)
    if check.returncode != 0:
        raise PatchError(
            f"the patch does not apply to {repo}:\n{_words(check)}\n"
            "Commit or stash local changes to those files and try again, or apply it by hand "
            "with `git apply --3way`."
        )
    if check_only:
        return ApplyCheck(True, _words(check))
    applied = _git(["apply", "-"], repo, stdin=data)
    if applied.returncode != 0:  # only a race with another writer gets here
        raise PatchError(f"git apply failed in {repo}: {_words(applied)}")
    return ApplyCheck(True, _words(applied))


def _encode(patch: str) -> bytes:
    # surrogateescape: a patch read from a non-UTF-8 file keeps its exact bytes.
    return patch.encode("utf-8", "surrogateescape")
