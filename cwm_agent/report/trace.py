"""The page of `cwm-agent trace --html FILE`: the ground-truth trace frame by frame, and with
--predict the model's prediction beside it, where they part marked, CWM's metrics on top.

Beside the frames, the traced file with line numbers: clicking a frame marks its line. A
checkbox keeps only the frames where the model and the truth part.

DOM contract: ``table#frames`` with one ``tr.frame[data-index]`` per step (``data-line``: the
true line number), ``.diverged`` on a frame the model got wrong (its line, its state, or a frame
past either end) and on each value that differs from the truth, ``.given`` on the frame the model
was given, ``.first-divergence`` on the first wrong one; ``pre#source`` with ``span.src[data-line]``;
with --predict ``#metrics`` holding ``#state-exact``, ``#line-exact``, ``#return-match`` and
``#first-divergence``; ``#halt`` with --halt-steps.
"""

from __future__ import annotations

import re
import tokenize
from pathlib import Path
from typing import Any

from cwm_agent.report.page import document, esc, scrub_paths
from cwm_agent.world.trace import UNCHANGED, Frame, TraceResult, split_lines
from cwm_agent.world.trace_metrics import replay

VALUE_WIDTH = 160  # characters of one value shown in a cell (the whole value in its tooltip)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

CSS = """
.layout { display: grid; grid-template-columns: minmax(260px, 2fr) 5fr; gap: 16px; align-items: start; }
#source { position: sticky; top: 8px; max-height: 90vh; overflow: auto; white-space: pre; }
#source .src { display: block; } #source .src.current { background: var(--add); }
#source .no { display: inline-block; width: 3em; color: var(--muted); user-select: none; }
#frames td { font-family: var(--mono); font-size: 12px; } #frames tr.frame { cursor: pointer; }
#frames tr.given td { color: var(--muted); } #frames tr.diverged > td:first-child { border-left: 3px solid var(--bad); }
#frames tr.current td { background: var(--card); }
.var { margin-right: 10px; white-space: pre-wrap; word-break: break-all; } .var.same { color: var(--muted); }
.diverged .mark, span.diverged { color: var(--bad); font-weight: 700; }
.ev { color: var(--accent); } .cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; }
.card b { display: block; font-size: 20px; }
"""

JS = """
(() => {
  const rows = [...document.querySelectorAll('#frames tr.frame')];
  const lines = new Map([...document.querySelectorAll('#source .src')].map(s => [s.dataset.line, s]));
  let current = null;
  for (const row of rows) row.addEventListener('click', () => {
    for (const el of document.querySelectorAll('.current')) el.classList.remove('current');
    row.classList.add('current');
    const line = lines.get(row.dataset.line);
    if (line) { line.classList.add('current'); line.scrollIntoView({block: 'nearest'}); }
  });
  const only = document.getElementById('only-diverged');
  if (only) only.addEventListener('change', () => {
    for (const row of rows) row.hidden = only.checked && !row.classList.contains('diverged');
  });
})();
"""


def write_html(out: Path, truth: TraceResult, report: dict[str, Any] | None = None, *,
               halt: dict[str, Any] | None = None, absolute_paths: bool = False) -> Path:
    """The page at ``out``; ``report``: compare_with_model's (None: the ground truth alone)."""
    out = Path(out)
    out.write_text(render(truth, report, halt=halt, absolute_paths=absolute_paths), encoding="utf-8")
    return out


def render(truth: TraceResult, report: dict[str, Any] | None = None, *, halt: dict[str, Any] | None = None,
           absolute_paths: bool = False) -> str:
    """The page as one string. Paths of the machine (the traced file's folder, the home folder)
    are left out unless ``absolute_paths``."""
    path = Path(truth.path)
    title = f"trace {truth.call} · {path.name}"
    body = "".join([
        f"<h1>trace of <code>{esc(truth.call)}</code> in {esc(path if absolute_paths else path.name)}</h1>",
        _outcome(truth),
        _metrics(report) if report else "",
        _halt(halt) if halt else "",
        '<div class="layout">', _source(path), "<div>",
        '<p><label><input type="checkbox" id="only-diverged"> only the frames where the model parts from the truth'
        "</label></p>" if report else "",
        _frames(truth, report), "</div></div>",
        f'<h2>program stdout</h2><pre id="stdout">{esc(truth.stdout)}</pre>' if truth.stdout else "",
    ])
    if not absolute_paths:
        body = scrub_paths(body, [path.parent, path.resolve().parent])
    return document(title, body, css=CSS, js=JS)


def _outcome(truth: TraceResult) -> str:
    parts = [f"entry <b>{esc(truth.entry_function)}</b>", f"stop: {esc(truth.stop_reason)}",
             f"{truth.steps} frames"]
    if truth.return_value is not None:
        parts.append(f'returned <code id="return-value">{esc(truth.return_value)}</code>')
    if truth.raised is not None:
        parts.append(f'<span class="bad">raised <code>{esc(truth.raised)}</code></span>')
    error = (f'<p class="warn">{esc(truth.error)}</p>' if truth.error and truth.stop_reason != "returned" else "")
    return f'<p id="outcome">{" · ".join(parts)}</p>{error}'


def _metrics(report: dict[str, Any]) -> str:
    m = report["metrics"]
    first = m.get("first_divergence")
    tokens, seconds = report["prediction"].get("tokens", {}), report["prediction"].get("seconds", 0)
    cards = [
        ("state exact", f'<span id="state-exact">{m["state_exact"]:.1%}</span>',
         f'{m["state_matches"]}/{m["scored_steps"]} steps'),
        ("line exact", f'<span id="line-exact">{m["line_exact"]:.1%}</span>',
         f'{m["line_matches"]}/{m["scored_steps"]} steps'),
        ("return value", f'<span id="return-match" class="{"good" if m["return_match"] else "bad"}">'
                         f'{"matches" if m["return_match"] else "differs"}</span>', ""),
        ("first divergence", f'<span id="first-divergence" class="{"bad" if first else "good"}">'
                             f'{esc(first["text"]) if first else "none"}</span>', ""),
    ]
    html = "".join(f'<div class="card"><span class="muted">{title}</span><b>{value}</b>'
                   f'<span class="muted">{note}</span></div>' for title, value, note in cards)
    errors = m.get("pred_errors") or []
    return (f'<section id="metrics"><div class="cards">{html}</div>'
            f'<p class="muted">setting: {esc(m["setting"].replace("_", " "))} · {m["given_steps"]} frame given '
            f'(the call\'s arguments) · {m["scored_steps"]} steps scored · {m["predicted_steps"]} predicted · '
            f'model: {tokens.get("requests", 0)} requests, {tokens.get("prompt", 0):,} prompt / '
            f'{tokens.get("completion", 0):,} completion tokens, {seconds:.1f} s</p>'
            + (f'<p class="bad" id="pred-errors">{len(errors)} malformed: {esc("; ".join(errors[:5]))}</p>'
               if errors else "") + "</section>")


def _halt(halt: dict[str, Any]) -> str:
    def word(value: bool | None) -> str:
        return "?" if value is None else ("halts" if value else "does not halt")

    text = f"within {halt['steps']} steps: ground truth {word(halt.get('truth'))}"
    if "predicted" in halt:
        agree = halt["predicted"] is not None and halt["predicted"] == halt.get("truth")
        text += f" · model {word(halt['predicted'])} " + ("✓" if agree else "✗")
    return f'<p id="halt"><b>{esc(text)}</b></p>'


def _source(path: Path) -> str:
    try:
        with tokenize.open(path) as handle:  # honours a coding cookie
            lines = split_lines(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return '<pre id="source" class="muted">(the source could not be read)</pre>'
    spans = "".join(f'<span class="src" data-line="{n}"><span class="no">{n}</span>{esc(line.rstrip(chr(10) + chr(13)))}'
                    "</span>" for n, line in enumerate(lines, 1))
    return f'<pre id="source">{spans}</pre>'


def _norm(value: str | None) -> str | None:
    return _ADDRESS.sub(" at 0x?", value) if value is not None else None


def _value(text: str) -> str:
    shown = text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"
    return esc(shown) if shown is text else f'<span title="{esc(text)}">{esc(shown)}</span>'


def _cell(frame: dict[str, Any] | None, state: dict[str, str] | None, other: dict[str, str] | None,
          other_value: str | None, compare: bool, *, model: bool = False) -> str:
    """One side of a step: line number, event, source line, then its locals (".." greyed) or its
    value; with ``compare``, a value unlike ``other``'s (the other side's state) is marked, and on
    the ``model`` side each true local it lacks."""
    if frame is None:
        return '<td colspan="3" class="muted">(ended)</td>'
    event, value = frame["event"], frame.get("value")
    if event in ("return", "exception"):
        wrong = compare and _norm(value) != _norm(other_value)
        shown = f'<span class="var{" diverged" if wrong else ""}">{"return" if event == "return" else "raise"} ' \
                f'{_value(value or "")}</span>'
    elif event == "invalid":
        shown = '<span class="var diverged">(not a frame)</span>'
    else:
        items = []
        for name, text in (frame.get("locals") or {}).items():
            resolved = (state or {}).get(name, text)
            wrong = compare and _norm(resolved) != _norm((other or {}).get(name))
            css = "var diverged" if wrong else "var same" if text == UNCHANGED else "var"
            meant = f" ({_value(resolved)})" if wrong and text == UNCHANGED and resolved != UNCHANGED else ""
            items.append(f'<span class="{css}">{esc(name)}={_value(text)}{meant}</span>')
        if compare and model:  # what the truth has and the model lacks
            items += [f'<span class="var diverged">no {esc(name)}</span>' for name in (other or {})
                      if name not in (state or {})]
        shown = "".join(items)
    return (f'<td>{frame.get("lineno") or ""}</td><td class="ev">{esc(event)}</td>'
            f'<td><code>{esc((frame.get("line") or "").strip())}</code><br>{shown}</td>')


def _frame(frame: Frame) -> dict[str, Any]:
    return {"event": frame.event, "lineno": frame.lineno, "line": frame.line, "locals": frame.locals,
            "value": frame.value}


def _frames(truth: TraceResult, report: dict[str, Any] | None) -> str:
    truth_frames = [_frame(f) for f in truth.frames]
    truth_states, _ = replay(truth.frames)
    if report is None:
        head = "<th>#</th><th>line</th><th>event</th><th>source line · locals / value</th>"
        rows = [f'<tr class="frame" data-index="{i}" data-line="{f["lineno"] or ""}"><td>{i}</td>'
                f"{_cell(f, s, None, None, False)}</tr>" for i, (f, s) in enumerate(zip(truth_frames, truth_states))]
        return f'<table id="frames"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    predicted = report["prediction"]["frames"]
    metrics = report["metrics"]
    marks, given = metrics.get("per_step", []), metrics["given_steps"]
    first = (metrics.get("first_divergence") or {}).get("step")
    head = ("<th>#</th><th></th><th>line</th><th>event</th><th>ground truth</th>"
            "<th>line</th><th>event</th><th>model</th>")
    rows = []
    for i in range(max(len(truth_frames), len(predicted))):
        g = truth_frames[i] if i < len(truth_frames) else None
        p = predicted[i] if i < len(predicted) else None
        g_state = truth_states[i] if g else None
        p_state = p.get("state") if p else None
        if i < given:
            mark, css = "=", "frame given"
        elif i - given < len(marks) and p is not None:
            ok = marks[i - given]
            mark = "✓" if ok["state"] and ok["line"] else ("~" if ok["line"] else "✗")
            css = "frame" if mark == "✓" else "frame diverged"
        else:
            mark, css = ("+" if g is None else "−"), "frame diverged"  # past the truth's end, or the model's
        if i == first:
            css += " first-divergence"
        compare = g is not None and p is not None and i >= given
        rows.append(f'<tr class="{css}" data-index="{i}" data-line="{(g or p or {}).get("lineno") or ""}"><td>{i}</td>'
                    f'<td class="mark">{mark}</td>'
                    f'{_cell(g, g_state, p_state, (p or {}).get("value"), compare)}'
                    f'{_cell(p, p_state, g_state, (g or {}).get("value"), compare, model=True)}</tr>')
    return f'<table id="frames"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
