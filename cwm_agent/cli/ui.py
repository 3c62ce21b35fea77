"""The live terminal view of an episode (rich). The agent knows nothing of it: it calls Events."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.status import Status
from rich.syntax import Syntax
from rich.text import Text

from cwm_agent import protocol
from cwm_agent.agent import EpisodeResult, Events
from cwm_agent.trajectory import Step

OBSERVATION_LINES = 8
LEXERS = {"bash": "bash", "edit": "diff", "create": "python", "submit": "text"}


def reasoning_of(completion: str) -> str:
    head, sep, _ = completion.partition(protocol.THINK_END)
    return head.strip() if sep else ""


def one_line(text: str, width: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def trimmed(text: str, lines: int = OBSERVATION_LINES) -> str:
    rows = text.splitlines()
    if len(rows) <= lines:
        return text.rstrip("\n")
    return "\n".join(rows[:lines]) + f"\n… {len(rows) - lines} more lines"


def action_view(tool: str, body: str) -> Syntax:
    lexer = LEXERS.get(tool, "text")
    if tool == "create":
        path = body.partition("\n")[0]
        lexer = Syntax.guess_lexer(path, body) if "." in path else "text"
    return Syntax(body, lexer, theme="ansi_dark", word_wrap=True, background_color="default")


class LiveView(Events):
    def __init__(self, console: Console, *, verbose: bool = False, max_turns: int = protocol.MAX_TURNS):
        self.console, self.verbose, self.max_turns = console, verbose, max_turns
        self.observation_lines = 10_000 if verbose else OBSERVATION_LINES
        self._status: Status | None = None
        self._chars = 0
        self._turn = 0

    def on_turn_start(self, turn: int, remaining_tokens: int) -> None:
        self._turn, self._chars = turn, 0
        self.console.rule(f"turn {turn}/{self.max_turns} · {remaining_tokens:,} tokens left", style="dim")
        self._status = self.console.status("model thinking…")
        self._status.start()

    def on_text(self, delta: str) -> None:
        self._chars += len(delta)
        if self._status:
            self._status.update(f"model writing… {self._chars:,} chars")

    def _stop_status(self) -> None:
        if self._status:
            self._status.stop()
            self._status = None

    def on_action(self, step: Step) -> None:
        self._stop_status()
        self._reasoning(step)
        tool, body = step.action["tool"], step.action["body"]
        self.console.print(Panel(action_view(tool, body), title=f"[bold cyan]{tool}[/]", title_align="left",
                                 border_style="cyan", expand=True))

    def _reasoning(self, step: Step) -> None:
        thought = reasoning_of(step.completion)
        if not thought:
            return
        if self.verbose:
            self.console.print(Panel(Text(thought), title="reasoning", title_align="left", border_style="dim"))
        else:
            self.console.print(Text("💭 " + one_line(thought), style="dim italic"))

    def on_step(self, step: Step) -> None:
        self._stop_status()
        if step.action is None:
            self._reasoning(step)
            if step.cut_off or step.format_error:  # else it was the final summary: shown at the end
                label = "cut off" if step.cut_off else "format error"
                self.console.print(Text(f"{label}: {step.format_error or ''}", style="yellow"))
        elif step.imagined and step.imagined.get("mode"):  # predicted next to actual (or dreamt)
            self.console.print(imagination_view(step, self.observation_lines))
        elif step.observation is not None:
            style = "green" if step.command_status in (None, "ok") else "red"
            self.console.print(Text(trimmed(step.observation, self.observation_lines) or "(no output)", style="dim" if style == "green" else style))
        t = step.timings
        self.console.print(Text(f"model {t.get('model', 0):.1f}s · sandbox {t.get('command', 0):.2f}s", style="dim"))

    def on_end(self, result: EpisodeResult) -> None:
        self._stop_status()


def final_panel(result: EpisodeResult, *, stats: list[tuple[str, int, int]], outputs: dict[str, Path],
                applies: bool | None, dream: bool = False, imagination: dict | None = None,
                counted: bool | None = None, skipped: list[str] | tuple[str, ...] = ()) -> Panel:
    counted = result.exit.finished if counted is None else counted
    good = counted and bool(result.submission) and applies
    lines = [Text.assemble(("exit: ", "bold"), (result.exit.value, "green" if good else "yellow"),
                           f"  {result.detail}" if result.detail else "")]
    if result.submission and not result.exit.finished and not result.exit.infrastructure:
        lines.append(Text(f"the episode did not finish ({result.exit.value}): the patch below is the last one submitted, "
                          + ("counted as the answer (--grade-unfinished)" if counted
                             else "kept for you to look at, not counted as a solution"), style="bold yellow"))
    if dream:
        lines.append(Text(DREAM_BANNER + (" · a patch was imagined" if result.submission else ""), style="bold magenta"))
    if imagination and imagination.get("scored"):
        lines.append(Text(imagination_line(imagination), style="magenta"))
    lines.append(Text(f"turns {result.turns} · tokens {result.tokens:,} · model {result.timings.get('model', 0):.1f}s"
                      f" · sandbox {result.timings.get('command', 0):.1f}s · wall {result.timings.get('wall', 0):.1f}s"))
    if stats:
        added = sum(a for _, a, _ in stats)
        removed = sum(r for _, _, r in stats)
        lines.append(Text(f"patch: {len(stats)} file(s), +{added} -{removed}"
                          + ("" if applies else "  (does NOT apply to the base)"), style="bold"))
        lines += [Text(f"  {path}  +{a} -{r}" + ("  (binary, no data)" if path in skipped else ""))
                  for path, a, r in stats]
    else:
        lines.append(Text("no patch submitted", style="yellow"))
    if skipped:
        words = ("binary files with no data, which no command can apply" if applies is False
                 else "skipped binary files with no data (nothing to apply)")
        lines.append(Text(f"{words}: {', '.join(skipped)}", style="yellow"))
    lines += [Text(f"{name}: {path}", style="dim") for name, path in outputs.items()]
    return Panel(Group(*lines), title="cwm-agent", border_style="green" if good else "yellow")


def render_trajectory(console: Console, data: dict, *, verbose: bool = False) -> None:
    """`cwm-agent show`: replay a saved trajectory through the same view the live run used."""
    task, model = data.get("task", {}), data.get("model", {})
    console.print(Panel(Text.assemble(
        ("task: ", "bold"), f"{task.get('label', '?')}  ", ("model: ", "bold"),
        f"{model.get('name', '?')} ({model.get('format', '?')})  ", ("created: ", "bold"), data.get("created", "?")),
        title="trajectory", border_style="blue"))
    dream = (data.get("imagination") or {}).get("mode") == "dream"
    if dream:
        console.print(Panel(Text(DREAM_BANNER, style="bold magenta"), border_style="magenta"))
    view = LiveView(console, verbose=verbose, max_turns=data.get("config", {}).get("max_turns", protocol.MAX_TURNS))
    for raw in data.get("steps", []):
        step = Step(**raw)
        console.rule(f"turn {step.index}" + (" · imagined (dream)" if dream else ""),
                     style="magenta" if dream else "dim")
        if step.action:
            view.on_action(step)
        view.on_step(step)
    console.print(Text.assemble(("exit: ", "bold"), str(data.get("exit")), f"  {data.get('detail') or ''}"))
    if data.get("summary"):
        console.print(Panel(Text(data["summary"]), title="final summary", border_style="green"))
    if data.get("patch"):
        console.print(Syntax(data["patch"], "diff", theme="ansi_dark", background_color="default"))


class EvalView:
    """Batch progress: an overall bar with ETA and one row per running attempt with its turn."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.bar = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("resolved {task.fields[resolved]}"), TimeRemainingColumn(), console=console)
        self.task_id = self.bar.add_task("eval", total=None, resolved=0)
        self._state = None
        self.live = None

    def __enter__(self) -> EvalView:
        from rich.live import Live

        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.update(self._render())
        self.live.__exit__(*exc)

    def update(self, progress) -> None:
        self._state = progress
        self.bar.update(self.task_id, total=progress.total, completed=progress.finished, resolved=progress.resolved)
        if self.live:
            self.live.update(self._render())

    def _render(self):
        from rich.table import Table

        rows = Table.grid(padding=(0, 2))
        if self._state:
            with self._state.lock:
                running = sorted(self._state.running.items())
                pulling = sorted(getattr(self._state, "pulling", {}).items())
            for image, how_far in pulling:
                rows.add_row(Text(f"pull {image}", style="magenta"), Text(how_far, style="dim"))
            for key, turn in running:
                rows.add_row(Text(key, style="cyan"), Text(f"turn {turn}" if turn else "starting", style="dim"))
        return Group(self.bar, rows)


def report_table(report: dict):
    from rich.table import Table

    low, high = report["resolved_rate_ci95"]
    table = Table(title="eval report")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("resolved", f"{report['resolved']}/{report['scored']} = {report['resolved_rate']:.1%}"
                  f"  (95% CI {low:.1%}-{high:.1%})")
    table.add_row("infrastructure errors", str(report["infrastructure_errors"]))
    if "scoring_rule" in report:
        table.add_row("rule", report["scoring_rule"])
        table.add_row("unfinished (a limit ended them)", f"{report['unfinished']} ({report['unfinished_with_patch']} "
                      f"with a submitted patch, {'graded' if report['grade_unfinished'] else 'not graded'})")
    if report.get("rule_mismatch"):
        table.add_row("[yellow]scored under the other rule[/]", ", ".join(report["rule_mismatch"])
                      + " (re-run them with --rerun)")
    for name, n in sorted(report["exits"].items()):
        table.add_row(f"exit {name}", str(n))
    for key in ("turns", "tokens", "seconds"):
        if report[key]:
            table.add_row(f"{key} per task", f"mean {report[key]['mean']:,.1f} · median {report[key]['median']:,.1f}")
    imagination = report.get("imagination") or {}
    if imagination.get("overall", {}).get("turns"):
        table.add_row("imagination (all tasks)", imagination_line(imagination["overall"]))
        for instance, summary in sorted(imagination.get("per_task", {}).items()):
            table.add_row(f"imagination {instance}", imagination_line(summary))
    for instance, warnings in report.get("warnings", {}).items():
        table.add_row(f"[yellow]warning[/] {instance}", "; ".join(warnings))
    return table


# --- imagination (--imagine) ----------------------------------------------------------------

DREAM_BANNER = "DREAM: no sandbox ran; every observation was imagined by the model"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def imagination_line(summary: dict) -> str:
    """One line of imagination accuracy: exact, line similarity, first line, error agreement, tokens."""
    if not summary.get("scored"):
        return f"{summary.get('turns', 0)} turns imagined, none compared with a real run"
    return (f"exact {_percent(summary.get('exact'))} · lines {_percent(summary.get('line_similarity'))}"
            f" · first line {_percent(summary.get('first_line'))} · error/timeout {_percent(summary.get('error_agreement'))}"
            f" over {summary['scored']} turns · +{summary.get('prompt_tokens_per_turn', 0):,.0f} prompt"
            f" / +{summary.get('completion_tokens_per_turn', 0):,.0f} completion tokens per turn")


def _score_text(scores: dict | None) -> Text:
    if not scores:
        return Text("")
    marks = [("exact", scores["exact"]), ("first line", scores["first_line"]),
             ("error/timeout", scores["error_agreement"])]
    parts: list = [(f"lines {scores['line_similarity']:.0%}  ", "magenta")]
    for name, ok in marks:
        parts.append((f"{'✓' if ok else '✗'} {name}  ", "green" if ok else "red"))
    return Text.assemble(*parts)


def imagination_view(step: Step, lines: int = OBSERVATION_LINES):
    """The imagined side of a step: predicted next to actual (log), the candidates and the choice
    (lookahead), or the dreamt observation (dream)."""
    from rich.table import Table

    imagined = step.imagined or {}
    parts: list = []
    tokens = imagined.get("tokens") or {}
    cost = Text(f"imagination: +{tokens.get('prompt', 0):,} prompt / +{tokens.get('completion', 0):,} completion "
                f"tokens in {tokens.get('requests', 0)} requests", style="dim")
    if imagined.get("mode") == "dream":
        parts.append(Panel(Text(trimmed(step.observation or "", lines) or "(no output)"),
                           title="[bold magenta]imagined observation (dream: nothing ran)[/]", title_align="left",
                           border_style="magenta"))
        return Group(*parts, cost)
    candidates = imagined.get("candidates") or []
    if candidates:
        chosen = (imagined.get("choice") or {}).get("index")
        table = Table(title=f"lookahead: {len(candidates)} candidates, choice by "
                            f"{(imagined.get('choice') or {}).get('source', '?')}", expand=True, show_lines=True)
        table.add_column("#", no_wrap=True)
        table.add_column("action", ratio=1)
        table.add_column("imagined output", ratio=1)
        for entry in candidates:
            action = entry.get("action")
            shown = one_line(action["body"], 60) if action else f"({entry.get('error', 'no action')})"
            label = f"{action['tool']}: {shown}" if action else shown
            output = entry.get("prediction")
            output = trimmed(output, 4) if output is not None else (
                f"(same as {entry['duplicate_of']})" if entry.get("duplicate_of") else "-")
            mark = "▶" if entry["index"] == chosen else ""
            table.add_row(f"{mark}{entry['index']}", label, output, style="bold" if mark else "")
        parts.append(table)
    predicted = imagined.get("prediction")
    side = Table.grid(expand=True, padding=(0, 1))
    side.add_column(ratio=1)
    side.add_column(ratio=1)
    side.add_row(
        Panel(Text(trimmed(predicted, lines) if predicted is not None else f"({imagined.get('error', 'no prediction')})"),
              title="[magenta]predicted[/]", title_align="left", border_style="magenta"),
        Panel(Text(trimmed(step.observation or "", lines) or "(no output)"),
              title="actual", title_align="left", border_style="green" if step.command_status in (None, "ok") else "red"))
    parts += [side, _score_text(imagined.get("scores")), cost]
    return Group(*parts)
