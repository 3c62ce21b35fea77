"""Per-step snapshots of the files in a sandbox's repository, for the interactive chat:
/undo puts the files back as they were before the model's last action (`take` before each
action, `restore` to undo it), and --resume rebuilds the last state in a fresh sandbox
(`diff` of the last snapshot, kept on the host, then `apply` in the new sandbox).

A snapshot is a git commit of the work tree's files (.gitignore respected) made inside the
sandbox, by git in the sandbox (`sandbox.exec`, beside the model's session), never by git on
this host: the model controls .git/config, hooks and filters included.

The model's own git state is never touched, because the model may be using it: the files go
through a private index file inside .git (cwm-agent-snapshot.index, kept between takes so
`git add -A` finds changed files by their stat data instead of hashing the whole tree again),
not the model's index; the commits hang on private refs (refs/cwm-agent/snapshots/<label>,
which keep them from `git gc`), not on HEAD or a branch. `git status` shows nothing new: the
index file lives inside .git, and refs outside refs/heads have no reflog and no status.

What a snapshot holds is what `SessionSandbox.diff` sees: every file that is tracked or not
ignored. Ignored files (build output, caches) are neither saved nor restored nor deleted.
"""

from __future__ import annotations

import base64
import posixpath
import re
import time
from dataclasses import dataclass
from typing import Protocol

from cwm_agent.sandbox.base import SandboxError
from cwm_agent.sandbox.session import quote
from cwm_agent.sandbox.shell import GIT_IDENTITY

INDEX_NAME = "cwm-agent-snapshot.index"  # in the git directory, where `git status` never looks
REF_PREFIX = "refs/cwm-agent/snapshots/"
RESTORED_REF = "refs/cwm-agent/restored"  # keeps the state last restored (the private index's) alive
DEFAULT_TIMEOUT = 600.0
# One argv string may hold 128 KiB (MAX_ARG_STRLEN), all of them together about 2 MiB (ARG_MAX,
# environment included): a patch goes in as base64 pieces of 96 KiB, ten at most per exec.
PIECE = 96 * 1024
PIECES_PER_EXEC = 10

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Snapshot:
    commit: str  # sha of a commit holding the work tree's files (.gitignore respected)
    tree: str  # its tree: two snapshots with the same tree hold the same files


class SnapshotError(SandboxError):
    """A snapshot could not be taken, restored, diffed or applied. The message says what
    failed and what still works."""


class ExecSandbox(Protocol):
    """What this module needs of a sandbox (SessionSandbox has it)."""

    repo_root: str
    base_commit: str | None

    def exec(self, argv: list[str], *, timeout: float) -> tuple[int, bytes, bytes]: ...


# --- the scripts, run in the sandbox with the repo root as cwd ------------------------------------

_NAME, _EMAIL = GIT_IDENTITY

# $1: GIT_CEILING_DIRECTORIES (the repo root's parent: never find a repository above it),
# $2: the base commit; the script's own arguments follow. Exit 3: no .git; 4: git sees no
# repository there. Defines `snap`: the work tree into the private index, printing its tree.
_PRELUDE = f"""set -u
[ -e .git ] || [ -L .git ] || exit 3
export GIT_CEILING_DIRECTORIES=$1
base=$2
shift 2
paths=$(git rev-parse --git-path index --git-path {INDEX_NAME}) || exit 4
real=${{paths%%$'\\n'*}}
export GIT_INDEX_FILE=${{paths#*$'\\n'}}
export GIT_AUTHOR_NAME={quote(_NAME)} GIT_COMMITTER_NAME={quote(_NAME)}
export GIT_AUTHOR_EMAIL={quote(_EMAIL)} GIT_COMMITTER_EMAIL={quote(_EMAIL)}
# Modes always count (the executable bit is restored even where core.fileMode is false);
# no fsmonitor hook or split index of the model's in the way.
g() {{ git -c core.fileMode=true -c core.fsmonitor=false -c core.splitIndex=false "$@"; }}
snap() {{
  rm -f "$GIT_INDEX_FILE.lock"  # a take cut off by its timeout
  if [ ! -f "$GIT_INDEX_FILE" ]; then
    # First take: start from the model's index (its stat data spares hashing unchanged files,
    # and tracked files that .gitignore matches stay in, as in SessionSandbox.diff).
    if [ -f "$real" ]; then cp "$real" "$GIT_INDEX_FILE" || return 1
    else g read-tree "$base" || return 1; fi
  fi
  g update-index -q --refresh >/dev/null 2>&1
  g add -A && g write-tree
}}
# A damaged private index (its objects pruned by the model's `git gc`...): once more from scratch.
snap_or_retry() {{ snap || {{ rm -f "$GIT_INDEX_FILE"; snap; }}; }}
"""

# $1 label, $2 parent commit or "", $3 its tree or "", $4 date (@seconds +0000).
# Prints "SAME" (the files are the parent's) or "SNAPSHOT <commit> <tree>".
TAKE_SCRIPT = _PRELUDE + """label=$1 parent=$2 parent_tree=$3
export GIT_AUTHOR_DATE=$4 GIT_COMMITTER_DATE=$4
tree=$(snap_or_retry) || exit 5
set --
if [ -n "$parent" ] && git cat-file -e "$parent^{commit}" 2>/dev/null; then
  if [ "$tree" = "$parent_tree" ]; then echo SAME; exit 0; fi
  set -- -p "$parent"
fi
commit=$(git commit-tree "$tree" "$@" -m "cwm-agent snapshot: $label") || exit 6
git update-ref "refs/cwm-agent/snapshots/$label" "$commit" || exit 6
echo "SNAPSHOT $commit $tree"
"""

# $1 target commit, $2 its tree. Prints the changed paths, NUL-terminated.
RESTORE_SCRIPT = _PRELUDE + f"""target=$1 target_tree=$2
git cat-file -e "$target_tree^{{tree}}" 2>/dev/null || exit 7
current=$(snap_or_retry) || exit 5
if [ "$current" != "$target_tree" ]; then
  g diff-tree -r -z --no-renames --name-only "$current" "$target_tree" || exit 8
  # The private index holds `current` with fresh stat data: a one-tree reset rewrites only the
  # files that differ, deletes those `target` lacks (and the folders that leaves empty), and
  # overwrites ignored files that stand where `target` has a file.
  g read-tree --reset -u "$target_tree" >&2 || exit 9
fi
if git cat-file -e "$target^{{commit}}" 2>/dev/null; then git update-ref {RESTORED_REF} "$target" || true; fi
"""

# $1 snapshot commit.
DIFF_SNAPSHOT_SCRIPT = _PRELUDE + """git cat-file -e "$1^{commit}" 2>/dev/null || exit 7
git -c core.quotepath=false diff --binary --no-color --no-ext-diff --no-textconv \\
  --src-prefix=a/ --dst-prefix=b/ "$base" "$1" -- . || exit 8
"""

# $1 the temp file ("" for a new one), $2 1 when this is the last piece, then base64 pieces.
# Prints "FILE <path>" until the last piece; then decodes and applies.
APPLY_SCRIPT = """set -u
file=$1 last=$2
shift 2
if [ -z "$file" ]; then file=$(mktemp "${TMPDIR:-/tmp}/cwm-agent-patch.XXXXXX") || exit 10; fi
if [ "$last" = 1 ]; then trap 'rm -f "$file" "$file.patch"' EXIT; fi
printf %s "$@" >> "$file" || exit 10
if [ "$last" != 1 ]; then echo "FILE $file"; exit 0; fi
[ -e .git ] || [ -L .git ] || exit 3
base64 -d < "$file" > "$file.patch" || exit 10
git apply --binary --whitespace=nowarn "$file.patch" >&2 || exit 11
"""


# --- the API -----------------------------------------------------------------------------------

def take(sandbox: ExecSandbox, label: str, parent: Snapshot | None = None, *,
         timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """Snapshot the work tree's files as commit refs/cwm-agent/snapshots/<label> (its parent
    `parent`'s commit). When the files are `parent`'s, returns `parent` itself and makes no
    commit. One exec in the sandbox."""
    if not _LABEL.match(label) or ".." in label or label.endswith(".lock"):
        raise ValueError(f"a snapshot label is letters, digits, '.', '_' and '-' (not {label!r})")
    if parent is not None:
        _check(parent)
    code, out, err = _run(sandbox, TAKE_SCRIPT, "take", [
        label, parent.commit if parent else "", parent.tree if parent else "",
        f"@{int(time.time())} +0000"], timeout)
    if code != 0:
        raise _failure(sandbox, code, err, doing="taking a snapshot of the files",
                       consequence="no snapshot of this step, so /undo cannot go back to it; "
                                   "the files and the model's session are unaffected")
    text = out.decode(errors="replace")
    if parent is not None and text.strip() == "SAME":
        return parent
    found = re.search(r"^SNAPSHOT ([0-9a-f]{40,64}) ([0-9a-f]{40,64})$", text, re.M)
    if not found:
        raise SnapshotError(f"taking a snapshot in the sandbox printed no commit ({_tail(out + err)}); "
                            "no snapshot of this step, so /undo cannot go back to it; the files are unaffected")
    return Snapshot(found.group(1), found.group(2))


def restore(sandbox: ExecSandbox, target: Snapshot, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Put the work tree's files back as they were in `target`: changed files rewritten
    (modes too), deleted ones restored, new ones removed (and folders left empty by that).
    Ignored files are left alone. Returns the repo-relative paths written or removed.
    One exec in the sandbox."""
    _check(target)
    code, out, err = _run(sandbox, RESTORE_SCRIPT, "restore", [target.commit, target.tree], timeout)
    if code != 0:
        consequence = ("the files were left as they are; the model's session still works"
                       if code != 9 else
                       "some files may be restored and others not; restoring the same snapshot again may finish it")
        raise _failure(sandbox, code, err, doing=f"restoring the files of snapshot {target.commit[:12]}",
                       consequence=consequence)
    return [path.decode("utf-8", "surrogateescape") for path in out.split(b"\0") if path]


def diff(sandbox: ExecSandbox, snapshot: Snapshot, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """`git diff --binary` from the base commit to `snapshot`, as `SessionSandbox.diff` prints
    it for the same files. Bytes that are not UTF-8 come back as surrogate escapes (decoded
    with errors="surrogateescape"), so `apply` gets the exact patch back."""
    _check(snapshot)
    code, out, err = _run(sandbox, DIFF_SNAPSHOT_SCRIPT, "diff", [snapshot.commit], timeout)
    if code != 0:
        raise _failure(sandbox, code, err, doing=f"the diff of snapshot {snapshot.commit[:12]}",
                       consequence="the files and the model's session are unaffected; "
                                   "SessionSandbox.diff() still gives the work tree's diff")
    return out.decode("utf-8", "surrogateescape")


def apply(sandbox: ExecSandbox, patch: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Apply a `diff` of a snapshot to the work tree of a fresh sandbox of the same repository
    (`git apply --binary`: all of it or, when it does not apply, nothing). The patch goes in
    as base64 pieces appended to a temp file in the sandbox, so its size has no limit."""
    data = patch.encode("utf-8", "surrogateescape")
    if not data.strip():
        return
    encoded = base64.b64encode(data).decode("ascii")
    pieces = [encoded[i:i + PIECE] for i in range(0, len(encoded), PIECE)]
    groups = [pieces[i:i + PIECES_PER_EXEC] for i in range(0, len(pieces), PIECES_PER_EXEC)]
    file = ""
    for number, group in enumerate(groups):
        last = number == len(groups) - 1
        try:
            code, out, err = sandbox.exec(["bash", "-c", APPLY_SCRIPT, "apply", file, "1" if last else "0", *group],
                                          timeout=timeout)
        except SandboxError as exc:
            _discard(sandbox, file)
            raise SnapshotError(f"applying the saved changes in the sandbox failed: {exc}; "
                                "the sandbox's files may be at their starting state") from exc
        if code != 0:
            if not last:
                _discard(sandbox, file)
            if code == 3:
                raise SnapshotError(f"the repository's .git in {sandbox.repo_root} is gone, so the saved changes "
                                    "cannot be applied; the sandbox's files are at their starting state")
            if code == 11:
                raise SnapshotError("the saved changes do not apply to this sandbox's files (another base commit, "
                                    f"or files changed already): {_tail(err or out)}; nothing was applied, the files "
                                    "are as they were")
            raise SnapshotError(f"sending the saved changes into the sandbox failed (exit {code}): "
                                f"{_tail(err or out)}; nothing was applied, the files are as they were")
        if not last:
            found = re.search(r"^FILE (\S+)$", out.decode(errors="replace"), re.M)
            if not found:
                raise SnapshotError(f"the sandbox made no temp file for the saved changes ({_tail(out + err)}); "
                                    "nothing was applied, the files are as they were")
            file = found.group(1)


# --- helpers -----------------------------------------------------------------------------------

def _check(snapshot: Snapshot) -> None:
    if not (_SHA.match(snapshot.commit) and _SHA.match(snapshot.tree)):
        raise ValueError(f"not a snapshot: {snapshot!r}")


def _run(sandbox: ExecSandbox, script: str, name: str, args: list[str],
         timeout: float) -> tuple[int, bytes, bytes]:
    base = sandbox.base_commit
    if not base:
        raise SnapshotError("this sandbox has no repository (no base commit), so there is nothing to snapshot; "
                            "/undo and --resume are unavailable, the model's session still works")
    ceiling = posixpath.dirname(posixpath.normpath(sandbox.repo_root))
    try:
        return sandbox.exec(["bash", "-c", script, name, ceiling, base, *args], timeout=timeout)
    except SnapshotError:
        raise
    except SandboxError as exc:
        raise SnapshotError(f"snapshot {name} could not run in the sandbox: {exc}; the files were left as "
                            "they are") from exc


def _failure(sandbox: ExecSandbox, code: int, err: bytes, *, doing: str, consequence: str) -> SnapshotError:
    root = sandbox.repo_root
    if code == 3:
        return SnapshotError(f"the repository's .git in {root} is gone (deleted in the sandbox), so there is "
                             f"nothing to snapshot or restore ({doing} failed): /undo is unavailable from here on; "
                             "the files and the model's session are unaffected")
    if code == 4:
        return SnapshotError(f"git sees no repository in {root} (.git is damaged: {_tail(err)}), so {doing} "
                             "failed and /undo is unavailable until it is repaired; the files and the model's "
                             "session are unaffected")
    if code == 7:
        return SnapshotError(f"{doing} failed: the snapshot is not in this sandbox's repository (the sandbox was "
                             "rebuilt from its starting state, or refs/cwm-agent was deleted and pruned); "
                             "the files were left as they are")
    return SnapshotError(f"{doing} failed in the sandbox (exit {code}): {_tail(err)}; {consequence}")


def _discard(sandbox: ExecSandbox, file: str) -> None:
    if file:
        try:
            sandbox.exec(["rm", "-f", "--", file], timeout=60)
        except SandboxError:
            pass


def _tail(data: bytes) -> str:
    return data.decode(errors="replace").strip()[-500:] or "no message"
