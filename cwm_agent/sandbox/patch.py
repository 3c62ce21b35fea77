"""Patches: parse them, count them, and decide whether they apply, as the grader does.

A patch here is the text of a `git diff` (what the model submits and what
`Sandbox.diff()` returns). Parsing uses unidiff, which returns an empty
PatchSet for garbage instead of raising, so `parse_patch` checks that it found
files. Whether a patch applies is the official SWE-bench harness's call: its
chain of commands (`APPLY_COMMANDS`: `git apply -v`, `--3way`, `--reject`,
then `patch --fuzz=5`), run by one function, `apply_chain`, for the grader (in
its container), for `solve`'s check and for `solve --apply`. So `solve` and
`eval` never disagree on whether a patch applies.

- `check_applies` runs the chain in a throw-away clone of the *base commit*
  (inside the sandbox, or of a host repository), never in the working tree the
  model has been editing: safe mid-episode.
- `apply_to_repo` (behind `solve --apply`) applies to the host working tree as
  the user has it: each command of the chain is first tried as a dry run
  (`git apply --check`, `patch --dry-run`), and only the first that would take
  the whole patch runs; local changes that conflict make it fail, changing nothing.
- Binary files with no data ("Binary files a/x and b/x differ", what a plain
  `git diff` writes for `__pycache__/*.pyc`) can be applied by nothing: they are
  named (`dataless_binary_files`) and skipped, not a failure. The check keeps
  them in the patch, as the grader does (GNU patch passes over new ones);
  `--apply` leaves them out instead of creating empty files.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

if TYPE_CHECKING:
    from cwm_agent.sandbox.base import Sandbox

# Lines of base64 in a here-document; the terminator has "_", which base64 never uses.
HEREDOC_END = "CWM_AGENT_B64_END"

# The official harness's patch chain (swebench 5.0.2, run_evaluation.GIT_APPLY_CMDS).
# CWM's own scorer used the first, `--reject` and `patch --fuzz=5`; --3way only
# adds patches whose context moved but whose blobs git knows.
APPLY_COMMANDS = (
    "git apply --verbose",
    "git apply --verbose --3way",
    "git apply --verbose --reject",
    "patch --batch --forward --fuzz=5 -p1 -i",
)
RESET_TREE = "git checkout -- . ; git clean -fd"  # between tries: a failed one (--reject above all) leaves debris
REVERSE_CHECK = "git apply --check --reverse"
ALREADY_APPLIED = f"already applied ({REVERSE_CHECK})"
# Runs one shell command where the patch is to be applied: (exit code, stdout and stderr merged).
Runner = Callable[[str], tuple[int, str]]
_BINARY_DIFFERS = re.compile(r"^Binary files .* differ$", re.MULTILINE)
_FILE_SECTION = re.compile(r"(?m)^(?=diff --git )")  # where each file's part of a git diff starts
_HUNK = re.compile(r"(?m)^@@ ")
# C escapes in a path git quotes ("tab\there", "caf\303\251.txt"), as git's unquote_c_style reads them.
_C_ESCAPE = re.compile(rb'\\([0-3][0-7]{2}|[abtnvfr"\\])')
_C_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b'"': 34, b"\\": 92}


class PatchError(ValueError):
    """A patch is malformed or does not apply; the message says what to do."""


class FileStat(NamedTuple):
    path: str
    added: int
    removed: int


@dataclass(frozen=True)
class ApplyCheck:
    """The chain's verdict on a patch: `ok`, and the commands' own words in `output`."""

    ok: bool
    output: str
    applied_with: str | None = None  # the command of the chain that takes it (or ALREADY_APPLIED)
    skipped: tuple[str, ...] = ()  # binary files with no data: nothing to apply, skipped

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


def git_unquote(name: str) -> str:
    """A file name as git writes it in a diff, unquoted. git puts a name holding a tab, a
    newline, a double quote, a backslash or (core.quotePath, the default) a non-ASCII byte in
    double quotes with C escapes: `"a/caf\\303\\251.txt"` is `a/café.txt`. Other names,
    spaces and all, come as they are. Bytes that are not UTF-8 come back surrogate-escaped,
    as the patch text holds them."""
    if len(name) < 2 or name[0] != '"' or name[-1] != '"':
        return name
    raw = name[1:-1].encode("utf-8", "surrogateescape")
    raw = _C_ESCAPE.sub(lambda m: bytes([_C_ESCAPES.get(m[1]) or int(m[1], 8)]), raw)
    return raw.decode("utf-8", "surrogateescape")


def path_in_repo(name: str) -> str:
    """A `diff --git`, `---` or `+++` name (quoted or not) as a path in the repository:
    unquoted, without git's `a/` or `b/` prefix."""
    name = git_unquote(name)
    return name.split("/", 1)[1] if name.startswith(("a/", "b/")) else name


def file_path(patched: PatchedFile) -> str:
    """The path in the repository of one file of a parsed patch: the new name of a renamed
    or added file, else the old one; git's quoting undone (unidiff leaves it)."""
    return git_unquote(patched.path)


def changed_files(text: str) -> list[PatchedFile]:
    """The files of a git diff as unidiff reads their headers (`diff --git`, new, deleted,
    renamed, binary), in order. Hunks are not read, so a patch whose hunks are broken still
    names its files; a file part unidiff cannot read is left out. Never raises."""
    files: list[PatchedFile] = []
    for section in _FILE_SECTION.split(text):
        if not section.startswith("diff --git "):
            continue
        hunk = _HUNK.search(section)
        try:
            files += PatchSet(section[:hunk.start()] if hunk else section)
        except UnidiffParseError:
            continue
    return files


def patched_files(text: str) -> list[str]:
    """The paths a git diff touches, in order, each once (the new name of a renamed file)."""
    return list(dict.fromkeys(file_path(f) for f in changed_files(text)))


def diffstat(text: str) -> list[FileStat]:
    """(path, lines added, lines removed) per file; binary files count 0 and 0."""
    return [FileStat(file_path(f), f.added, f.removed) for f in parse_patch(text)]


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


def apply_chain(run: Runner, patch_file: str) -> ApplyCheck:
    """The official chain over `patch_file`, where `run` runs commands; stops at the first that takes it.

    The grader, `check_applies` and `apply_to_repo` all decide through this function, always
    in a tree of their own (the tree is reset between tries). There is no dry-run form:
    `git apply --check --3way` and `--check --reject` say 0 for patches whose real run
    conflicts or rejects hunks. A chain that fails but leaves the patch wholly applied
    counts, as SWE-bench 5 does.
    """
    words = []
    for attempt, command in enumerate(APPLY_COMMANDS):
        if attempt:
            run(RESET_TREE)
        code, output = run(f"{command} {patch_file}")
        words.append(f"$ {command} {patch_file}  # exit {code}\n{output}")
        if code == 0:
            return ApplyCheck(True, "\n".join(words), command)
    code, _ = run(f"{REVERSE_CHECK} {patch_file}")
    return ApplyCheck(code == 0, "\n".join(words), ALREADY_APPLIED if code == 0 else None)


def dataless_binary_files(patch: str) -> list[str]:
    """Files the patch changes as "Binary files ... differ" with no data (no `GIT binary patch`)."""
    return split_dataless_binaries(patch)[1]


def split_dataless_binaries(patch: str) -> tuple[str, list[str]]:
    """(the patch without its binary files that carry no data, the paths of those files)."""
    kept, skipped = [], []
    for section in _FILE_SECTION.split(patch):
        if (section.startswith("diff --git ") and _BINARY_DIFFERS.search(section)
                and not re.search(r"(?m)^GIT binary patch$", section)):
            skipped.append(_section_path(section))
        else:
            kept.append(section)
    return "".join(kept), skipped


def _section_path(section: str) -> str:
    files = changed_files(section)
    if files:
        return file_path(files[0])
    return section.partition("\n")[0].removeprefix("diff --git ")  # unreadable: as git wrote it


def check_applies(patch: str, target: Sandbox | str | Path, *, base: str | None = None) -> ApplyCheck:
    """Would the official chain take `patch` on the base commit? Checks only; changes nothing.

    target: a Sandbox (checked inside it, against its base commit) or a host
    git repository (checked against `base`, default HEAD). See the module doc.
    """
    if not patch.strip():
        return ApplyCheck(False, "the patch is empty")
    if isinstance(target, (str, Path)):
        verdict = _check_on_host(patch, Path(target), base or "HEAD")
    else:
        verdict = _check_in_sandbox(patch, target, base or getattr(target, "base_commit", None) or "HEAD")
    return dataclasses.replace(verdict, skipped=tuple(dataless_binary_files(patch)))


def _check_in_sandbox(patch: str, sandbox: Sandbox, base: str) -> ApplyCheck:
    # Subshells, so the model's session keeps its cwd, variables and $?. The clone shares
    # the repository's objects (--shared): nothing of the model's repository is written.
    made = sandbox.run(
        "( unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; tmp=$(mktemp -d) || exit 99\n"
        f"base64 -d > \"$tmp/patch\" {heredoc_b64(_encode(patch))}"
        f"{{ git clone -q --shared --no-checkout {shlex.quote(sandbox.repo_root)} \"$tmp/tree\" && "
        f"git -C \"$tmp/tree\" checkout -q --detach {shlex.quote(base)}; }} >\"$tmp/log\" 2>&1 "
        "|| { cat \"$tmp/log\"; rm -rf \"$tmp\"; exit 98; }\n"
        "echo \"$tmp\" )"
    )
    if made.status != "ok":
        return ApplyCheck(False, f"the check itself failed in the sandbox: {made.brief()}")
    if made.exit_code != 0:
        return ApplyCheck(False, f"the check could not check out the base commit {base}: {made.output.strip()}")
    tmp = made.output.strip().splitlines()[-1]
    tree = shlex.quote(f"{tmp}/tree")

    def run(command: str) -> tuple[int, str]:
        done = sandbox.run(f"( unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE; cd {tree} && {command} ) 2>&1")
        if done.status != "ok":
            raise PatchError(f"the check itself failed in the sandbox: {done.brief()}")
        return (done.exit_code if done.exit_code is not None else 1), done.output

    try:
        return apply_chain(run, shlex.quote(f"{tmp}/patch"))
    except PatchError as exc:
        return ApplyCheck(False, str(exc))
    finally:
        sandbox.run(f"rm -rf {shlex.quote(tmp)}")


def _git(args: list[str], cwd: Path, *, stdin: bytes = b"", env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, env=_host_env(cwd, env))


def _host_env(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    # Never let git wander up into a repository that merely contains cwd.
    return {**os.environ, **(env or {}), "GIT_CEILING_DIRECTORIES": str(cwd.resolve().parent)}


def _host_runner(cwd: Path) -> Runner:
    def run(command: str) -> tuple[int, str]:
        done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, env=_host_env(cwd))
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
    return run


def _words(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace").strip()


def _check_on_host(patch: str, repo: Path, base: str) -> ApplyCheck:
    if not repo.is_dir():
        raise PatchError(f"{repo} is not a directory")
    commit = _git(["rev-parse", "--verify", "-q", f"{base}^{{commit}}"], repo)
    if commit.returncode != 0:
        raise PatchError(f"cannot read {base} of {repo}: {_words(commit) or 'no such commit'}; is it a git repository?")
    with tempfile.TemporaryDirectory(prefix="cwm-agent-check-") as tmp:
        tree = _scratch_clone(repo, commit.stdout.decode().strip(), Path(tmp))
        return _chain_on_host(patch, tree, Path(tmp))


def _scratch_clone(repo: Path, commit: str, tmp: Path) -> Path:
    """A checkout of `commit` that shares `repo`'s objects (so --3way finds its blobs)."""
    tree = tmp / "tree"
    done = _git(["clone", "-q", "--shared", "--no-checkout", str(repo.resolve()), str(tree)], tmp)
    if done.returncode == 0:
        done = _git(["checkout", "-q", "--detach", commit], tree)
    if done.returncode != 0:
        raise PatchError(f"cannot check out {commit} of {repo} to try the patch: {_words(done)}")
    return tree


def _chain_on_host(patch: str, tree: Path, tmp: Path) -> ApplyCheck:
    patch_file = tmp / "patch"
    patch_file.write_bytes(_encode(patch))
    return apply_chain(_host_runner(tree), shlex.quote(str(patch_file)))


def apply_to_repo(patch: str, repo_path: str | Path, check_only: bool = False) -> ApplyCheck:
    """Apply `patch` to the working tree of the host repository at `repo_path` (unstaged).

    The official chain decides, in a scratch copy of the tree as the user has it (HEAD
    plus local changes to tracked files); what the chain made of the copy then goes to
    the real tree with `git apply`, all or nothing. Raises PatchError, changing nothing,
    when the chain does not take the patch or local changes (untracked files included)
    are in the way. Binary files with no data are left out and named in `skipped`.
    Works on a plain directory too (git apply then acts like `patch -p1`).
    """
    repo = Path(repo_path)
    if not repo.is_dir():
        raise PatchError(f"{repo} is not a directory; pass the root of the repository the patch is for")
    parse_patch(patch)
    kept, skipped = split_dataless_binaries(patch)
    if not _has_changes(kept):
        return ApplyCheck(True, "nothing to apply but binary files with no data", None, tuple(skipped))
    with tempfile.TemporaryDirectory(prefix="cwm-agent-apply-") as tmp_name:
        tmp = Path(tmp_name)
        tree = _scratch_of_working_tree(repo, tmp)
        chain = _chain_on_host(kept, tree, tmp)
        if not chain.ok:
            raise PatchError(
                f"the patch does not apply to {repo}:\n{_tail(chain.output)}\n"
                "Commit or stash local changes to those files and try again, or apply it by hand "
                "with `git apply --3way`."
            )
        chain = dataclasses.replace(chain, skipped=tuple(skipped))
        if chain.applied_with == ALREADY_APPLIED:
            return chain
        # What the chain made of the files the patch names (ignored ones too; not .orig debris).
        paths = sorted({path_in_repo(name) for f in parse_patch(kept) for name in (f.source_file, f.target_file)
                        if name and name != "/dev/null"})
        _git(["add", "-A", "-f"], tree)
        result = _git(["--literal-pathspecs", "diff", "--cached", "--binary", "--no-ext-diff", "--no-textconv",
                       "HEAD", "--", *paths], tree).stdout
    if not result.strip():
        return chain
    check = _git(["apply", "--check", "-"], repo, stdin=result)
    if check.returncode != 0:
        raise PatchError(
            f"the patch does not apply to {repo}:\n{_words(check)}\n"
            "Commit or stash local changes (and move untracked files) in those paths and try again."
        )
    if check_only:
        return chain
    applied = _git(["apply", "-"], repo, stdin=result)
    if applied.returncode != 0:  # only a race with another writer gets here
        raise PatchError(f"git apply failed in {repo}: {_words(applied)}")
    return chain


def _scratch_of_working_tree(repo: Path, tmp: Path) -> Path:
    """A committed copy of the tree as it is: HEAD plus local changes to tracked files, or,
    outside git (or before a first commit), a copy of the directory."""
    head = _git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], repo)
    inside = _git(["rev-parse", "--show-toplevel"], repo)
    if head.returncode == 0 and inside.returncode == 0:
        tree = _scratch_clone(repo, head.stdout.decode().strip(), tmp)
        local = _git(["diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--", "."], repo).stdout
        if local.strip():
            moved = _git(["apply", "--index", "-"], tree, stdin=local)
            if moved.returncode != 0:
                raise PatchError(f"cannot copy the local changes of {repo} to try the patch: {_words(moved)}")
    else:
        import shutil

        tree = tmp / "tree"
        shutil.copytree(repo, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        _git(["init", "-q"], tree)
        _git(["add", "-A"], tree)
    # Commit the starting state, so the chain's reset between tries comes back to it.
    _git(["-c", "user.name=cwm-agent", "-c", "user.email=cwm-agent@localhost", "-c", "commit.gpgsign=false",
          "commit", "-q", "--allow-empty", "--no-verify", "-m", "working tree"], tree)
    return tree


def _has_changes(patch: str) -> bool:
    try:
        parse_patch(patch)
    except PatchError:
        return False
    return True


def _tail(text: str, lines: int = 20) -> str:
    rows = [row for row in text.strip().splitlines() if row.strip()]
    return "\n".join(rows[-lines:])


def _encode(patch: str) -> bytes:
    # surrogateescape: a patch read from a non-UTF-8 file keeps its exact bytes.
    return patch.encode("utf-8", "surrogateescape")
