"""`cwm-agent chat`: CWM works on your repository while you watch, approve, correct and steer.

A front end over the same Agent as `solve` (episode.py builds both): the agent asks this module
before each turn, before each action runs, and after Ctrl-C stopped a step (agent.Human). What
the model reads of your decisions is in protocol.HUMAN. The loop never imports this module.

At the approval prompt (a public contract: scripts and tests type into it), one line:
  <Enter> or y   run the action
  n MESSAGE      reject it; MESSAGE goes to the model (a bare n asks for it on a second line)
  e              edit the command (or the edit/create body) in place, pre-filled; the edit runs
  a              run it, and allow every command with the same first word for this session
  /COMMAND       /diff /undo /apply /mode /allowed /save /help /quit (at any prompt)

Everything needed to continue is written after every step: RUN/chat.json (the transcript and
the session), RUN/workspace.diff (the sandbox's files against the base), RUN/trajectory.json.
`cwm-agent chat --resume RUN` continues in a fresh sandbox, even after a kill -9.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from cwm_agent import episode, protocol
from cwm_agent.agent import RUN, Agent, Decision, EpisodeResult, Exit, Stop
from cwm_agent.cli.ui import LiveView, trimmed
from cwm_agent.config import Settings
from cwm_agent.protocol import Action
from cwm_agent.sandbox import snapshot
from cwm_agent.trajectory import Step
from cwm_agent.trajectory import load as load_trajectory

MODES = ("confirm", "yolo", "human")
STATE_FILE, WORKSPACE_FILE, HISTORY_FILE = "chat.json", "workspace.diff", "chat-history"
STATE_VERSION = 1
EXIT_OK, EXIT_INFRA, EXIT_INTERRUPTED = 0, 2, 130

HELP = """\
[bold]At the approval prompt[/]
  [cyan]Enter[/] or [cyan]y[/]      run the action
  [cyan]n MESSAGE[/]      reject it and tell CWM why (a bare [cyan]n[/] asks for the message)
  [cyan]e[/]              edit the command before it runs (multi-line: Esc then Enter runs it)
  [cyan]a[/]              run it and allow every command with the same first word from now on
[bold]At any prompt[/]
  [cyan]/diff[/]          the sandbox's changes against the base
  [cyan]/undo[/]          restore the files as they were before the last action that changed them
  [cyan]/apply[/]         apply the changes to your repository (shown first, asks y/N)
  [cyan]/mode M[/]        confirm (ask before each action) | yolo (run everything) | human (you type the commands)
  [cyan]/allowed[/]       the command prefixes allowed with [cyan]a[/]
  [cyan]/save[/]          write patch.diff, the trajectory and the session now
  [cyan]/quit[/]          leave (the session can be resumed)
[bold]While CWM works[/]
  [cyan]Ctrl-C[/]         stop the current step and say something to CWM; Ctrl-C again leaves"""


class Leave(Stop):
    """The person leaves (/quit, Ctrl-D, a second Ctrl-C): the agent ends the episode as
    interrupted; the session is saved, the sandbox removed, the way to resume printed."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass
class ChatRequest:
    repo: Path
    issue: str | None  # None: ask for it
    label: str
    out: Path
    settings: Settings
    flags: dict[str, Any] = field(default_factory=dict)  # what the person passed: kept for --resume
    mode: str = "confirm"
    resume: dict[str, Any] | None = None  # a saved chat.json


def load_session(run_dir: Path) -> dict[str, Any]:
    """A saved session, or ValueError saying what is wrong with the folder."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no chat session ({STATE_FILE} is missing); pass the folder "
                         "that `cwm-agent chat` printed when it left")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); the session cannot be resumed") from None
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path} is of session format {data.get('version')!r}; this cwm-agent reads {STATE_VERSION}")
    return data


def first_word(action: Action) -> str:
    """What `a` allows: a bash command's first word (after variable assignments), else the tool."""
    if action.tool != "bash":
        return action.tool
    try:
        words = shlex.split(action.body, comments=True)
    except ValueError:
        words = action.body.split()
    for word in words:
        if "=" not in word.split("/")[0]:
            return word
    return words[0] if words else ""


class Terminal:
    """Lines from the person: prompt_toolkit on a terminal (history, editing in place), plain
    lines otherwise. Ctrl-C raises KeyboardInterrupt and Ctrl-D EOFError, as input() does."""

    def __init__(self, history: Path):
        self.session = None
        if sys.stdin.isatty() and sys.stdout.isatty():
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory

            self.session = PromptSession(history=FileHistory(str(history)))

    def line(self, message: str, *, default: str = "", multiline: bool = False) -> str:
        if self.session is None:
            return input(message)
        from prompt_toolkit.formatted_text import ANSI

        return self.session.prompt(ANSI(message), default=default, multiline=multiline)


def _bold(text: str) -> str:
    return f"\x1b[1m{text}\x1b[0m"


class Chat(LiveView):
    """The session: the live view (Events), the person's decisions (agent.Human) and the commands."""

    def __init__(self, req: ChatRequest, console: Console):
        super().__init__(console, max_turns=req.settings.max_turns)
        self.req, self.out = req, req.out
        self.mode = req.mode
        self.allowed: list[str] = []
        self.agent: Agent | None = None
        self.sandbox: Any = None
        self.terminal = Terminal(req.out / HISTORY_FILE)
        self.interrupt_pending = False  # Ctrl-C came between the places where a step can stop
        self.issue = req.issue
        self.base: snapshot.Snapshot | None = None
        self.last: snapshot.Snapshot | None = None  # the files after the latest action
        self.undo: list[dict[str, Any]] = []  # {turn, tool, before: Snapshot}, latest last
        self.display_ms: list[float] = []  # reply arrived -> action on screen, per action
        self._reply_at = 0.0
        self._snapshots_ok = True
        self._mid_step = False  # a reply waits for its action's result: nothing consistent to save
        self.leaving: int | None = None  # the exit code, once the person chose to leave

    # -- signals -----------------------------------------------------------------------------
    def on_sigint(self, signum, frame) -> None:
        """Ctrl-C stops the model or a command (the agent marks those waits `busy`); elsewhere in
        a step it is remembered and asked about at the next decision."""
        if self.agent is None or self.agent.busy:
            raise KeyboardInterrupt
        self.interrupt_pending = True

    # -- the view (Events) -------------------------------------------------------------------
    def on_text(self, delta: str) -> None:
        super().on_text(delta)
        self._reply_at = time.perf_counter()

    def on_action(self, step: Step) -> None:
        self._mid_step = True
        super().on_action(step)
        if self._reply_at:
            self.display_ms.append((time.perf_counter() - self._reply_at) * 1000)
            self._reply_at = 0.0

    def on_step(self, step: Step) -> None:
        self._mid_step = False
        if step.human and step.human.get("typed"):  # the command the person typed: just its output
            self.console.print(Text(trimmed(step.observation or "", 40) or "(no output)", style="dim"))
        elif step.human and "rejected" in step.human:
            self._stop_status()
            self.console.print(Text("rejected: CWM is told so" + (" with your message" if step.human["rejected"] else ""),
                                    style="yellow"))
        elif step.human and step.human.get("interrupted") == "model":
            self._stop_status()
        else:
            super().on_step(step)
        ran = step.action is not None and not (step.human and "rejected" in step.human)
        if ran:
            self._snapshot(step)
        self.save()

    def on_end(self, result: EpisodeResult) -> None:
        super().on_end(result)
        self.save()

    # -- the person's decisions (agent.Human) --------------------------------------------------
    def before_turn(self, agent: Agent) -> None:
        if self.interrupt_pending:
            self.interrupt_pending = False
            self._tell_after_interrupt("the step")
        while self.mode == "human":
            line = self._ask(f"{_bold('you $')} ")
            if line.startswith("/"):
                self.command(line)
            elif line.strip():
                agent.typed(line)

    def decide(self, step: Step, action: Action) -> Decision:
        if self.interrupt_pending:
            self.interrupt_pending = False
            message = self._message("interrupted before the action ran; message for CWM (it will not run): ")
            return Decision("reject", message)
        if self.mode == "yolo":
            return RUN
        if self.mode == "human":  # the person holds the shell: CWM's action does not run
            return Decision("reject")
        if self.mode == "confirm" and first_word(action) in self.allowed:
            self.console.print(Text(f"allowed: {first_word(action)}", style="dim"))
            return RUN
        while True:
            answer = self._ask(f"{_bold('run?')} [Y/n/e/a] ")
            word, _, rest = answer.strip().partition(" ")
            if word in ("", "y", "Y", "yes"):
                return RUN
            if word in ("n", "N", "no"):
                message = rest.strip() or self._message("message for CWM (Enter: none): ")
                return Decision("reject", message)
            if word == "e" and not rest:
                edited = self._edit(action)
                if edited is None:
                    continue
                return RUN if edited == action else Decision("replace", action=edited)
            if word == "a" and not rest:
                prefix = first_word(action)
                if prefix and prefix not in self.allowed:
                    self.allowed.append(prefix)
                    self.console.print(Text(f"allowed for this session: every command starting with {prefix!r}",
                                            style="green"))
                return RUN
            if answer.startswith("/"):
                outcome = self.command(answer)
                if outcome == "yolo":
                    return RUN
                if outcome == "human":  # the person takes the shell: this action does not run
                    return Decision("reject")
                continue
            self.console.print("[yellow]type Enter or y to run it, n MESSAGE to reject it, e to edit it, "
                               "a to allow its first word, or /help[/]")

    def interjection(self, step: Step, during: str) -> str | None:
        self._stop_status()
        what = "the model" if during == "model" else "the command"
        try:
            return self._message(f"stopped {what}; message for CWM (Ctrl-C again leaves): ")
        except Leave:
            return None

    # -- prompts -------------------------------------------------------------------------------
    def _ask(self, prompt: str, *, default: str = "", multiline: bool = False) -> str:
        """One line from the person, with the mode in front. Ctrl-C or Ctrl-D at a prompt leaves."""
        self._stop_status()
        try:
            return self.terminal.line(f"\x1b[2m[{self.mode}]\x1b[0m {prompt}", default=default, multiline=multiline)
        except KeyboardInterrupt:
            self.leaving = EXIT_INTERRUPTED
        except EOFError:
            self.leaving = EXIT_OK
        raise Leave(self.leaving)

    def _message(self, prompt: str) -> str:
        """A message for the model; commands typed here run, then the prompt comes back."""
        while True:
            line = self._ask(prompt)
            if not line.startswith("/"):
                return line.strip()
            self.command(line)

    def _tell_after_interrupt(self, what: str) -> None:
        message = self._message(f"stopped {what}; message for CWM: ")
        if message and self.agent:
            self.agent.tell(message)

    def _edit(self, action: Action) -> Action | None:
        """The action's command (or body) in the prompt, pre-filled; None when emptied."""
        multiline = "\n" in action.body or action.tool in ("edit", "create")
        hint = " (Esc then Enter runs it)" if multiline else ""
        body = self._ask(f"edit {action.tool}{hint}:\n" if multiline else f"edit {action.tool}: ",
                         default=action.body, multiline=multiline)
        if not body.strip():
            self.console.print("[yellow]empty: nothing to run; answer again[/]")
            return None
        return Action(action.tool, body)

    # -- commands ------------------------------------------------------------------------------
    def command(self, line: str) -> str | None:
        """Run one /command. Returns the new mode when it changed, else None."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name == "/help":
            self.console.print(Panel(HELP, title="cwm-agent chat", border_style="cyan"))
        elif name == "/diff":
            self._show_diff()
        elif name == "/undo":
            self._undo()
        elif name == "/apply":
            self._apply()
        elif name == "/allowed":
            self.console.print("allowed first words: " + (", ".join(self.allowed) if self.allowed else "none (answer a to add one)"))
        elif name == "/save":
            for path in self.save(patch=True):
                self.console.print(f"saved: {path}", highlight=False, soft_wrap=True)
        elif name == "/mode":
            if arg not in MODES:
                self.console.print(f"[yellow]/mode takes one of {', '.join(MODES)} (now: {self.mode})[/]")
                return None
            changed = arg != self.mode
            self.mode = arg
            self.console.print(f"mode: [bold]{arg}[/]" + ("; type commands, /mode confirm gives CWM the shell back"
                                                            if arg == "human" else ""))
            self.save()
            return arg if changed else None
        elif name in ("/quit", "/exit"):
            self.leaving = EXIT_OK
            raise Leave(EXIT_OK)
        else:
            self.console.print(f"[yellow]no command {escape(name)}; /help lists them[/]")
        return None

    def _show_diff(self, empty: str = "no changes against the base") -> str | None:
        """The sandbox's changes, coloured; None (after saying ``empty``, or why) when there are none."""
        diff = self._diff()
        if diff is not None and not diff.strip():
            self.console.print(empty)
            diff = None
        if diff is not None:
            self.console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default", word_wrap=True))
        return diff

    def _diff(self) -> str | None:
        try:
            return self.sandbox.diff()
        except Exception as exc:  # a broken sandbox: say so, keep the session
            self.console.print(f"[red]cannot read the sandbox's changes: {escape(str(exc))}[/]")
            return None

    def _undo(self) -> None:
        if not self.undo:
            self.console.print("nothing to undo: no action changed a file" + ("" if self._snapshots_ok else
                                                                                " (snapshots are off)"))
            return
        entry = self.undo[-1]
        try:
            paths = snapshot.restore(self.sandbox, entry["before"])
        except Exception as exc:
            self.console.print(f"[red]/undo failed: {escape(str(exc))}[/]")
            return
        self.undo.pop()
        self.last = entry["before"]
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        self.console.print(f"[green]undid turn {entry['turn']} ({entry['tool']}):[/] restored {escape(shown) or 'nothing'}")
        if self.agent:
            self.agent.tell(protocol.human_message("undone", turn=str(entry["turn"]), tool=entry["tool"],
                                                   paths=shown or "no files"))
        self._write_workspace()
        self.save()

    def _apply(self) -> None:
        from cwm_agent.sandbox import patch as patch_mod

        diff = self._show_diff("nothing to apply: no changes against the base")
        if diff is None:
            return
        answer = self._ask(f"apply these changes to {self.req.repo}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            self.console.print("not applied")
            return
        try:
            applied = patch_mod.apply_to_repo(diff, self.req.repo)
        except Exception as exc:
            self.console.print(f"[red]not applied: {escape(str(exc))}[/]")
            return
        how = f" with {applied.applied_with}" if applied.applied_with else ""
        self.console.print(f"[green]applied to {self.req.repo}{how}[/]")

    # -- snapshots and saving --------------------------------------------------------------------
    def start_snapshots(self) -> None:
        try:
            self.base = self.last = snapshot.take(self.sandbox, "base")
        except Exception as exc:
            self._snapshots_ok = False
            self.console.print(f"[yellow]no snapshots: {escape(str(exc))}; /undo and --resume of files are off[/]")

    def _snapshot(self, step: Step) -> None:
        if not self._snapshots_ok:
            return
        try:
            now = snapshot.take(self.sandbox, f"turn-{step.index}", parent=self.last)
        except Exception as exc:
            self.console.print(f"[yellow]snapshot of turn {step.index} failed: {escape(str(exc))}[/]")
            return
        if self.last is not None and now != self.last:
            tool = "typed bash" if step.human and step.human.get("typed") else step.action["tool"]
            self.undo.append({"turn": step.index, "tool": tool, "before": self.last})
            self.last = now
            self._write_workspace()

    def _write_workspace(self) -> None:
        if self.last is None:
            return
        try:
            diff = snapshot.diff(self.sandbox, self.last)
        except Exception as exc:
            self.console.print(f"[yellow]cannot save the sandbox's files: {escape(str(exc))}[/]")
            return
        _atomic_write(self.out / WORKSPACE_FILE, diff.encode("utf-8", "surrogateescape"))

    def save(self, *, patch: bool = False) -> list[Path]:
        """chat.json now (and patch.diff with ``patch``): enough to resume after a crash."""
        if self.agent is None or self.agent.transcript is None or self._mid_step:
            return []
        data = {"version": STATE_VERSION, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "repo": str(self.req.repo), "label": self.req.label, "issue": self.issue,
                "base_commit": self.sandbox.base_commit if self.sandbox else None,
                "flags": self.req.flags, "mode": self.mode, "allowed": self.allowed,
                "display_ms": [round(ms, 3) for ms in self.display_ms], "agent": self.agent.state()}
        path = self.out / STATE_FILE
        _atomic_write(path, json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        written = [path]
        if self.agent.trajectory:
            self.agent.trajectory.save()
            written.append(self.agent.trajectory.path)
        if patch:
            diff = self._diff()
            if diff is not None:
                _atomic_write(self.out / "patch.diff", diff.encode("utf-8", "surrogateescape"))
                written.append(self.out / "patch.diff")
        return written

    # -- the session ---------------------------------------------------------------------------
    def run(self) -> int:
        model = episode.connect_model(self.req.settings)
        previous = self.req.resume
        status = self.console.status("starting the sandbox…")
        status.start()
        try:
            with episode.open_episode(model, self.req.settings, repo=self.req.repo, run_id=uuid.uuid4().hex[:12],
                                      trajectory_path=self.out / "trajectory.json",
                                      task={"label": self.req.label, "repo": str(self.req.repo), "issue": self.issue,
                                            "chat": True},
                                      events=self, human=self) as ep:
                status.stop()
                self.agent, self.sandbox = ep.agent, ep.sandbox
                self.console.print(f"[dim]sandbox ready · run folder {self.out} · mode {self.mode} · /help for help[/]")
                try:
                    if previous:
                        self._resume(previous)
                    else:
                        self.start_snapshots()
                    code = self._converse(resumed=previous is not None)
                except Leave as leave:
                    code = leave.code
                finally:
                    self.agent.busy = None
                    self.save()
                    self.console.print("[dim]removing the sandbox…[/]")
        finally:
            status.stop()
        self._goodbye()
        return code

    def _resume(self, previous: dict[str, Any]) -> None:
        trajectory_path = self.out / "trajectory.json"
        old = load_trajectory(trajectory_path) if trajectory_path.is_file() else {}
        if old:
            self.agent.trajectory.carry_over(old)
        if previous.get("base_commit") and previous["base_commit"] != self.sandbox.base_commit:
            self.console.print(f"[yellow]{self.req.repo} changed since the session started "
                               f"(base {previous['base_commit'][:12]}, now {self.sandbox.base_commit[:12]}); "
                               "its files are restored over the current state[/]")
        workspace = self.out / WORKSPACE_FILE
        if workspace.is_file() and workspace.stat().st_size:
            patch = workspace.read_bytes().decode("utf-8", "surrogateescape")
            try:
                snapshot.apply(self.sandbox, patch)
            except Exception as exc:
                self.console.print(f"[red]cannot restore the session's files from {workspace}: {escape(str(exc))}[/]\n"
                                   f"The repository may have changed under them; check out the commit the session "
                                   f"started from ({previous.get('base_commit')}) and resume again.")
                raise Leave(EXIT_INFRA) from None
        self.start_snapshots()
        self.agent.restore(previous["agent"])
        self.agent.tell(protocol.HUMAN["resumed"])
        self.allowed = list(previous.get("allowed", []))
        self.display_ms = list(previous.get("display_ms", []))
        self.console.print(f"[green]resumed at turn {self.agent.turn}[/]: the files as of the last step, "
                           "a fresh shell (CWM is told so)")
        self.save()

    def _converse(self, *, resumed: bool) -> int:
        agent = self.agent
        if resumed and agent.summary is not None:  # it had ended: the person speaks first
            result = None
        elif resumed:
            result = agent.proceed()
        else:
            while not self.issue:
                self.issue = self._ask(f"{_bold('What should CWM do?')} ").strip()
                if self.issue.startswith("/"):
                    self.command(self.issue)
                    self.issue = None
            agent.trajectory.header["task"]["issue"] = self.issue
            result = agent.run(self.issue)
        while True:
            if result is not None:
                self._show_end(result)
                if result.exit is Exit.INTERRUPTED:
                    return EXIT_INTERRUPTED if self.leaving is None else self.leaving
            line = self._ask(f"{_bold('you >')} ")
            if line.startswith("/"):
                self.command(line)
                result = None
                continue
            if not line.strip():
                continue
            if result is not None and result.exit in (Exit.TURN_LIMIT, Exit.CONTEXT_LIMIT):
                self.console.print("[yellow]the episode has no turns or context left; /diff, /apply, /save or /quit[/]")
                result = None
                continue
            result = agent.follow_up(line.strip())

    def _show_end(self, result: EpisodeResult) -> None:
        self._stop_status()
        if result.exit is Exit.SUBMITTED:
            body = Text(result.summary or "(no summary)")
            self.console.print(Panel(body, title="CWM submitted and summarised", border_style="green"))
            self.console.print("[dim]type a follow-up, /diff to see the changes, /apply to take them, /quit to leave[/]")
        elif result.exit is not Exit.INTERRUPTED:
            self.console.print(f"[yellow]the episode ended: {result.exit.value}[/] {escape(result.detail)}")
            self.console.print("[dim]type a message to go on, or /diff, /apply, /save, /quit[/]")

    def _goodbye(self) -> None:
        if self.agent is None or self.agent.transcript is None:
            return
        self.console.print(f"session saved in {self.out}")
        self.console.print(f"resume with: cwm-agent chat --resume {shlex.quote(str(self.out))}", highlight=False)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_chat(req: ChatRequest, *, console: Console) -> int:
    chat = Chat(req, console)
    previous = signal.signal(signal.SIGINT, chat.on_sigint)
    try:
        return chat.run()
    except Leave as leave:  # left while the sandbox started
        return leave.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
