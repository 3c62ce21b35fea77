"""How `cwm-agent trace` shows a trace: the ground truth, and the model's prediction beside it."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cwm_agent.world.trace import UNCHANGED, Frame, TraceResult

VALUE_WIDTH = 60


def _short(text: str, width: int = VALUE_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def describe(event: str, locals_: dict[str, str] | None, value: str | None) -> str:
    """What a frame says, compactly: the locals it shows (unchanged ones left out), or its value."""
    if event == "return":
        return f"return {_short(value or '')}"
    if event == "exception":
        return f"raise {_short(value or '')}"
    if event == "invalid":
        return "(not a frame)"
    shown = [f"{k}={_short(v, 30)}" for k, v in (locals_ or {}).items() if v != UNCHANGED]
    return ", ".join(shown)


def _code(line: str) -> str:
    return _short(line.strip(), 48)


def truth_table(truth: TraceResult, *, limit: int | None = None) -> Table:
    table = Table(title=f"ground truth: {truth.call}", title_justify="left", expand=True)
    for name, kw in (("#", {"justify": "right"}), ("event", {}), ("line", {"justify": "right"}), ("code", {}),
                     ("locals / value", {})):
        table.add_column(name, **kw)
    for i, frame in enumerate(truth.frames[:limit]):
        table.add_row(str(i), frame.event, str(frame.lineno or ""), _code(frame.line),
                      describe(frame.event, frame.locals, frame.value))
    if limit is not None and len(truth.frames) > limit:
        table.add_row("…", "", "", f"{len(truth.frames) - limit} more frames", "")
    return table


def comparison_table(truth: TraceResult, report: dict[str, Any]) -> Table:
    """Step by step: the true frame and the predicted one, a mark where they part."""
    predicted = report["prediction"]["frames"]
    marks = report["metrics"].get("per_step", [])
    given = report["metrics"]["given_steps"]
    table = Table(title="ground truth vs model", title_justify="left", expand=True, show_lines=False)
    for name, kw in (("#", {"justify": "right"}), ("", {}), ("line", {"justify": "right"}), ("ground truth", {}),
                     ("line", {"justify": "right"}), ("model", {})):
        table.add_column(name, **kw)
    for i in range(max(len(truth.frames), len(predicted))):
        g: Frame | None = truth.frames[i] if i < len(truth.frames) else None
        p = predicted[i] if i < len(predicted) else None
        if i < given:
            mark, style = "=", "dim"
        elif i - given < len(marks):
            ok = marks[i - given]
            mark = "✓" if ok["state"] and ok["line"] else ("~" if ok["line"] else "✗")
            style = "green" if mark == "✓" else ("yellow" if mark == "~" else "red")
        else:
            mark, style = "+", "red"  # the prediction goes on past the truth
        left = f"{g.event:<9} {_code(g.line)}  {describe(g.event, g.locals, g.value)}" if g else "(ended)"
        right = (f"{p['event']:<9} {_code(p['line'])}  {describe(p['event'], p['locals'], p['value'])}"
                 if p else "(ended)")
        table.add_row(str(i), Text(mark, style=style), str(g.lineno or "") if g else "", left,
                      str(p.get("lineno") or "") if p else "", Text(right, style="" if mark in "✓=" else style))
    return table


def metrics_panel(report: dict[str, Any]) -> Panel:
    m = report["metrics"]
    lines = [
        Text(f"setting: {m['setting'].replace('_', ' ')} · {m['given_steps']} frame given (the call's arguments) · "
             f"{m['scored_steps']} steps scored · {m['predicted_steps']} predicted"),
        Text(f"state exact {m['state_exact']:.1%} ({m['state_matches']}/{m['scored_steps']}) · "
             f"line exact {m['line_exact']:.1%} ({m['line_matches']}/{m['scored_steps']})", style="bold"),
        Text("return value matches" if m["return_match"] else "return value does NOT match",
             style="green" if m["return_match"] else "red"),
        Text("first divergence: " + (m["first_divergence"]["text"] if m["first_divergence"] else "none"),
             style="green" if not m["first_divergence"] else "yellow"),
    ]
    if m.get("pred_errors"):
        lines.append(Text(f"{len(m['pred_errors'])} malformed: " + "; ".join(m["pred_errors"][:3]), style="red"))
    tokens = report["prediction"].get("tokens", {})
    seconds = report["prediction"].get("seconds", 0)
    lines.append(Text(f"model: {tokens.get('requests', 0)} requests · {tokens.get('prompt', 0):,} prompt / "
                      f"{tokens.get('completion', 0):,} completion tokens · {seconds:.1f}s", style="dim"))
    return Panel(Group(*lines), title="CWM trace metrics", border_style="blue")


def halt_text(halt: dict[str, Any]) -> Text:
    def word(value: bool | None) -> str:
        return "?" if value is None else ("halts" if value else "does not halt")

    agree = halt.get("predicted") is not None and halt["predicted"] == halt["truth"]
    text = f"within {halt['steps']} steps: ground truth {word(halt['truth'])}"
    if "predicted" in halt:
        text += f" · model {word(halt['predicted'])}" + (" ✓" if agree else " ✗")
    return Text(text, style="bold")


def render(console: Console, truth: TraceResult, report: dict[str, Any] | None, *, halt: dict | None = None,
           limit: int | None = 200) -> None:
    head = Text.assemble(("entry: ", "bold"), f"{truth.entry_function}  ", ("stop: ", "bold"), truth.stop_reason,
                         f"  ({truth.steps} frames)")
    if truth.return_value is not None:
        head.append(f"  returned {_short(truth.return_value)}")
    if truth.raised is not None:
        head.append(f"  raised {_short(truth.raised)}", style="red")
    console.print(head)
    if truth.error and truth.stop_reason != "returned":
        console.print(Text(truth.error, style="yellow"))
    if report is None:
        console.print(truth_table(truth, limit=limit))
    else:
        console.print(comparison_table(truth, report))
        console.print(metrics_panel(report))
    if halt is not None:
        console.print(halt_text(halt))
    if truth.stdout:
        console.print(Panel(Text(truth.stdout.rstrip("\n")), title="program stdout", border_style="dim"))
