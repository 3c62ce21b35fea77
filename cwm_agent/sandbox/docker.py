"""DockerSandbox: one container per episode, one attached socket for every command.

Life of a container:
- created from the image with the keeper (session.KEEPER_SCRIPT) as its main
  process, stdin open, with `container_args` (every container of ours: docker-init,
  `network_mode="none"`, memory / pids / cpus limits, labels `cwm-agent=<run id>`,
  the owner process and the expiry time) and `auto_remove=True`;
- the repository (tracked and untracked files, .gitignore respected, plus .git;
  see repo_copy.py) is copied while the container starts: into a private staging
  directory on this host that is bound at the repo root when the engine runs here
  (copy_mode "bind"), else streamed in as a tar with one `put_archive` ("archive");
- we attach to the main process's stdin/stdout (no `docker exec` per command),
  start it, and run the start-up script (git identity, starting-state commit,
  the history scrub of cwm-interface.md section 7) as the session's first command.

How it ends: `close()` removes it. If the agent dies, even by SIGKILL, the
kernel closes our socket and Docker closes the keeper's stdin (stdin-once). The
keeper notices within about half a second, even while a command runs (an endless
loop, `sleep infinity`, a process that ignores SIGTERM): it kills every process
of the sandbox, empties the repository copy when it is our bind-mounted staging
directory, and exits; `auto_remove` deletes the container. Its time-to-live
(`ttl_seconds`) and `cleanup_orphans` (runs whose process is gone) are the
last resorts. Graders and suite runners use the same stdin as a lifeline
(`lifeline_spec`).
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cwm_agent.sandbox.base import DEFAULT_COMMAND_TIMEOUT, DEFAULT_REPO_ROOT, DockerUnavailable, SandboxError
from cwm_agent.sandbox.repo_copy import RepoCopy
from cwm_agent.sandbox.session import DEFAULT_TTL, Session, keeper_argv, quote
from cwm_agent.sandbox.shell import SessionSandbox, setup_script

log = logging.getLogger(__name__)

LABEL = "cwm-agent"  # value: the run id
OWNER_LABEL = "cwm-agent.owner"  # host:pid:process start time of the agent
EXPIRES_LABEL = "cwm-agent.expires"  # unix time after which the keeper has exited
FIX_ENGINE = "start the Docker engine (scripts/install-docker.sh installs and starts it), or use --sandbox bwrap"
SETUP_TIMEOUT = 600.0
COPY_ENV = "CWM_AGENT_SANDBOX_COPY"  # bind | archive; see DockerSandbox.copy_mode
# A repository copy up to this size is staged in RAM (/dev/shm) when that has room.
RAM_STAGE_MAX = 1 << 30


# --- the engine ------------------------------------------------------------------------------

def docker_client(timeout: int = 120) -> Any:
    """A docker-py client whose engine answers, or DockerUnavailable saying how to fix it."""
    import docker  # imported here: the CLI starts faster without it

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise DockerUnavailable(f"the Docker engine does not answer ({exc}); {FIX_ENGINE}") from exc
    return client


def engine_answers() -> bool:
    try:
        docker_client(timeout=5).close()
        return True
    except DockerUnavailable:
        return False


class DockerStream:
    """A demultiplexed attach/exec socket (Docker frames each chunk with an 8-byte header)."""

    def __init__(self, raw: Any):
        self._raw = raw  # keep docker-py's wrapper alive: it owns the connection
        self.sock: socket.socket = getattr(raw, "_sock", raw)
        self.sock.settimeout(None)
        self._pending = bytearray()
        self.eof = False

    def frames(self) -> list[tuple[int, bytes]]:
        """Complete frames read so far, as (stream id, payload); 1 is stdout, 2 stderr."""
        out = []
        buf = self._pending
        pos = 0
        while len(buf) - pos >= 8:
            size = int.from_bytes(buf[pos + 4: pos + 8], "big")
            if len(buf) - pos - 8 < size:
                break
            out.append((buf[pos], bytes(buf[pos + 8: pos + 8 + size])))
            pos += 8 + size
        del buf[:pos]
        return out

    def fill(self, timeout: float) -> bool:
        """Read what the socket has within `timeout`; False if nothing came."""
        if self.eof:
            return True
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not readable:
            return False
        try:
            chunk = self.sock.recv(1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self._pending += chunk
        return True

    def recv(self, timeout: float) -> bytes | None:
        """Merged stdout and stderr; b"" at EOF; None if nothing within `timeout`."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            data = b"".join(payload for _, payload in self.frames())
            if data:
                return data
            if self.eof:
                return b""
            if not self.fill(deadline - time.monotonic()):
                return None

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(None)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for thing in (self._raw, self.sock):
            try:
                thing.close()
            except Exception:
                pass


class DockerTransport:
    """session.Transport over the container's attached main process."""

    def __init__(self, client: Any, container_id: str, stream: DockerStream):
        self.client = client
        self.container_id = container_id
        self.stream = stream

    def send(self, data: bytes, timeout: float) -> None:
        self.stream.send(data, timeout)

    def recv(self, timeout: float) -> bytes | None:
        return self.stream.recv(timeout)

    def interrupt(self) -> None:
        # docker-init (pid 1) forwards the signal to its child, the keeper.
        self.client.api.kill(self.container_id, signal="SIGUSR1")

    def close(self) -> None:
        self.stream.close()


# --- the sandbox -----------------------------------------------------------------------------

def _process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or '?'}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it ran elsewhere (we cannot tell)."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    now = _process_start(int(pid))
    return now is not None and (started in ("?", "") or now == started)


def container_labels(run_id: str, ttl: int) -> dict[str, str]:
    """The labels of every container cwm-agent starts: `cwm-agent cleanup` finds them by
    LABEL and removes those whose owner is gone or whose time-to-live has passed."""
    return {LABEL: run_id, OWNER_LABEL: _owner(), EXPIRES_LABEL: str(int(time.time()) + ttl)}


def our_containers(client: Any, run_id: str | None = None, *, mine: bool = False,
                   labels: dict[str, str] | None = None) -> list[Any]:
    """cwm-agent's containers, stopped ones too, found by the labels `container_labels` gives
    them: all of them, those of one `run_id`, those this process started (`mine`), and those
    that carry `labels` as well."""
    wanted = [LABEL if run_id is None else f"{LABEL}={run_id}"]
    if mine:
        wanted.append(f"{OWNER_LABEL}={_owner()}")
    wanted += [f"{key}={value}" for key, value in (labels or {}).items()]
    # ignore_removed: one that goes away between docker-py's listing and its inspection is not an error
    return client.containers.list(all=True, filters={"label": wanted}, ignore_removed=True)


# Arguments no caller may add to container_args: a container of ours never joins a network,
# publishes a port or gains privileges.
_NOT_OURS = frozenset({"network", "network_mode", "network_disabled", "networking_config", "ports",
                       "publish_all_ports", "privileged", "cap_add", "security_opt", "init"})


def container_args(run_id: str, ttl: int, *, memory: str | int | None = None, pids: int | None = None,
                   cpus: float | None = None, labels: dict[str, str] | None = None,
                   **own: Any) -> dict[str, Any]:
    """The keyword arguments of every container cwm-agent starts (the sandbox's, the grader's,
    the suite runner's) for docker-py's `containers.run/create`: no network, docker-init as
    pid 1 (it reaps orphans, and a stop takes 0.07 s instead of 10), no privilege gained through
    setuid, memory (no swap beyond it), processes and CPUs capped when given, and
    `container_labels` plus `labels`. `own` is what only the caller needs (mounts, user,
    auto_remove...); a network, ports or privileges are refused. All but `labels` also suit
    `api.create_host_config`."""
    refused = sorted(_NOT_OURS & own.keys())
    if refused:
        raise ValueError(f"container_args decides {', '.join(refused)} for every container")
    return dict(
        network_mode="none",
        init=True,
        security_opt=["no-new-privileges"],
        mem_limit=memory,
        memswap_limit=memory,
        pids_limit=pids,
        nano_cpus=int(cpus * 1e9) if cpus else None,
        labels={**container_labels(run_id, ttl), **(labels or {})},
        **own,
    )


# The main process of a container that only runs `docker exec`s (the grader's, the suite
# runner's): it waits on its stdin, which the agent holds through an attach socket (stdin-once),
# and exits at EOF (the agent is gone, even by SIGKILL: the kernel closes the socket) or after
# its time-to-live. With it goes docker-init, so the kernel kills every process of the container
# (execs too) and auto_remove deletes it. Builtins only.
LIFELINE_SCRIPT = 'exec 2>/dev/null; read -r -N 1 -t "$1" __x; exit 0'


def lifeline_spec(ttl: int) -> dict[str, Any]:
    """`containers.create` arguments (with auto_remove=True in container_args) for a container whose
    main process is the lifeline; `hold_lifeline` before `start`."""
    return dict(entrypoint=["/bin/bash", "-c", LIFELINE_SCRIPT, "cwm-lifeline"], command=[str(int(ttl))],
                stdin_open=True, tty=False)


def hold_lifeline(api: Any, container_id: str) -> DockerStream:
    """Attach to a created container's stdin (before its start); closing it ends the container."""
    return DockerStream(api.attach_socket(container_id, params={"stdin": 1, "stream": 1}))


def exec_with_deadline(api: Any, container_id: str, argv: list[str], *, timeout: float,
                       on_deadline: Callable[[], object] | None = None, **options: Any) -> tuple[bytes, int | None]:
    """Run `argv` in a container, stdout and stderr merged: (output, exit code), the code None
    when it still ran at the deadline. docker-py has no exec timeout and cannot kill an exec,
    so `on_deadline` (killing the container, say) may end it; what it printed until then is
    read for up to 30 s more."""
    exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True, **options)["Id"]
    chunks: list[bytes] = []
    failure: list[BaseException] = []
    reader = _thread("cwm-exec-output", lambda: chunks.extend(api.exec_start(exec_id, stream=True)), failure)
    reader.join(timeout)
    if reader.is_alive():
        if on_deadline is not None:
            on_deadline()  # the stream breaks when the container goes: not a failure
            reader.join(30)
        return b"".join(chunks), None
    if failure:
        raise failure[0]
    return b"".join(chunks), api.exec_inspect(exec_id).get("ExitCode")


class DockerSandbox(SessionSandbox):
    """A Docker container holding a copy of the repository and the model's bash session.

    `repo`: a host directory copied in at `repo_root` (git or not; the host is never
    written). None: use the image's own `repo_root` (SWE-bench images). After start-up,
    `base_commit` is the commit that diffs are taken against.
    """

    _bind_unusable = False  # set once a bind-mounted copy came up empty (engine in a VM)
    _swept = False  # orphaned staging directories are looked for once per process

    def __init__(
        self,
        image: str | None = None,
        *,
        repo: Path | str | None = None,
        memory: str | None = "4g",
        pids: int | None = 1024,
        cpus: float | None = None,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        run_id: str | None = None,
        ttl_seconds: int = DEFAULT_TTL,
        repo_root: str = DEFAULT_REPO_ROOT,
        client: Any = None,
        setup_timeout: float = SETUP_TIMEOUT,
    ):
        if image is None:
            from cwm_agent.sandbox.image import default_image

            image = default_image()
        self.image = image
        self.repo = Path(repo).resolve() if repo is not None else None
        self.repo_root = repo_root
        self.memory, self.pids, self.cpus = memory, pids, cpus
        self.command_timeout = command_timeout
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.ttl_seconds = int(ttl_seconds)
        self.setup_timeout = setup_timeout
        self.client = client or docker_client()
        self.base_commit = ""
        self.container_id = ""
        self.rebuilds = 0
        # Seconds from the start of the last (re)build to each step's end, for benchmarks.
        self.start_timings: dict[str, float] = {}
        self._session: Session | None = None
        self._stage: Path | None = None  # the staging directory of a bind-mounted copy
        self._closed = False
        self._commit_date = int(time.time())  # fixed, so a rebuild makes the same base commit
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- start and stop --------------------------------------------------------------------

    def _start(self) -> None:
        """Create, start, copy in, set up, overlapping what can overlap.

        The copy goes in one of two ways (see `copy_mode`):
        - bind: a thread copies the repository into a private staging directory on this host
          while the container, with that directory bound at the repo root, starts. Nothing
          crosses the engine's API: the fast way, for an engine on this host.
        - archive: a thread builds the tar while the container starts, and `put_archive`
          streams it in while the keeper's first session comes up. (`put_archive` before the
          start would hold the start back: the engine locks the container for it.)
        """
        import docker.errors

        began = time.monotonic()
        timings = self.start_timings = {}
        copy = RepoCopy(self.repo, self.repo_root) if self.repo is not None else None
        mode = self.copy_mode() if copy is not None else None
        marker = ""
        copier: threading.Thread | None = None
        chunks, cancel = None, None
        copy_error: list[BaseException] = []
        if copy is not None and mode == "bind":
            if not DockerSandbox._swept:
                DockerSandbox._swept = True
                sweep_stages(self.client, self.image)
            copy.listed()  # the size decides where the staging directory lives
            self._stage = make_stage(self.run_id, copy.size())
            marker = f".cwm-agent-copy-{uuid.uuid4().hex}"
            (self._stage / "testbed").mkdir()
            (self._stage / "testbed" / marker).touch()
            copier = _thread("cwm-repo-copy", lambda: copy.copy_to(self._stage / "testbed"), copy_error)
        elif copy is not None:
            chunks, cancel = copy.stream()
        try:
            try:
                self.client.images.get(self.image)
            except docker.errors.ImageNotFound:
                raise SandboxError(f"the sandbox image {self.image} is not on this Docker engine; build the base "
                                   "image with `cwm-agent sandbox build`, or pull the one you named") from None
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(f"the Docker engine failed ({exc}); {FIX_ENGINE}") from exc
            api = self.client.api
            try:
                self.container_id = api.create_container(**self._container_spec())["Id"]
                raw = api.attach_socket(self.container_id,
                                        params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
                stream = DockerStream(raw)
                api.start(self.container_id)
                timings["container started"] = time.monotonic() - began
            except docker.errors.DockerException as exc:
                raise SandboxError(f"could not start a sandbox container from {self.image}: {exc}") from exc
            if chunks is not None:
                copier = _thread("cwm-put-archive", lambda: api.put_archive(self.container_id, "/", chunks),
                                 copy_error)
        except BaseException:
            if cancel is not None:
                cancel.set()
            if copier is not None:
                copier.join()  # before the staging directory goes
            raise
        session = Session(DockerTransport(self.client, self.container_id, stream),
                          repo_root=self.repo_root, command_timeout=self.command_timeout)
        self._session = session
        session.start()
        timings["keeper ready"] = time.monotonic() - began
        if copier is not None:
            copier.join()
            timings["repository copied"] = time.monotonic() - began
            if copy_error:
                raise SandboxError(f"copying {self.repo} into the sandbox failed: {copy_error[0]}") from copy_error[0]
        if marker and session.run(f"builtin cd -- {quote(self.repo_root)} && rm -- {marker}").exit_code != 0:
            # The engine does not see this host's files (a VM, a remote engine): copy through its API.
            log.warning("the Docker engine does not see %s; copying repositories through the API instead",
                        self._stage)
            DockerSandbox._bind_unusable = True
            self._stop()
            self.container_id = ""
            self._start()
            return
        script = setup_script(self.repo_root, commit_date=self._commit_date,
                              dirty=copy.dirty if copy is not None else None)
        result = session.run(script, timeout=self.setup_timeout, output_limit=1 << 20)
        found = re.search(r"^BASE=([0-9a-f]{40,64})$", result.output, re.M)
        if result.status != "ok" or result.exit_code != 0 or not found:
            raise SandboxError(f"the sandbox start-up (git setup in {self.repo_root}) failed: "
                               f"{result.brief()[-800:]}")
        self.base_commit = found.group(1)
        timings["set up"] = time.monotonic() - began

    def copy_mode(self) -> str:
        """How a repository gets in: "bind" (a staging copy on this host, bound in) when the
        engine runs on this host, else "archive" (a tar through the engine's API).
        CWM_AGENT_SANDBOX_COPY=bind|archive overrides the choice."""
        forced = os.environ.get(COPY_ENV, "").strip().lower()
        if forced in ("bind", "archive"):
            return forced
        if forced:
            raise SandboxError(f"{COPY_ENV} must be bind or archive, not {forced!r}")
        local = str(getattr(self.client.api, "base_url", "")).startswith("http+docker://localhost")
        return "bind" if local and not DockerSandbox._bind_unusable else "archive"

    def _container_spec(self) -> dict[str, Any]:
        # docker-init (container_args) as pid 1 also forwards our SIGUSR1 to the keeper.
        args = container_args(
            self.run_id, self.ttl_seconds, memory=self.memory, pids=self.pids, cpus=self.cpus,
            auto_remove=True,
            cap_drop=["MKNOD"],  # no device nodes in a copy that may sit on this host's disk
            binds={str(self._stage / "testbed"): {"bind": self.repo_root, "mode": "rw"}} if self._stage else None,
        )
        labels = args.pop("labels")
        argv = keeper_argv(self.ttl_seconds, self.repo_root, empty_on_exit=self._stage is not None)
        return dict(
            image=self.image,
            entrypoint=argv[:3],
            command=argv[3:],
            stdin_open=True,  # and, with docker-py's default detach=False, stdin-once
            tty=False,
            working_dir=self.repo_root,
            labels=labels,
            host_config=self.client.api.create_host_config(**args),
        )

    def _stop(self) -> None:
        session, self._session = self._session, None
        if self.container_id:
            try:
                self.client.api.remove_container(self.container_id, force=True)
            except Exception:  # already gone (auto_remove) or the engine is down
                pass
        if session is not None:
            session.close()
        stage, self._stage = self._stage, None
        if stage is not None:
            remove_stage(stage, self.client, self.image)

    def _rebuild(self) -> None:
        self._stop()
        self.container_id = ""
        self.rebuilds += 1
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- helpers ---------------------------------------------------------------------------

    def _exec(self, argv: list[str], *, timeout: float) -> tuple[int, bytes, bytes]:
        """Run a program beside the session (own process, own output), with a deadline."""
        api = self.client.api
        try:
            exec_id = api.exec_create(self.container_id, argv, stdout=True, stderr=True,
                                      workdir=self.repo_root)["Id"]
            stream = DockerStream(api.exec_start(exec_id, socket=True))
        except Exception as exc:
            raise SandboxError(f"cannot run {argv[0]} in the sandbox container: {exc}") from exc
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                for stream_id, payload in stream.frames():
                    (out if stream_id == 1 else err).extend(payload)
                if stream.eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxError(f"{argv[0]} in the sandbox took longer than {timeout:.0f} s")
                stream.fill(left)
        finally:
            stream.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
        return (code if code is not None else -1), bytes(out), bytes(err)


def _thread(name: str, work: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """Run `work` in a started daemon thread; what it raises lands in `errors`."""
    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


# --- staging directories of bind-mounted copies ------------------------------------------------
# <parent>/<run id>-<random>/ holds `owner` (who made it, for the orphan sweep) and `testbed/` (the
# copy, bound at the repo root). The parent is private to this user (0700); it lives in
# RAM (/dev/shm) when the copy is small and RAM has room, else in the temp directory.

def stage_parents() -> list[Path]:
    uid = os.getuid()
    return [Path("/dev/shm") / f"cwm-agent-{uid}", Path(tempfile.gettempdir()) / f"cwm-agent-{uid}"]


def make_stage(run_id: str, size: int) -> Path:
    in_ram, on_disk = stage_parents()
    try:
        fits = size <= RAM_STAGE_MAX and shutil.disk_usage(in_ram.parent).free >= 4 * size + (256 << 20)
    except OSError:  # no /dev/shm here
        fits = False
    parent = in_ram if fits and os.access(in_ram.parent, os.W_OK) else on_disk
    parent.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(parent)  # in a shared /tmp, somebody else may have made it first
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SandboxError(f"{parent} is not a private directory of this user (a link, another owner, or "
                           f"open to others), so a repository copy cannot go there; remove it: rm -rf {parent}")
    # Unique even when two agents use one run id (two evals of the same task ids).
    stage = Path(tempfile.mkdtemp(prefix=f"{run_id[:80]}-", dir=parent))
    (stage / "owner").write_text(_owner())
    return stage


def remove_stage(stage: Path, client: Any, image: str) -> None:
    """Delete a staging directory. Files the container's root made there are not ours to
    delete when we are not root: a throw-away container of the same image deletes them."""
    shutil.rmtree(stage, ignore_errors=True)
    if not stage.exists():
        return
    try:
        client.containers.run(image, ["rm", "-rf", "/stage/testbed"], entrypoint=[], remove=True,
                              **container_args("stage-cleanup", 3600, user="0",
                                               volumes={str(stage): {"bind": "/stage", "mode": "rw"}}))
    except Exception as exc:  # the engine is gone: `cwm-agent cleanup` will try again
        log.warning("could not delete the sandbox copy %s: %s", stage, exc)
    shutil.rmtree(stage, ignore_errors=True)


def sweep_stages(client: Any, image: str) -> int:
    """Delete the staging directories of agents that are gone (killed before they could)."""
    removed = 0
    for parent in stage_parents():
        for stage in parent.glob("*") if parent.is_dir() else ():
            try:
                owner = (stage / "owner").read_text()
            except OSError:  # being made right now, or not ours
                continue
            if _owner_alive(owner) is False:
                remove_stage(stage, client, image)
                removed += 1
    return removed


def cleanup_orphans(client: Any = None, *, image: str | None = None) -> tuple[int, int]:
    """Remove cwm-agent containers whose agent process is gone (on this host), that
    are past their time-to-live, or that no longer run, and the staging directories of
    agents that are gone. Returns how many of each."""
    client = client or docker_client()
    removed = 0
    now = time.time()
    for container in our_containers(client):
        labels = container.labels or {}
        alive = _owner_alive(labels.get(OWNER_LABEL, ""))
        expires = labels.get(EXPIRES_LABEL, "")
        expired = expires.isdigit() and int(expires) < now
        if alive is False or expired or container.status not in ("running", "created", "restarting"):
            try:
                container.remove(force=True)
                removed += 1
            except Exception:  # removed meanwhile (auto_remove)
                pass
    if image is None:
        from cwm_agent.sandbox.image import default_image

        image = default_image()
    return removed, sweep_stages(client, image)

