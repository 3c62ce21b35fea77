"""A real terminal for interactive tests: tmux runs the program, send-keys types, capture-pane reads.

Each Terminal has its own tmux server (-L), so tests never touch a person's sessions. The pane
stays after the program exits (remain-on-exit), so its last screen and exit status can be read.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _zombie_status(pid: int) -> int | None:
    """The exit status of a process that has ended but is not reaped yet (None: running or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) onwards
    if fields[0] != "Z" or len(fields) < 50:
        return None
    status = int(fields[49])  # field 52
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class Terminal:
    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
                 width: int = 200, height: int = 60):
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed (scripts/setup.sh installs it)")
        self.socket = f"cwm-test-{uuid.uuid4().hex[:8]}"
        self.transcript: list[str] = []
        # PYTHONFAULTHANDLER: a Python program that hangs prints every thread's stack on SIGABRT
        # (wait_exit sends it), so a hang in CI says where it was.
        environment = {**os.environ, **(env or {}), "TERM": "xterm-256color", "PYTHONFAULTHANDLER": "1"}
        command = " ".join(shlex.quote(a) for a in argv)
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                   "-c", str(cwd), f"exec {command}", env=environment)
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on")
        self._tmux("set-option", "-t", "t", "history-limit", "50000")

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, env=env,
                              timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def send(self, *keys: str) -> None:
        """tmux key names (Enter, C-c, Escape, C-u) or literal text (sent with -l)."""
        for key in keys:
            if re.fullmatch(r"Enter|Escape|Tab|BSpace|Up|Down|Left|Right|C-[a-z]|M-Enter", key):
                self._tmux("send-keys", "-t", "t", key)
            else:
                self._tmux("send-keys", "-t", "t", "-l", key)

    def line(self, text: str) -> None:
        """Type a line and press Enter."""
        self.send(text, "Enter")

    def screen(self) -> str:
        """Everything the pane shows, scrollback included, lines joined where they wrapped."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")

    def wait_for(self, pattern: str, *, timeout: float = 60.0, after: int = 0, count: int = 1) -> str:
        """Wait until ``pattern`` (a regex) shows ``count`` times in the screen's text after
        character ``after``; returns the screen. Fails with the screen in the message."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if len(re.findall(pattern, text[after:], re.MULTILINE)) >= count:
                return text
            if self.exited() is not None and time.monotonic() > deadline - timeout + 1:
                text = self.screen()
                if len(re.findall(pattern, text[after:], re.MULTILINE)) >= count:
                    return text
                raise AssertionError(f"the program exited before {pattern!r} showed; screen:\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not show within {timeout:.0f} s; screen:\n{text}")
            time.sleep(0.1)

    def exited(self) -> int | None:
        """The program's exit status once it ended, else None."""
        out = self._tmux("display-message", "-p", "-t", "t",
                         "#{pane_dead} s#{pane_dead_status} k#{pane_dead_signal}").split()
        if not out or out[0] != "1":
            return None
        status, killed = out[1][1:], out[2][1:]
        if status or killed:
            return int(status) if status else 128 + int(killed)  # killed by a signal: as a shell reports it
        # Dead, but tmux has no status: it has not reaped the program yet. Under load tmux 3.3a was seen
        # to leave it a zombie for over a minute (pane_dead=1, the process <defunct>); the kernel keeps
        # the zombie's status in /proc/PID/stat (field 52, exit_code, as waitpid reports it).
        return _zombie_status(self.pid())

    def wait_exit(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.exited()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit within {timeout:.0f} s; {self._hang_report()}")
            time.sleep(0.1)
        return code

    def _hang_report(self) -> str:
        """What tmux knows of the pane, the processes under it, and (SIGABRT to a Python program
        run with PYTHONFAULTHANDLER) every thread's stack, then the screen."""
        state = self._tmux("display-message", "-p", "-t", "t",
                           "pane_dead=#{pane_dead} status=#{pane_dead_status} signal=#{pane_dead_signal}").strip()
        pid = self.pid()
        tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--forest", "-g", str(os.getsid(pid))]
                              if _alive(pid) else ["true"], capture_output=True, text=True).stdout
        if _alive(pid):
            os.kill(pid, signal.SIGABRT)
            time.sleep(2)
        return f"tmux: {state}; processes:\n{tree}\nscreen:\n{self.screen()}"

    def pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def kill9(self) -> None:
        os.kill(self.pid(), signal.SIGKILL)

    def close(self) -> None:
        try:
            self._tmux("kill-server")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
