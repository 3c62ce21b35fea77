"""The repository's copy for a sandbox: which files go in, read from the host repository
(which is only ever read), and two ways to hand them over:

- as a tar (members under the repo root, owned by root), built on demand or streamed in
  chunks by a thread: what `put_archive` takes;
- as a plain directory on this host (`copy_to`): what a bind mount or bubblewrap takes.

The selection: a git work tree gives its tracked and untracked files (.gitignore respected,
so ignored secrets such as `.env` stay out) and its .git; a plain directory goes in whole.
Symbolic links are copied as links, never followed, so a link cannot pull a host file in.
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cwm_agent.sandbox.base import DEFAULT_REPO_ROOT, SandboxError


def _host_git(repo: Path, *args: str) -> list[str]:
    # safe.directory: the user named this repository, so its owner does not matter.
    return ["git", "-c", "safe.directory=*", "-C", str(repo), *args]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(_host_git(repo, *args), capture_output=True)
    if done.returncode != 0:
        raise SandboxError(f"git {' '.join(args)} failed in {repo}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8", errors="surrogateescape")


def _git_dirs(repo: Path) -> tuple[Path, Path, Path] | None:
    """(work tree top, git dir, common git dir) of the repository `repo` is in, in one git
    call; None for a plain directory. The two git dirs differ in a linked worktree.
    Any other failure is an error: copying a repository as a plain directory would take
    its ignored files (secrets such as .env) along."""
    try:
        done = subprocess.run(_host_git(repo, "rev-parse", "--show-toplevel", "--absolute-git-dir",
                                        "--git-common-dir"),
                              capture_output=True, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise SandboxError("git is not installed on this host; install it (apt-get install git)") from None
    if done.returncode != 0:
        if b"not a git repository" in done.stderr:
            return None
        raise SandboxError(f"git rev-parse failed in {repo}: {done.stderr.decode(errors='replace').strip()}")
    lines = done.stdout.decode("utf-8", errors="surrogateescape").splitlines()
    top, git_dir = Path(lines[0]), Path(lines[1])
    return top, git_dir, (repo / lines[2]).resolve()  # relative to `repo` unless absolute


def repo_files(top: Path) -> list[str]:
    """Tracked and untracked files of a work tree, .gitignore respected."""
    listed = _git(top, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({name for name in listed.split("\0") if name})


def dirty_paths(top: Path) -> list[str] | None:
    """Paths whose work-tree state differs from HEAD (modified, staged, deleted, untracked),
    read on the host where the index is fresh, without writing to the repository.
    None when HEAD has no commit yet (everything is new)."""
    head = subprocess.run(_host_git(top, "rev-parse", "-q", "--verify", "HEAD"), capture_output=True)
    if head.returncode != 0:
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # no opportunistic index refresh on the host
    done = subprocess.run(_host_git(top, "status", "--porcelain=v1", "-z", "--no-renames",
                                    "--untracked-files=all", "--ignore-submodules=all"), capture_output=True, env=env)
    if done.returncode != 0:
        return None
    entries = done.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    return sorted({entry[3:] for entry in entries if len(entry) > 3})


def _walk(top: Path, rel: str) -> Iterator[tuple[Path, str]]:
    """`top` and everything below it, as (host path, path in the copy)."""
    yield top, rel
    for dirpath, dirnames, filenames in os.walk(top):
        sub = os.path.relpath(dirpath, top)
        base = rel if sub == "." else f"{rel}/{sub}"
        for name in sorted(dirnames) + sorted(filenames):
            yield Path(dirpath) / name, f"{base}/{name}"


class RepoCopy:
    """A host directory on its way into a sandbox, and, once listed, what the start-up
    needs to know about it (`is_git`, `dirty`)."""

    def __init__(self, repo: Path, root: str = DEFAULT_REPO_ROOT):
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise SandboxError(f"{self.repo} is not a directory; pass --repo the path of a repository")
        self.root = root
        self.is_git = False
        self.dirty: list[str] | None = None  # see dirty_paths; None: find out inside
        self._listed: list[tuple[Path, str]] | None = None
        self._top: Path | None = None  # the work tree's top, for a git repository

    def listed(self) -> list[tuple[Path, str]]:
        """(host path, path relative to the repo root) of everything that goes in; listed once."""
        if self._listed is None:
            self._listed = list(self._select())
        return self._listed

    def size(self) -> int:
        """Bytes of the regular files that go in."""
        total = 0
        for source, _ in self.listed():
            try:
                info = os.lstat(source)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
        return total

    def find_dirty(self) -> None:
        """Fill `dirty` (after listing; kept off the listing's path, since a sandbox
        waits for the listing before it starts and for `dirty` only after)."""
        self.dirty = dirty_paths(self._top) if self._top is not None else None

    def _select(self) -> Iterator[tuple[Path, str]]:
        dirs = _git_dirs(self.repo)
        self.is_git = dirs is not None
        if dirs is None:  # a plain directory: all of it; git starts inside the sandbox
            for entry in sorted(self.repo.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    yield from _walk(entry, entry.name)
                else:
                    yield entry, entry.name
            return
        top, git_dir, common = dirs
        self._top = top
        for name in repo_files(top):
            # A submodule is listed as a directory: it goes in empty (its checkout is its own).
            yield top / name, name
        yield from _walk(common, ".git")
        if git_dir != common:  # a linked worktree: its own HEAD and index
            for name in ("HEAD", "index"):
                if (git_dir / name).exists():
                    yield git_dir / name, f".git/{name}"

    # --- as a directory on this host ------------------------------------------------------

    def copy_to(self, dest: Path) -> None:
        """Copy the selection into the directory `dest` (made if missing)."""
        dest.mkdir(parents=True, exist_ok=True)
        made = {dest}
        for source, rel in self.listed():
            target = dest / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            try:
                info = os.lstat(source)
            except OSError:  # vanished since it was listed
                continue
            if stat.S_ISLNK(info.st_mode):
                if target.is_symlink() or target.exists():  # a linked worktree's HEAD, twice
                    target.unlink()
                os.symlink(os.readlink(source), target)
            elif stat.S_ISDIR(info.st_mode):
                target.mkdir(exist_ok=True)
                made.add(target)
            elif stat.S_ISREG(info.st_mode):
                shutil.copyfile(source, target, follow_symlinks=False)
                os.chmod(target, stat.S_IMODE(info.st_mode))
            # sockets, fifos and devices stay out, as in the tar
        self.find_dirty()

    # --- as a tar ---------------------------------------------------------------------------

    def write(self, out: BinaryIO) -> None:
        """Write the tar (members under `root`, owned by root) to `out`."""
        prefix = self.root.strip("/")
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            root_info = _root_owned(tarfile.TarInfo(prefix))
            root_info.type, root_info.mode, root_info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            tar.addfile(root_info)
            for source, rel in self.listed():
                _add(tar, source, f"{prefix}/{rel}")
        self.find_dirty()

    def bytes(self) -> bytes:
        out = io.BytesIO()
        self.write(out)
        return out.getvalue()

    def stream(self, *, buffer_mb: int = 256) -> tuple[Iterator[bytes], threading.Event]:
        """Start building the tar in a thread now; return its chunks (the iterator raises
        what the thread raised) and an event that stops the thread if nobody consumes.
        Up to `buffer_mb` MiB wait in memory, so the build runs ahead of the upload."""
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=buffer_mb)
        cancel = threading.Event()
        writer = _ChunkWriter(chunks, cancel)

        def produce() -> None:
            try:
                self.write(writer)
                writer.flush()
                writer.put(None)
            except BaseException as exc:
                if not cancel.is_set():
                    writer.put(exc)

        threading.Thread(target=produce, name="cwm-repo-tar", daemon=True).start()

        def consume() -> Iterator[bytes]:
            while True:
                item = chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        return consume(), cancel


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    try:
        info = tar.gettarinfo(str(path), arcname)
    except OSError:  # vanished since it was listed
        return
    if info is None:  # a socket or other special file
        return
    _root_owned(info)
    if info.isreg():
        with open(path, "rb") as handle:
            tar.addfile(info, handle)
    else:
        tar.addfile(info)


class _Cancelled(Exception):
    pass


class _ChunkWriter(io.RawIOBase):
    """A write-only file that hands out 1 MiB chunks through a queue."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], cancel: threading.Event):
        super().__init__()
        self._chunks = chunks
        self._cancel = cancel
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buf += data
        if len(self._buf) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self.put(bytes(self._buf))
            self._buf = bytearray()

    def put(self, item: bytes | BaseException | None) -> None:
        while not self._cancel.is_set():
            try:
                self._chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Cancelled()
