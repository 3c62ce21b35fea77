"""The model's bash session, spoken over any byte stream (a Docker attach socket, a
subprocess's pipes). This module knows nothing of Docker.

Two programs sit at the far end of the stream, both bash:

* The keeper (KEEPER_SCRIPT) is the sandbox's long-lived main process. It never
  runs a model command. It starts a session, and on SIGUSR1 kills every process
  in the sandbox except itself and pid 1 (`kill -9 -1`: one syscall, atomic
  against fork bombs, since a process that was sent SIGKILL cannot fork any
  more), waits until each of them has exited and been reaped (one killed inside
  a write() still finishes it; a zombie still holds its pid against the pids
  limit), however long that takes, then starts a fresh session in the repo root.
  A restart is never announced while anything of the old session is left: if
  that takes too long, we give up on the sandbox (RESTART_TIMEOUT) instead.
  The keeper forks only then, while every pid is free (bash exits when a fork
  fails, and a fork bomb in the session holds every pid it can get).
  Its own stderr is /dev/null: bash reports each job it kills there ("Killed
  ..."), and that must not reach the next command's output (the session's
  stderr is its stdout).
  It tells us what happened with marker lines that carry a random token sent as
  the first line on stdin (never in argv or the environment, so `ps` and `env`
  cannot leak it):
  `<token> ready <gen>\\n` after each start, `<token> died <gen>\\n` when the
  session's bash exits by itself (`exit`, `kill -9 $$`, OOM...), `<token> timeout
  <gen>\\n` when it ended a command that outlived its time limit (each command
  tells it the limit on fd 9; the agent then restarts the session, as after a
  death). It ends every process, empties a bind-mounted repository copy and
  exits when its stdin reaches EOF (the agent is gone: the kernel closed its
  socket, even after SIGKILL), noticed between commands and, by polling, while
  one runs; or after its time-to-live, which ends the sandbox.
* The session is a plain `bash -s` (so `$$` is its own pid) reading commands
  from the same stdin. Each command travels as one unit that bash parses whole
  before running it:

      { builtin eval '<command>'; } 0<&8 8<&- 2>&1; builtin printf '%s __EXIT_CODE__=%s\\n' '<sentinel>' "$?"

  `eval` turns a syntax error in the command into an error message instead of a
  shell waiting for the rest of it; fd 8 is /dev/null opened by the keeper at
  start, so commands read EOF on stdin (and still do if /dev/null is deleted);
  stderr is merged into stdout. The sentinel is random per session and numbered
  per command, so no output can fake it. We read up to the sentinel line, not
  to EOF: a background child that keeps stdout open does not hold us up.

  Every line we look for (the sentinel with the exit code, the keeper's markers)
  is one line that bash writes with a single write() (bash's stdout is line
  buffered: a printf of `\\n...\\n...\\n` would be three writes). A write of
  under PIPE_BUF bytes is atomic, so output of processes still running in the
  background (a fork bomb's `fork: retry` messages) can come before or after it,
  never inside it. It need not start a line either: the random token finds it.

On timeout, too much output, or the session's death we send SIGUSR1 (through
`Transport.interrupt`), skip everything up to the next `ready` marker, and run a
short prelude in the fresh session. If even that fails, `SessionBroken` tells
the sandbox to rebuild itself (for instance after `rm -rf /` removed bash).
"""

from __future__ import annotations

import os
import re
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Protocol

from cwm_agent.sandbox.base import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_REPO_ROOT,
    OUTPUT_LIMIT,
    CommandResult,
    SandboxError,
    Status,
)

# The keeper. $1: seconds to live; $2: the repo root; $3 (optional): "empty" when the repo
# root is a bind mount of the agent's staging copy, whose contents the keeper deletes when
# the agent is gone. Names start with __k_ so they cannot clash with anything; the session
# never sees them (it is exec'd).
KEEPER_SCRIPT = r"""
# `kill -9 -1` below must only ever reach the sandbox: refuse to run anywhere but
# as its main process (pid 1, or the child of an init such as docker-init).
if (( $$ != 1 && PPID != 1 )); then echo "cwm-keeper: not a sandbox's main process"; exit 97; fi
# The keeper's own stderr is dropped: bash reports each job it kills ("Killed ..."),
# and that must not land in the next command's output. Sessions get stdout as stderr.
exec 2>/dev/null 8<>/dev/null
IFS= read -r __k_tok || exit 0
__k_deadline=$((SECONDS + $1)) __k_root=$2 __k_empty=$3 __k_gen=0 __k_req=0 __k_sess=0
__k_due=0 __k_idle=0 __k_rchar= __k_ending=0
# fd 7: a pipe that only we and the session write to, read with a timeout: our clock tick.
# The session writes `T<microseconds>` when a command starts and `T0` when it ends (its
# time limit, enforced here too); a USR1 trap writes a line so that the read returns at once
# (bash's `read -t` is not interrupted by a trapped signal; the trap runs, the read goes on).
exec 7<> <(:)
trap '__k_req=1; printf "U\n" >&7' USR1
__k_now() {  # microseconds, in __k_t (bash 5: EPOCHREALTIME; older: whole seconds)
  if [[ $EPOCHREALTIME == *[.,]* ]]; then __k_t=${EPOCHREALTIME/[.,]/}; __k_t=$((10#$__k_t))
  else __k_t=$((SECONDS * 1000000)); fi
}
__k_drain() {
  # Drop input sent to a session that had already died; at EOF the agent is gone.
  while read -t 0 -u 0; do
    IFS= read -r -d '' -N 65536 -t 0.05 -u 0 __k_junk
    (( $? == 1 )) && __k_end
  done
  return 0
}
__k_gone() {
  # SIGKILL takes effect on a process's way out of the kernel: one killed while it waits
  # for the pipe's lock inside write() still completes that write after kill returns (8 KiB
  # of `yes` then came after the next command's output). So wait until every process but
  # pid 1 and us has exited and been reaped, killing again, until $1 (SECONDS): the fresh
  # session must find every pid of the old one free. (The agent gives up on a sandbox whose
  # restart takes too long; our time-to-live still ends it.) Input arriving meanwhile is
  # for a session being killed: dropped, and at EOF we end.
  local __k_p __k_s
  while (( SECONDS < $1 )); do
    (( __k_ending )) || __k_drain
    for __k_p in /proc/[0-9]*; do
      __k_p=${__k_p#/proc/}
      [[ $__k_p == *[!0-9]* ]] && continue
      (( __k_p == 1 || __k_p == $$ )) && continue
      IFS= read -r __k_s < "/proc/$__k_p/stat" || continue
      __k_s=${__k_s##*) }
      if [[ $__k_s == [ZX]* ]]; then
        # A zombie writes nothing, but holds its pid (against the pids limit: the fresh
        # session could not fork) until init reaps it. Ours bash reaps (SIGCHLD).
        read -t 0.002 -u 7; continue 2
      fi
      kill -9 -1 2>/dev/null; read -t 0.002 -u 7; continue 2
    done
    return 0
  done
  return 1
}
__k_end() {
  # The agent is gone: end every process of the sandbox, empty the repository copy when it
  # is the agent's (a bind mount of its staging directory: nobody else would delete it), exit.
  # Every pid is free by then, so the one fork (rm) cannot fail for want of one.
  __k_ending=1
  kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null
  __k_gone $((SECONDS + 5))
  if [[ $__k_empty == empty && -n $__k_root && $__k_root != / ]]; then
    local __k_m __k_f
    while read -r __k_m __k_m __k_m __k_m __k_f __k_m; do
      if [[ $__k_f == "$__k_root" ]]; then
        shopt -s dotglob nullglob
        __k_f=("$__k_root"/*)
        (( ${#__k_f[@]} )) && rm -rf -- "${__k_f[@]}"
        break
      fi
    done < /proc/self/mountinfo
  fi
  exit 0
}
__k_spawn() {
  kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null
  __k_gone "$__k_deadline" || exit 0
  __k_drain
  # Lines of the old session (every writer is gone now) and of our trap: stale.
  while read -t 0 -u 7; do IFS= read -r -u 7 __k_junk; done
  __k_due=0 __k_idle=0 __k_rchar=
  __k_gen=$((__k_gen + 1))
  # The only fork but for __k_end's, and right after every pid was freed: bash exits when it
  # cannot fork, and a fork bomb in the session leaves no pid free for long. The session gets
  # fd 9, the write end of our clock pipe, for its commands' time limits.
  # (An explicit 0<&0: bash gives background jobs /dev/null as stdin otherwise.)
  ( exec 9>&7 7<&-; cd -- "$__k_root" 2>/dev/null; exec bash --noprofile --norc -s ) 0<&0 2>&1 &
  __k_sess=$!
  printf '%s ready %s\n' "$__k_tok" "$__k_gen"
}
__k_watch() {
  # Has the agent gone while a command runs? Nothing is sent to stdin then (a command reads
  # /dev/null; an interrupt is a signal), so stdin that stays readable while the session
  # takes nothing from it (its bash reads commands byte by byte: rchar) is at EOF. Three ticks
  # in a row, so that a command sent just as the previous one ended is not taken for EOF.
  if read -t 0 -u 0; then
    local __k_io=
    IFS= read -r -d '' __k_io < "/proc/$__k_sess/io"
    __k_io=${__k_io%%$'\n'*}
    if [[ $__k_io == "$__k_rchar" ]]; then
      (( ++__k_idle >= 3 )) && __k_end
    else
      __k_rchar=$__k_io __k_idle=1
    fi
  else
    __k_idle=0 __k_rchar=
  fi
}
__k_spawn
while (( SECONDS < __k_deadline )); do
  if (( __k_req )); then __k_req=0; __k_spawn; continue; fi
  # One tick: returns at once for a line from the session or the trap.
  if IFS= read -r -t 0.2 -u 7 __k_line; then
    while :; do
      case $__k_line in
        T0) __k_due=0 ;;
        T[1-9]*) [[ ${__k_line:1} == *[!0-9]* || ${#__k_line} -gt 16 ]] ||
                   { __k_now; __k_due=$((__k_t + ${__k_line:1} + 500000)); } ;;
      esac
      read -t 0 -u 7 || break
      IFS= read -r -u 7 __k_line || break
    done
  fi
  if (( __k_req )); then __k_req=0; __k_spawn; continue; fi
  if (( __k_sess )); then
    if ! kill -0 "$__k_sess" 2>/dev/null; then
      __k_sess=0 __k_due=0
      __k_drain
      printf '%s died %s\n' "$__k_tok" "$__k_gen"
      continue
    fi
    if (( __k_due )); then
      __k_now
      if (( __k_t > __k_due )); then
        # The command outlived its time limit (and the agent did not restart the session: it
        # is gone, or slow): end it and everything else now, and say so. The agent restarts
        # the session (USR1) as after a death, so it is never restarted twice.
        kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null
        __k_sess=0 __k_due=0
        __k_gone "$__k_deadline" || exit 0
        printf '%s timeout %s\n' "$__k_tok" "$__k_gen"
        continue
      fi
    fi
    __k_watch
  else
    __k_drain
  fi
done
exit 0
"""

KEEPER_NAME = "cwm-keeper"  # the keeper's $0, what `ps` shows
DEFAULT_TTL = 6 * 3600  # seconds; an orphaned sandbox ends by itself after this
RESTART_TIMEOUT = 30.0

# Runs first in every fresh session: SWE-bench images activate their conda env
# from ~/.bashrc, and interactive shells (what the model expects) read it.
PRELUDE = '[ -f ~/.bashrc ] && . ~/.bashrc >/dev/null 2>&1; builtin cd -- {root} 2>/dev/null; true'

_MARKER_WINDOW = 256  # longer than any marker: how far back a new chunk can complete one


def keeper_argv(ttl_seconds: int = DEFAULT_TTL, repo_root: str = DEFAULT_REPO_ROOT,
                bash: str = "/bin/bash", *, empty_on_exit: bool = False) -> list[str]:
    """The command line that starts the keeper as the sandbox's main process. `empty_on_exit`:
    the repo root is a bind mount of the agent's own copy, which the keeper empties when the
    agent is gone (only if the repo root is a mount point)."""
    argv = [bash, "-c", KEEPER_SCRIPT, KEEPER_NAME, str(int(ttl_seconds)), repo_root]
    return argv + ["empty"] if empty_on_exit else argv


def quote(text: str) -> str:
    """Single-quote `text` for bash (NUL bytes cannot be passed to bash, so they are dropped)."""
    return "'" + text.replace("\0", "").replace("'", "'\\''") + "'"


class Transport(Protocol):
    """A byte stream to the keeper, plus a way to poke it."""

    def send(self, data: bytes, timeout: float) -> None:
        """Write all of `data`; raise TimeoutError if that takes longer than `timeout`."""
        ...

    def recv(self, timeout: float) -> bytes | None:
        """Next bytes of merged output; b"" at EOF; None if nothing came within `timeout`."""
        ...

    def interrupt(self) -> None:
        """Deliver SIGUSR1 to the keeper (kill everything, start a fresh session)."""
        ...

    def close(self) -> None: ...


class SessionBroken(SandboxError):
    """The session could not be restarted in place (the keeper is gone, or a fresh
    bash cannot start). `status` is what the interrupted command ended with."""

    def __init__(self, message: str, status: Status = "died", seconds: float = 0.0):
        super().__init__(message)
        self.status: Status = status
        self.seconds = seconds


class _Lost(Exception):
    """Internal: the stream ended or the keeper stopped answering."""


class Session:
    """One persistent bash in a sandbox: `run()` a command, get a CommandResult.

    `start()` must be called once the keeper is running at the other end.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        repo_root: str = DEFAULT_REPO_ROOT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        output_limit: int = OUTPUT_LIMIT,
        restart_timeout: float = RESTART_TIMEOUT,
        prelude: str | None = None,
    ):
        self.transport = transport
        self.repo_root = repo_root
        self.command_timeout = command_timeout
        self.output_limit = output_limit
        self.restart_timeout = restart_timeout
        self.prelude = PRELUDE.format(root=quote(repo_root)) if prelude is None else prelude
        self.generation = 0  # which fresh session we are talking to (the keeper counts)
        self.restarts = 0
        self._keeper_token = secrets.token_hex(16).encode()
        self._token = secrets.token_hex(12)
        self._seq = 0
        self._buf = bytearray()  # output already read but not yet part of a result
        self._marker = re.compile(self._keeper_token + rb" (ready|died|timeout) (\d+)\n")
        self.restart_seconds = 0.0  # how long the last restart took, from the interrupt to a fresh
        # session answering its prelude (the command that caused it counts this in its own time)

    # --- public -------------------------------------------------------------------------

    def start(self) -> None:
        """Hand the keeper its token and wait for the first session."""
        try:
            self.transport.send(self._keeper_token + b"\n", self.restart_timeout)
            self._await_ready(1)
            self._run_prelude()
        except (_Lost, OSError, TimeoutError) as exc:
            raise SessionBroken(f"the sandbox's shell did not start: {exc}") from exc

    def run(self, command: str, *, timeout: float | None = None,
            output_limit: int | None = None) -> CommandResult:
        """Run `command` in the session. Timeout, overflow and death restart the
        session (every process it started is killed) and are reported in the
        result's status. Raises SessionBroken if no fresh session can be had."""
        timeout = self.command_timeout if timeout is None else timeout
        limit = self.output_limit if output_limit is None else output_limit
        began = time.monotonic()
        if self._died_meanwhile():
            # The shell died after the previous command (a delayed `kill $$`, say):
            # like writing to a dead shell, this command does not run.
            return self._recover("died", began)
        try:
            status, output, code = self._exchange(command, timeout, limit)
        except _Lost as exc:
            raise SessionBroken(f"the sandbox stopped answering: {exc}", "died",
                                time.monotonic() - began) from exc
        if status == "ok":
            text = output.decode("utf-8", errors="replace")
            return CommandResult(text, code, "ok", time.monotonic() - began)
        return self._recover(status, began)

    def restart(self) -> None:
        """Kill every process the session started and start a fresh one in the repo root."""
        try:
            self._restart()
        except _Lost as exc:
            raise SessionBroken(f"the session could not be restarted: {exc}") from exc

    def close(self) -> None:
        self.transport.close()

    # --- the protocol -------------------------------------------------------------------

    def _unit(self, command: str, sentinel: str, timeout: float) -> bytes:
        # `T<µs>` / `T0` on fd 9 (the keeper's clock pipe; errors to fd 8, /dev/null): the
        # keeper enforces the time limit too, whether or not we are still there.
        micros = max(1, int(timeout * 1e6))
        text = (
            f"\nbuiltin printf 'T%s\\n' {micros} 2>&8 >&9; "
            f"{{ builtin eval {quote(command)}; }} 0<&8 8<&- 9>&- 2>&1; "
            f"builtin printf '%s __EXIT_CODE__=%s\\n' '{sentinel}' \"$?\"; "
            f"builtin printf 'T0\\n' 2>&8 >&9\n"
        )
        try:  # bytes that arrived undecodable (surrogateescape) go back as they were
            return text.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", errors="replace")

    def _exchange(self, command: str, timeout: float, limit: int) -> tuple[Status, bytes, int | None]:
        """Send one command, read its output up to the sentinel."""
        self._seq += 1
        sentinel = f"__CWM_DONE_{self._token}_{self._seq}__"
        done = re.compile(sentinel.encode() + rb" __EXIT_CODE__=(\d+)\n")
        deadline = time.monotonic() + timeout
        try:
            self.transport.send(self._unit(command, sentinel, timeout), timeout)
        except TimeoutError:
            return "timeout", b"", None
        except OSError as exc:
            raise _Lost(f"cannot write to the sandbox ({exc})") from exc
        buf = self._buf
        scanned = 0
        while True:
            start = max(0, scanned - _MARKER_WINDOW)
            end = done.search(buf, start)
            keeper = self._marker.search(buf, start)
            if keeper and (end is None or keeper.start() < end.start()):
                # `timeout`: the keeper ended the command at its time limit before we did (we
                # were slow); it waits for our interrupt to start a fresh session, as after a death.
                self._buf = bytearray()
                return ("timeout" if keeper.group(1) == b"timeout" else "died"), b"", None
            if end:
                output = bytes(buf[: end.start()])
                self._buf = bytearray(buf[end.end():])
                if len(output) > limit:
                    return "overflow", b"", None
                return "ok", output, int(end.group(1))
            if len(buf) > limit + _MARKER_WINDOW:
                self._buf = bytearray()
                return "overflow", b"", None
            scanned = len(buf)
            left = deadline - time.monotonic()
            if left <= 0:
                self._buf = bytearray()
                return "timeout", b"", None
            chunk = self._recv(left)
            if chunk is None:
                continue
            if not chunk:
                raise _Lost("the sandbox's output stream ended (its main process exited)")
            buf += chunk

    def _recv(self, timeout: float) -> bytes | None:
        try:
            return self.transport.recv(timeout)
        except OSError as exc:
            raise _Lost(f"cannot read from the sandbox ({exc})") from exc

    def _died_meanwhile(self) -> bool:
        """Read what is already waiting; True if the keeper reported the session's death."""
        while True:
            try:
                chunk = self.transport.recv(0)
            except OSError:
                return True  # _recover finds out the rest
            if chunk is None:
                break
            if not chunk:
                return True  # EOF: _recover finds out the rest
            self._buf += chunk
        return self._marker.search(self._buf) is not None

    def _recover(self, status: Status, began: float) -> CommandResult:
        try:
            self._restart()
        except _Lost as exc:
            raise SessionBroken(f"the session could not be restarted: {exc}", status,
                                time.monotonic() - began) from exc
        return CommandResult("", None, status, time.monotonic() - began)

    def _restart(self) -> None:
        """Up to two tries: a fresh bash can die at once (e.g. it was deleted)."""
        began = time.monotonic()
        for attempt in range(2):
            self._buf = bytearray()
            try:
                self.transport.interrupt()
            except Exception as exc:  # the container is gone, the process exited...
                raise _Lost(f"cannot signal the sandbox's keeper ({exc})") from exc
            self._await_ready(self.generation + 1)
            try:
                self._run_prelude()
            except _Lost:
                if attempt:
                    raise
                continue
            self.restarts += 1
            self.restart_seconds = time.monotonic() - began
            return

    def _await_ready(self, generation: int) -> None:
        """Skip output until the keeper announces session `generation` (or a later one)."""
        deadline = time.monotonic() + self.restart_timeout
        buf = self._buf
        while True:
            for match in self._marker.finditer(buf):
                gen = int(match.group(2))
                if match.group(1) == b"ready" and gen >= generation:
                    self.generation = gen
                    self._buf = bytearray(buf[match.end():])
                    return
            buf = buf[-_MARKER_WINDOW:]  # the skipped output is dropped, as the spec says
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Lost(f"no fresh session within {self.restart_timeout:.0f} s")
            chunk = self._recv(left)
            if chunk == b"":
                raise _Lost("the sandbox's output stream ended (its main process exited)")
            if chunk:
                buf += chunk

    def _run_prelude(self) -> None:
        status, output, _ = self._exchange(self.prelude, self.restart_timeout, 1 << 20)
        if status != "ok":
            raise _Lost(f"the fresh session failed to start ({status})")


# --- a transport over a subprocess's pipes (bubblewrap and tests) -------------------------

class PipeTransport:
    """The keeper as a local subprocess: `proc` must have stdin and stdout pipes,
    stderr merged into stdout. `interrupt` defaults to SIGUSR1 to `keeper_pid`
    (default: `proc.pid`)."""

    def __init__(self, proc: subprocess.Popen[bytes], *, keeper_pid: int | None = None,
                 interrupt: Callable[[], None] | None = None):
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        os.set_blocking(self._in, False)
        self._keeper_pid = proc.pid if keeper_pid is None else keeper_pid
        self._interrupt = interrupt

    def send(self, data: bytes, timeout: float) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the sandbox is not reading its input")
            _, writable, _ = select.select([], [self._in], [], left)
            if writable:
                try:
                    view = view[os.write(self._in, view):]
                except BlockingIOError:
                    continue

    def recv(self, timeout: float) -> bytes | None:
        readable, _, _ = select.select([self._out], [], [], max(0.0, timeout))
        if not readable:
            return None
        return os.read(self._out, 1 << 20)

    def interrupt(self) -> None:
        if self._interrupt is not None:
            self._interrupt()
        elif self.proc.poll() is None:
            os.kill(self._keeper_pid, signal.SIGUSR1)
        else:
            raise ProcessLookupError("the keeper process has exited")

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
