"""The page of an eval: report.html beside report.json, one file that opens anywhere.

What it shows: the resolved rate with its 95% interval; one table row per attempt of
results.jsonl (sortable, filterable, each linked to its trajectory.html); charts drawn here as
inline SVG (exits, turns and tokens, where the time went, imagination accuracy by command kind);
and for test-time scaling runs pass@1, pass@k, best@k, majority@k and first, with each task's
candidates, winner and why.

DOM contract (what tests and people's scripts may rely on): ``#resolved-rate`` ("50.0%"),
``#resolved-count`` ("5/10"), ``#resolved-ci``, ``table#attempts`` with one
``tr.attempt[data-instance][data-attempt]`` per attempt (``.winner`` on a selected one),
``input#filter``, ``figure.chart`` with ids ``chart-exits``, ``chart-turns``, ``chart-tokens``,
``chart-time``, ``chart-imagination``, ``chart-scaling`` (each only when it has data),
``table#selection`` with ``tr.choice[data-instance]``, and ``#config``.

Kept out: the machine's paths (the eval folder, the task set's and the configuration file's
folders become …, the home folder ~, unless ``absolute_paths``) and secrets (any configuration key
named like *key*, *token* or *secret* holding a string is masked).

Light at 500 attempts: one table row per attempt, charts drawn over totals (never one per row).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cwm_agent.report.page import document, esc, scrub_paths

SECRET = re.compile(r"key|token|secret|password", re.IGNORECASE)
TIME_PARTS = (("model", "model"), ("commands", "command"), ("grading", "grade"))
SCALING_MEASURES = ("pass@1", "pass@k", "best@k", "majority@k", "first")
COLUMNS = (("task", "text"), ("attempt", "num"), ("exit", "text"), ("resolved", "num"), ("turns", "num"),
           ("tokens", "num"), ("time", "num"), ("trajectory", ""))
RIGHT = ("attempt", "turns", "tokens", "time")  # right-aligned columns
HISTOGRAM_BINS = 16

CSS = """
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; }
.card b { display: block; font-size: 22px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
figure.chart { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figure.chart figcaption { color: var(--muted); font-weight: 600; margin-bottom: 4px; }
svg { display: block; width: 100%; height: auto; }
svg text { fill: var(--fg); font: 11px sans-serif; } svg .muted { fill: var(--muted); }
svg .bar { fill: var(--accent); } svg .good { fill: var(--good); } svg .bad { fill: var(--bad); }
svg .warn { fill: var(--warn); } svg .other { fill: var(--muted); } svg .whisker { stroke: var(--fg); }
.legend span { margin-right: 12px; } .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
#attempts th[data-type] { cursor: pointer; user-select: none; white-space: nowrap; }
#attempts th[data-dir="asc"]::after { content: " ▲"; } #attempts th[data-dir="desc"]::after { content: " ▼"; }
#attempts .n { text-align: right; font-variant-numeric: tabular-nums; }
tr.winner td:nth-child(2)::after { content: " ★"; color: var(--warn); }
#filter { padding: 4px 8px; width: 320px; max-width: 100%; border: 1px solid var(--line); border-radius: 6px;
          background: var(--bg); color: var(--fg); }
.cand { display: inline-block; min-width: 18px; padding: 0 3px; margin: 1px; border-radius: 3px; text-align: center;
        font-size: 11px; color: #fff; background: var(--muted); }
.cand.good { background: var(--good); } .cand.bad { background: var(--bad); } .cand.win { outline: 2px solid var(--warn); }
"""

JS = """
(() => {
  const table = document.getElementById('attempts');
  if (!table) return;
  const body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.dataset.type && th.addEventListener('click', () => {
    const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc', num = th.dataset.type === 'num';
    heads.forEach(h => h.removeAttribute('data-dir'));
    th.dataset.dir = dir;
    const key = row => { const td = row.cells[col]; return num ? parseFloat(td.dataset.v) : td.textContent; };
    const rows = [...body.rows].map(row => [key(row), row]);
    rows.sort((a, b) => (num ? a[0] - b[0] : a[0].localeCompare(b[0], undefined, {numeric: true}))
                        * (dir === 'asc' ? 1 : -1));
    body.append(...rows.map(r => r[1]));
  }));
  const filter = document.getElementById('filter'), shown = document.getElementById('shown');
  const texts = new Map([...body.rows].map(row => [row, row.textContent.toLowerCase()]));
  filter.addEventListener('input', () => {
    const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let n = 0;
    for (const [row, text] of texts) { row.hidden = !words.every(w => text.includes(w)); n += !row.hidden; }
    shown.textContent = n;
  });
})();
"""


# --- writing ------------------------------------------------------------------------------------

def write_html(eval_dir: Path, report: dict[str, Any] | None = None, out: Path | None = None, *,
               absolute_paths: bool = False) -> Path:
    """The eval's page, by default eval_dir/report.html beside report.json (``report`` None: read
    from there). Returns where it was written."""
    eval_dir = Path(eval_dir)
    if report is None:
        report = json.loads((eval_dir / "report.json").read_text(encoding="utf-8"))
    out = Path(out) if out is not None else eval_dir / "report.html"
    links = os.path.relpath(eval_dir.resolve(), out.resolve().parent)
    page = render(eval_dir, report, absolute_paths=absolute_paths, links_from="" if links == "." else links + "/")
    out.write_text(page, encoding="utf-8")
    return out


def write_pages(eval_dir: Path, report: dict[str, Any] | None = None) -> tuple[Path, list[str]]:
    """What `cwm-agent eval` writes at the end: report.html, then each attempt's trajectory.html
    that is missing or older than its trajectory.json (when the trajectory page exists,
    cwm_agent.report.trajectory). Returns the report page and, one line each, the trajectory
    pages that could not be written; only a failure of the report page itself raises."""
    page = write_html(eval_dir, report)
    try:
        from cwm_agent.report.trajectory import write_html as trajectory_page
    except ModuleNotFoundError as exc:
        if exc.name == "cwm_agent.report.trajectory":
            return page, []  # no trajectory page in this version
        raise
    problems: list[str] = []
    for source in sorted(Path(eval_dir).glob("instances/*/attempt-*/trajectory.json")):
        target = source.with_name("trajectory.html")
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        try:
            trajectory_page(source)
        except Exception as exc:  # one broken trajectory never stops the others
            problems.append(f"{source.parent.relative_to(eval_dir)}: {type(exc).__name__}: {exc}")
    return page, problems


# --- the page -----------------------------------------------------------------------------------

def render(eval_dir: Path, report: dict[str, Any], *, absolute_paths: bool = False, links_from: str = "") -> str:
    """The page as one string. ``links_from``: the eval folder as seen from where the page will
    lie ("" when beside report.json), for the links to the trajectories."""
    eval_dir = Path(eval_dir)
    rows = attempt_rows(eval_dir, report)
    scaling = report.get("test_time_scaling") or {}
    winners = {t["instance_id"]: t.get("winner") for t in scaling.get("per_task") or []}
    config = report.get("config") or {}
    name = (config.get("eval") or {}).get("name") or eval_dir.resolve().name
    charts = [_exits_chart(rows), _histogram_chart("chart-turns", "turns", [r["turns"] for r in _scored(rows)]),
              _histogram_chart("chart-tokens", "tokens", [r["tokens"] for r in _scored(rows)]),
              _time_chart(rows), _imagination_chart(rows, report)]
    body = "".join([
        f"<h1>eval {esc(name)}</h1>",
        _summary(report),
        '<div class="charts">' + "".join(c for c in charts if c) + "</div>",
        _scaling_section(scaling, rows) if scaling else "",
        _attempts_table(rows, winners, links_from),
        _notes(report),
        _config_block(config),
    ])
    if not absolute_paths:
        body = scrub_paths(body, _private_paths(eval_dir, config))
    return document(f"eval {name}", body, css=CSS, js=JS)


def attempt_rows(eval_dir: Path, report: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per attempt (results.jsonl's fields), by task then attempt; without results.jsonl,
    the report's own "instances" (no timings, no imagination)."""
    from cwm_agent.bench.runner import load_results

    rows = [asdict(r) for r in load_results(Path(eval_dir) / "results.jsonl").values()]
    if not rows:
        rows = [dict(r, infrastructure=False, timings={}, imagination=None) for r in report.get("instances") or []]
    return sorted(rows, key=lambda r: (r["instance_id"], r["attempt"]))


def _scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("infrastructure")]


def _private_paths(eval_dir: Path, config: dict[str, Any]) -> list[str | Path]:
    """The folders of this machine a page could name (the home folder aside): the eval folder,
    the task set's folder and the configuration file's."""
    recorded = config.get("eval") or {}
    paths = [eval_dir.absolute(), eval_dir.resolve()]
    for value in (recorded.get("tasks_path"), config.get("file")):
        if value and os.path.isabs(value):
            paths += [Path(value).parent, Path(value).resolve().parent]
    return [p for p in paths if len(p.parts) > 2]  # never a bare /tmp or /home: that would hide too much


def mask_secrets(value: Any) -> Any:
    """``value`` with every string under a key named like *key*, *token*, *secret* or *password*
    replaced by ***."""
    if isinstance(value, dict):
        return {k: "***" if isinstance(v, str) and v and SECRET.search(str(k)) else mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


# --- sections -----------------------------------------------------------------------------------

def _pct(rate: float) -> str:
    return f"{rate:.1%}"


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _summary(report: dict[str, Any]) -> str:
    low, high = report.get("resolved_rate_ci95") or [0.0, 0.0]
    resolved, scored = report.get("resolved", 0), report.get("scored", 0)
    cards = [
        ("resolved", f'<span id="resolved-rate">{_pct(report.get("resolved_rate", 0.0))}</span>',
         f'<span id="resolved-count">{resolved}/{scored}</span> · '
         f'<span id="resolved-ci">95% interval {_pct(low)}–{_pct(high)}</span>'),
        ("attempts", str(report.get("attempts", 0)),
         f'{report.get("infrastructure_errors", 0)} infrastructure errors (not counted)'),
        ("unfinished", str(report.get("unfinished", 0)),
         f'{report.get("unfinished_with_patch", 0)} of them with a patch'),
    ]
    for key, label in (("turns", "turns"), ("tokens", "tokens"), ("seconds", "time")):
        spread = report.get(key) or {}
        if spread:
            show = _seconds if key == "seconds" else (lambda v: f"{v:,.0f}")
            cards.append((f"{label} (mean)", show(spread["mean"]), f"median {show(spread['median'])}"))
    html = "".join(f'<div class="card"><span class="muted">{esc(title)}</span><b>{value}</b>'
                   f'<span class="muted">{note}</span></div>' for title, value, note in cards)
    return (f'<div class="cards" id="summary">{html}</div>'
            f'<p class="muted" id="scoring-rule">{esc(report.get("scoring_rule", ""))}</p>')


def _attempts_table(rows: list[dict[str, Any]], winners: dict[str, int | None], links_from: str) -> str:
    head = "".join(f'<th data-type="{kind}" class="{"n" if name in RIGHT else ""}">{name}</th>' if kind else
                   f"<th>{name}</th>" for name, kind in COLUMNS)
    body = []
    for r in rows:
        iid, attempt = r["instance_id"], r["attempt"]
        resolved = r.get("resolved")
        verdict = ('<td data-v="1" class="good">yes</td>' if resolved else '<td data-v="0" class="bad">no</td>'
                   if resolved is False else '<td data-v="-1" class="muted">—</td>')
        exit_class = "warn" if r.get("infrastructure") else "" if r.get("exit") == "submitted" else "bad"
        link = f"{links_from}instances/{quote(iid)}/attempt-{attempt}/trajectory.html"
        classes = "attempt winner" if winners.get(iid) == attempt else "attempt"
        body.append(
            f'<tr class="{classes}" data-instance="{esc(iid)}" data-attempt="{attempt}">'
            f"<td>{esc(iid)}</td><td class=\"n\" data-v=\"{attempt}\">{attempt}</td>"
            f'<td class="{exit_class}" title="{esc(r.get("detail") or "")}">{esc(r.get("exit", ""))}</td>{verdict}'
            f'<td class="n" data-v="{r.get("turns", 0)}">{r.get("turns", 0)}</td>'
            f'<td class="n" data-v="{r.get("tokens", 0)}">{r.get("tokens", 0):,}</td>'
            f'<td class="n" data-v="{r.get("seconds", 0.0):.2f}">{_seconds(r.get("seconds", 0.0))}</td>'
            f'<td><a href="{esc(link)}">trajectory</a></td></tr>')
    return (f'<h2>attempts</h2><p><input id="filter" type="search" placeholder="filter: task, exit, yes/no…" '
            f'aria-label="filter the attempts"> <span class="muted"><span id="shown">{len(rows)}</span> of '
            f'{len(rows)} shown · click a column to sort</span></p>'
            f'<table id="attempts"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _notes(report: dict[str, Any]) -> str:
    parts = []
    if report.get("rule_mismatch"):
        parts.append(f'<p class="warn" id="rule-mismatch">scored under the other rule (re-run them with --rerun): '
                     f'{esc(", ".join(report["rule_mismatch"]))}</p>')
    warnings = report.get("warnings") or {}
    if warnings:
        items = "".join(f"<li><b>{esc(iid)}</b>: {esc('; '.join(w))}</li>" for iid, w in sorted(warnings.items()))
        parts.append(f'<details id="warnings"><summary>grading warnings ({len(warnings)} tasks)</summary>'
                     f"<ul>{items}</ul></details>")
    return "".join(parts)


def _config_block(config: dict[str, Any]) -> str:
    if not config:
        return ""
    text = json.dumps(mask_secrets(config), indent=2, ensure_ascii=False)
    return f'<details id="config"><summary>configuration</summary><pre>{esc(text)}</pre></details>'


def _scaling_section(scaling: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """pass@1 … first as bars with their intervals, what each stage cost, and per task the
    candidates (resolved or not, the winner ringed), the winner and why."""
    bars = [(name, (scaling.get(name) or {}).get("rate", 0.0), (scaling.get(name) or {}).get("ci95"),
             f'{(scaling.get(name) or {}).get("resolved", 0)}/{(scaling.get(name) or {}).get("of", 0)}')
            for name in SCALING_MEASURES]
    chart = _figure("chart-scaling", f"test-time scaling: select {scaling.get('method')} · k = {scaling.get('k')} "
                                     f"patches, {scaling.get('test_attempts')} generated tests per task",
                    _rate_bars(bars))
    cost = scaling.get("cost") or {}
    spent = (f'<p class="muted" id="scaling-cost">cost: candidates {_seconds(cost.get("candidates", {}).get("seconds", 0))}'
             f' ({cost.get("candidates", {}).get("tokens", 0):,} tokens) · test generation '
             f'{_seconds(cost.get("test_generation", {}).get("seconds", 0))} '
             f'({cost.get("test_generation", {}).get("tests_submitted", 0)} tests submitted) · selection '
             f'{_seconds(cost.get("selection", {}).get("container_seconds", 0))} of containers</p>')
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["instance_id"], []).append(r)
    lines = []
    for task in scaling.get("per_task") or []:
        iid, winner = task.get("instance_id", ""), task.get("winner")
        strip = "".join(
            f'<span class="cand {"good" if r.get("resolved") else "bad" if r.get("resolved") is False else ""}'
            f'{" win" if r["attempt"] == winner else ""}" title="attempt {r["attempt"]}: {esc(r.get("exit", ""))}">'
            f'{r["attempt"]}</span>' for r in by_task.get(iid, []))
        verdict = '<td class="good">yes</td>' if task.get("resolved") else '<td class="bad">no</td>'
        lines.append(f'<tr class="choice" data-instance="{esc(iid)}"><td>{esc(iid)}</td><td>{strip}</td>'
                     f'<td>{"—" if winner is None else winner}</td>{verdict}'
                     f'<td>{"—" if task.get("majority_winner") is None else task["majority_winner"]}</td>'
                     f'<td>{task.get("kept_tests", 0)}/{task.get("tests", 0)}</td>'
                     f'<td>{esc(task.get("reason") or "")}</td></tr>')
    table = ('<table id="selection"><thead><tr><th>task</th><th>candidates</th><th>winner</th><th>resolved</th>'
             '<th>majority</th><th>kept tests</th><th>why</th></tr></thead>'
             f'<tbody>{"".join(lines)}</tbody></table>')
    return (f'<h2>test-time scaling</h2><div class="charts">{chart}</div>{spent}<details id="per-task"'
            f'{" open" if len(lines) <= 50 else ""}><summary>per task: the candidates (green resolved, red not, the '
            f'winner ringed), the winner and why</summary>{table}</details>')


# --- charts (inline SVG) ----------------------------------------------------------------------------

def _figure(chart_id: str, caption: str, svg: str, legend: str = "") -> str:
    return f'<figure class="chart" id="{chart_id}"><figcaption>{esc(caption)}</figcaption>{svg}{legend}</figure>'


def _svg(width: int, height: int, inner: str, label: str) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{inner}</svg>')


def _hbars(items: list[tuple[str, float, str, str]], width: int = 360) -> str:
    """Horizontal bars: (label, value, css class, text after the bar)."""
    top = max((v for _, v, _, _ in items), default=0) or 1
    label_w, row_h, bar_w = 120, 20, width - 120 - 60
    parts = []
    for i, (label, value, css, note) in enumerate(items):
        y, w = i * row_h, max(0.0, value / top * bar_w)
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(label[:20])}</text>'
                     f'<rect class="{css}" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}">'
                     f"<title>{esc(label)}: {esc(note)}</title></rect>"
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{esc(note)}</text>')
    return _svg(width, max(row_h, len(items) * row_h), "".join(parts), "bar chart")


def _exits_chart(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    counts = Counter(r.get("exit", "") for r in rows)
    infrastructure = {r.get("exit") for r in rows if r.get("infrastructure")}
    items = [(name, float(n), "good" if name == "submitted" else "warn" if name in infrastructure else "bad", str(n))
             for name, n in counts.most_common()]
    return _figure("chart-exits", f"how the {len(rows)} attempts ended", _hbars(items))


def _histogram_chart(chart_id: str, what: str, values: list[float], width: int = 360, height: int = 150) -> str:
    """Attempts per bin of ``values`` (whole-number bins: every bin the same number of values)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    step = max(1, -(-(int(high) - int(low) + 1) // HISTOGRAM_BINS))
    edges = list(range(int(low), int(high) + 1, step))
    counts = Counter((int(v) - int(low)) // step for v in values)
    top = max(counts.values())
    plot_h, bar_w = height - 30, (width - 20) / len(edges)
    parts = []
    for i, start in enumerate(edges):
        n = counts.get(i, 0)
        h = n / top * (plot_h - 14)
        span = f"{start:,}" if step == 1 else f"{start:,}–{start + step - 1:,}"
        parts.append(f'<rect class="bar" x="{10 + i * bar_w + 1:.1f}" y="{plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                     f'height="{h:.1f}"><title>{span} {what}: {n} attempts</title></rect>')
        if n:
            parts.append(f'<text x="{10 + (i + .5) * bar_w:.1f}" y="{plot_h - h - 3:.1f}" text-anchor="middle" '
                         f'class="muted">{n}</text>')
    parts.append(f'<text x="10" y="{height - 8}">{int(low):,}</text>'
                 f'<text x="{width - 10}" y="{height - 8}" text-anchor="end">{int(high):,}</text>')
    caption = f"{what} per attempt (scored attempts; {len(values)} of them)"
    return _figure(chart_id, caption, _svg(width, height, "".join(parts), caption))


def _time_chart(rows: list[dict[str, Any]], width: int = 360) -> str:
    """Where the time went, over every attempt: the model, commands, grading, everything else
    (the sandbox's start, the checkout, the agent's own work)."""
    total = sum(r.get("seconds", 0.0) for r in rows)
    timed = [r.get("timings") or {} for r in rows]
    if not total or not any(timed):
        return ""
    parts = [(name, sum(t.get(key, 0.0) for t in timed)) for name, key in TIME_PARTS]
    parts.append(("everything else", max(0.0, total - sum(v for _, v in parts))))
    classes = {"model": "bar", "commands": "good", "grading": "warn", "everything else": "other"}
    x, rects, legend = 0.0, [], []
    for name, value in parts:
        w = value / total * width
        rects.append(f'<rect class="{classes[name]}" x="{x:.1f}" y="0" width="{w:.1f}" height="24">'
                     f"<title>{name}: {_seconds(value)} ({value / total:.0%})</title></rect>")
        legend.append(f'<span><svg class="swatch" viewBox="0 0 10 10" width="10" height="10">'
                      f'<rect class="{classes[name]}" width="10" height="10"/></svg>{name} {_seconds(value)} '
                      f"({value / total:.0%})</span>")
        x += w
    caption = f"where the time went ({_seconds(total)} over {len(rows)} attempts)"
    return _figure("chart-time", caption, _svg(width, 24, "".join(rects), caption),
                   f'<div class="legend">{"".join(legend)}</div>')


def _imagination_chart(rows: list[dict[str, Any]], report: dict[str, Any], width: int = 360) -> str:
    """Imagination accuracy by command kind (world/imagine.py's scores), over every attempt."""
    from cwm_agent.world.imagine import KINDS, SCORE_KEYS, merge

    summaries = [r["imagination"] for r in rows if r.get("imagination")]
    if not summaries:
        return ""
    kinds = [k for k in KINDS if any(k in (s.get("by_kind") or {}) for s in summaries)]
    merged = {k: merge([s["by_kind"][k] for s in summaries if k in (s.get("by_kind") or {})]) for k in kinds}
    merged["all"] = (report.get("imagination") or {}).get("overall") or merge(summaries)
    classes = dict(zip(SCORE_KEYS, ("good", "bar", "warn", "other")))
    label_w, bar_h = 110, 6
    group_h = bar_h * len(SCORE_KEYS) + 10
    parts = []
    for i, (kind, scores) in enumerate(merged.items()):
        y = i * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y + group_h / 2 + 3:.0f}" text-anchor="end">{esc(kind)}</text>'
                     f'<text x="{label_w - 6}" y="{y + group_h / 2 + 14:.0f}" text-anchor="end" class="muted">'
                     f'{scores.get("scored", 0)} turns</text>')
        for j, key in enumerate(SCORE_KEYS):
            value = scores.get(key)
            w = (value or 0.0) * (width - label_w - 40)
            shown = "n/a" if value is None else f"{value:.0%}"
            parts.append(f'<rect class="{classes[key]}" x="{label_w}" y="{y + 4 + j * bar_h}" width="{w:.1f}" '
                         f'height="{bar_h - 1}"><title>{esc(kind)} · {key}: {shown}</title></rect>')
    legend = "".join(f'<span><svg class="swatch" viewBox="0 0 10 10" width="10" height="10"><rect class="{classes[k]}" '
                     f'width="10" height="10"/></svg>{k}</span>' for k in SCORE_KEYS)
    mode = (report.get("imagination") or {}).get("mode") or summaries[0].get("mode")
    caption = f"imagination accuracy by command kind (--imagine {mode})"
    return _figure("chart-imagination", caption,
                   _svg(width, group_h * len(merged), "".join(parts), caption), f'<div class="legend">{legend}</div>')


def _rate_bars(items: list[tuple[str, float, list[float] | None, str]], width: int = 360) -> str:
    """Rates 0..1 as horizontal bars, each with its 95% interval as a whisker."""
    label_w, row_h = 80, 22
    bar_w = width - label_w - 110
    parts = []
    for i, (name, rate, ci, note) in enumerate(items):
        y = i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(name)}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{rate * bar_w:.1f}" height="{row_h - 8}">'
                     f"<title>{esc(name)}: {_pct(rate)} ({esc(note)})</title></rect>")
        if ci:
            x1, x2, mid = label_w + ci[0] * bar_w, label_w + ci[1] * bar_w, y + row_h / 2
            parts.append(f'<path class="whisker" d="M{x1:.1f} {mid}H{x2:.1f}M{x1:.1f} {mid - 4}v8M{x2:.1f} {mid - 4}v8"/>')
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 15}">{_pct(rate)} · {esc(note)}</text>')
    return _svg(width, len(items) * row_h, "".join(parts), "rates with their 95% intervals")
