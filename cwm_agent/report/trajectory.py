"""One trajectory as one HTML page (`cwm-agent show RUN --html`, and RUN/trajectory.html after every
`solve`): the task and its outcome, a timeline of tokens and seconds per turn, one card per turn
(reasoning, action, observation, budget, imagination next to what really happened), the final patch
and the summary.

The page stays light enough to open a 128-turn trajectory at once: long text is folded into
``<details>``, only actions are syntax-highlighted, and the script does nothing at load but wire
keys (j/k move between turns, / searches, Escape clears). It is self-contained (page.py) and keeps
the machine's paths and any secret out unless asked.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from cwm_agent import protocol
from cwm_agent.report.page import ansi, diff, document, esc, highlight, scrub_paths
from cwm_agent.trajectory import load

FOLD_LINES = 40  # an observation shows this many lines; the rest is in a <details>
FOLD_CHARS = 6000  # ... and at most this many characters before the fold
LAZY_TURNS = 24  # above this many turns, those off screen are rendered only when scrolled to
SECRET_NAME = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)
URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+(?=@)")
MASK = "••••••"
LEXERS = {".py": "python", ".pyi": "python", ".sh": "bash", ".bash": "bash", ".js": "javascript",
          ".mjs": "javascript", ".ts": "typescript", ".tsx": "tsx", ".jsx": "jsx", ".json": "json", ".toml": "toml",
          ".yaml": "yaml", ".yml": "yaml", ".ini": "ini", ".cfg": "ini", ".md": "markdown", ".rst": "rst",
          ".html": "html", ".css": "css", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
          ".rs": "rust", ".go": "go", ".java": "java", ".kt": "kotlin", ".rb": "ruby", ".php": "php", ".sql": "sql",
          ".diff": "diff", ".patch": "diff", ".xml": "xml"}
_BUDGET = re.compile(r"\* Remaining turns: (-?\d+)\n\* Remaining tokens: (-?\d+)")
_SGR = re.compile(r"\x1b\[[0-9;]*m")
NL = "\n"

CSS = """
header#summary { border-bottom: 1px solid var(--line); padding-bottom: 8px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 20px; margin: 6px 0; }
.facts b { color: var(--muted); font-weight: 600; }
.exit { font-weight: 700; } .exit.ok { color: var(--good); } .exit.fail { color: var(--warn); }
.split { display: flex; height: 10px; border-radius: 5px; overflow: hidden; max-width: 480px; background: var(--line); }
.split .model { background: var(--accent); } .split .command { background: var(--good); }
.split .other { background: var(--muted); }
.key::before { content: ""; display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 4px; }
.key.model::before { background: var(--accent); } .key.command::before { background: var(--good); }
.key.other::before { background: var(--muted); }
.key.tok::before { background: var(--accent); } .key.sec::before { background: var(--warn); }
details > summary { cursor: pointer; color: var(--muted); }
details > summary:hover { color: var(--fg); }
#toolbar { position: sticky; top: 0; z-index: 2; background: var(--bg); padding: 8px 0; display: flex; gap: 12px;
           align-items: center; border-bottom: 1px solid var(--line); }
#search { font: inherit; padding: 4px 8px; width: 320px; border: 1px solid var(--line); border-radius: 6px;
          background: var(--bg); color: var(--fg); }
#timeline svg { width: 100%; height: 96px; display: block; background: var(--card); border: 1px solid var(--line);
                border-radius: 6px; }
#timeline .tok { fill: var(--accent); } #timeline .sec { fill: var(--warn); } #timeline .bad { fill: var(--bad); }
#timeline a:hover rect.hit { fill: var(--line); } #timeline rect.hit { fill: transparent; }
section.turn { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; margin: 12px 0;
               scroll-margin-top: 56px; }
/* a long trajectory: turns off screen are neither laid out nor painted until scrolled to */
#turn-list.lazy section.turn { content-visibility: auto; contain-intrinsic-size: auto 400px; }
section.turn.current { outline: 2px solid var(--accent); }
section.turn.dream { border-color: #8250df; }
.turn-head { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: baseline; margin-bottom: 6px; }
.turn-head .n { font-weight: 700; color: var(--fg); text-decoration: none; }
.tool { font-family: var(--mono); font-weight: 700; color: var(--accent); }
.part { margin: 6px 0; } .label { color: var(--muted); font-size: 12px; margin: 2px 0; }
.path { font-family: var(--mono); font-size: 12.5px; font-weight: 700; }
.note { color: var(--warn); } .human { color: #8250df; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.side pre { max-height: 32em; overflow: auto; }
.only-imagined { background: var(--del); } .only-real { background: var(--add); }
.edit .del { background: var(--del); } .edit .add { background: var(--add); } .edit .mark { color: var(--muted); }
/* a whole-line background without the blank line a display:block span before "\n" makes in a <pre> */
.edit > span, .side pre > span.only-imagined, .side pre > span.only-real {
  display: inline-block; width: 100%; }
.imagined { border-left: 3px solid #8250df; padding-left: 8px; margin: 8px 0; }
::highlight(search) { background: #ffd33d; color: #1f2328; }
"""

JS = """
(() => {
  const turns = Array.from(document.querySelectorAll('section.turn'));
  const search = document.getElementById('search');
  const count = document.getElementById('search-count');
  const marks = (window.Highlight && window.CSS && CSS.highlights) ? CSS.highlights : null;
  let current = -1, texts = null, timer = 0;
  function select(i, scroll) {
    if (current >= 0) turns[current].classList.remove('current');
    current = i;
    if (i < 0) return;
    turns[i].classList.add('current');
    if (scroll) turns[i].scrollIntoView({block: 'start'});
  }
  function move(step) {
    const shown = turns.filter(t => !t.hidden);
    if (!shown.length) return;
    let at = shown.indexOf(turns[current]);
    if (at < 0) {
      at = shown.findIndex(t => t.getBoundingClientRect().top > 60);
      if (at < 0) at = shown.length - 1; else if (step < 0) at = Math.max(0, at - 1);
    } else {
      at = Math.max(0, Math.min(shown.length - 1, at + step));
    }
    select(turns.indexOf(shown[at]), true);
  }
  function highlightIn(root, q, ranges) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node && ranges.length < 1000; node = walker.nextNode()) {
      const text = node.data.toLowerCase();
      for (let at = text.indexOf(q); at >= 0 && ranges.length < 1000; at = text.indexOf(q, at + q.length)) {
        const range = new Range();
        range.setStart(node, at);
        range.setEnd(node, at + q.length);
        ranges.push(range);
      }
    }
  }
  function filter() {
    const q = search.value.trim().toLowerCase();
    if (marks) marks.delete('search');
    if (!q) {
      turns.forEach(t => { t.hidden = false; });
      count.textContent = '';
      return;
    }
    if (!texts) texts = turns.map(t => t.textContent.toLowerCase());
    const ranges = [];
    let found = 0;
    turns.forEach((t, i) => {
      const hit = texts[i].includes(q);
      t.hidden = !hit;
      if (!hit) return;
      found += 1;
      t.querySelectorAll('details').forEach(d => {
        if (!d.open && d.textContent.toLowerCase().includes(q)) d.open = true;
      });
      if (marks) highlightIn(t, q, ranges);
    });
    if (marks && ranges.length) marks.set('search', new Highlight(...ranges));
    count.textContent = found + ' of ' + turns.length + ' turns';
  }
  function clear() { search.value = ''; filter(); search.blur(); }
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(filter, 120); });
  document.addEventListener('keydown', e => {
    if (e.key === 'Escape') { if (search.value || document.activeElement === search) clear(); return; }
    const typing = e.target instanceof Element && e.target.closest('input, textarea, select, [contenteditable]');
    if (e.ctrlKey || e.metaKey || e.altKey || typing) return;
    if (e.key === 'j') move(1);
    else if (e.key === 'k') move(-1);
    else if (e.key === '/') { e.preventDefault(); search.focus(); search.select(); }
  });
  const timeline = document.getElementById('timeline');
  if (timeline) timeline.addEventListener('click', e => {
    const link = e.target.closest('a');
    if (!link) return;
    const i = turns.findIndex(t => '#' + t.id === link.getAttribute('href'));
    if (i < 0) return;
    if (turns[i].hidden) clear();
    e.preventDefault();
    select(i, true);
  });
  const start = turns.findIndex(t => '#' + t.id === location.hash);
  if (start >= 0) select(start, false);
})();
"""


# --- what the trajectory says ----------------------------------------------------------------------


def _secrets(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The configuration to show (string values named like a key, token or secret masked, and any
    user:password@ of a URL), and the secret strings themselves, to mask wherever else they appear."""
    found: list[str] = []

    def mask(name: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: mask(str(k), v) for k, v in value.items()}
        if not isinstance(value, str) or not value:
            return value
        if SECRET_NAME.search(name):
            found.append(value)
            return MASK
        for userinfo in URL_USERINFO.findall(value):
            found.append(userinfo)
        return URL_USERINFO.sub(MASK, value)

    shown = {str(k): mask(str(k), v) for k, v in config.items()}
    return shown, sorted({s for s in found if len(s) >= 8}, key=len, reverse=True)


def _reasoning_and_reply(completion: str) -> tuple[str, str]:
    head, sep, tail = completion.partition(protocol.THINK_END)
    return (head.strip(), tail.strip()) if sep else ("", completion.strip())


def _budget_after(steps: list[dict[str, Any]], i: int) -> tuple[int, int] | None:
    """The budget the model was shown after step i: in the tool message that opens the next prompt."""
    if i + 1 >= len(steps):
        return None
    found = _BUDGET.findall(steps[i + 1].get("prompt_delta") or "")
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _turn_tokens(steps: list[dict[str, Any]]) -> list[int]:
    """Tokens each turn added to the context (its prompt part and its reply)."""
    out, before = [], 0
    for step in steps:
        tokens = step.get("tokens") or {}
        used = tokens.get("context_used")
        if used is None:
            out.append((tokens.get("completion") or 0))
            continue
        out.append(max(0, used - before))
        before = used
    return out


def _seconds(timings: dict[str, Any] | None) -> float:
    return sum(float(v or 0) for k, v in (timings or {}).items() if k in ("model", "command", "overhead"))


def _first_line(text: str, width: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- pieces of the page ------------------------------------------------------------------------------


def _folded(text: str, *, lines: int = FOLD_LINES, chars: int = FOLD_CHARS) -> str:
    """Terminal output: the first lines shown, the rest in a <details> (ANSI colours carried over)."""
    head = "".join(text.splitlines(keepends=True)[:lines])[:chars]
    rest = text[len(head):]
    if not rest.strip():
        return f"<pre>{ansi(text.rstrip(NL))}</pre>"
    colours = _SGR.findall(head)  # the colour in force at the fold goes on below it
    more = rest.count(NL) + (0 if rest.endswith(NL) else 1)
    return (f"<pre>{ansi(head.rstrip(NL))}</pre><details><summary>{more:,} more lines ({len(rest):,} characters)"
            f"</summary><pre>{ansi((colours[-1] if colours else '') + rest.rstrip(NL))}</pre></details>")


def _lexer_for(path: str) -> str:
    """The pygments lexer of a created file, by its suffix (asking pygments for a lexer by file
    name compiles every lexer's patterns: most of a second)."""
    return LEXERS.get(Path(path.strip()).suffix.lower(), "text")


def _edit(body: str) -> str:
    """An edit's SEARCH/REPLACE blocks as removed and added lines."""
    path, _, rest = body.partition("\n")
    out, kind = [], ""
    for line in rest.splitlines():
        if line.startswith("<<<<<<< SEARCH"):
            kind, cls = "del", "mark"
        elif line == "=======" and kind == "del":
            kind, cls = "add", "mark"
        elif line.startswith(">>>>>>> REPLACE"):
            kind, cls = "", "mark"
        else:
            cls = kind
        out.append(f'<span class="{cls}">{esc(line) or " "}</span>' if cls else esc(line))
    return f'<div class="path">{esc(path)}</div><pre class="edit">' + "\n".join(out) + "</pre>"


def _action(action: dict[str, Any]) -> str:
    tool, body = str(action.get("tool", "?")), str(action.get("body", ""))
    if tool == "bash":
        return highlight(body, "bash")
    if tool == "edit":
        return _edit(body)
    if tool == "create":
        path, _, content = body.partition("\n")
        return f'<div class="path">{esc(path)}</div>' + highlight(content, _lexer_for(path))
    if tool == "submit":
        return f'<div class="path">submit {esc(body.strip())}</div>'
    return f"<pre>{esc(body)}</pre>"


def _line_diff(predicted: str, actual: str) -> tuple[str, str]:
    """Both outputs as HTML, the lines that differ marked on each side."""
    a, b = predicted.splitlines(), actual.splitlines()
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        same = op == "equal"
        left += [ansi(line) if same else f'<span class="only-imagined">{ansi(line) or " "}</span>' for line in a[i1:i2]]
        right += [ansi(line) if same else f'<span class="only-real">{ansi(line) or " "}</span>' for line in b[j1:j2]]
    return "\n".join(left), "\n".join(right)


def _scores(scores: dict[str, Any]) -> str:
    def mark(key: str) -> str:
        value = scores.get(key)
        return '<span class="muted">–</span>' if value is None else (
            '<span class="good">✓</span>' if value else '<span class="bad">✗</span>')

    similarity = scores.get("line_similarity")
    return (f"exact {mark('exact')} · first line {mark('first_line')} · error agreement {mark('error_agreement')}"
            + (f" ({esc(scores.get('predicted_kind'))} predicted, {esc(scores.get('actual_kind'))} real)"
               if scores.get("predicted_kind") else "")
            + (f" · line similarity <b>{float(similarity):.2f}</b>" if similarity is not None else ""))


def _imagination(step: dict[str, Any]) -> str:
    imagined = step.get("imagined") or {}
    mode = imagined.get("mode")
    if not mode:
        return ""
    tokens = imagined.get("tokens") or {}
    cost = (f'<div class="label">imagination ({esc(mode)}, {esc(imagined.get("kind") or "?")}): '
            f'+{tokens.get("prompt") or 0:,} prompt / +{tokens.get("completion") or 0:,} completion tokens in '
            f'{tokens.get("requests") or 0} requests, {float(imagined.get("seconds") or 0):.1f}s</div>')
    if mode == "dream":
        return (f'<div class="imagined">{cost}<div class="label">the observation above was imagined: nothing ran'
                "</div></div>")
    parts = [cost]
    candidates = imagined.get("candidates") or []
    if candidates:
        choice = imagined.get("choice") or {}
        rows = []
        for entry in candidates:
            act = entry.get("action")
            what = (f'<span class="tool">{esc(act.get("tool"))}</span> '
                    f'<code>{esc(_first_line(act.get("body", ""), 90))}</code>' if act
                    else f'<span class="note">{esc(entry.get("error", "no action"))}</span>')
            output = entry.get("prediction")
            shown = (f"(same as {entry['duplicate_of']})" if entry.get("duplicate_of")
                     else "–" if output is None else _first_line(output, 90))
            chosen = entry.get("index") == choice.get("index")
            rows.append(f'<tr{" class=good" if chosen else ""}><td>{"▶ " if chosen else ""}{esc(entry.get("index"))}'
                        f"</td><td>{what}</td><td><code>{esc(shown)}</code></td></tr>")
        parts.append(f"<details><summary>lookahead: {len(candidates)} candidates, chose "
                     f"{esc(choice.get('index', '?'))} by {esc(choice.get('source', '?'))}</summary>"
                     "<table><tr><th>#</th><th>action</th><th>imagined output</th></tr>"
                     + "".join(rows) + "</table></details>")
    predicted = imagined.get("prediction")
    if predicted is None:
        parts.append(f'<div class="note">no prediction: {esc(imagined.get("error", "none"))}</div>')
    else:
        left, right = _line_diff(predicted, step.get("observation") or "")
        if imagined.get("scores"):
            parts.append(f'<div class="label">{_scores(imagined["scores"])}</div>')
        parts.append(f'<div class="side"><div><div class="label">imagined</div><pre>{left or " "}</pre></div>'
                     f'<div><div class="label">real</div><pre>{right or " "}</pre></div></div>')
    return '<div class="imagined">' + "".join(parts) + "</div>"


def _human(human: dict[str, Any] | None) -> str:
    if not human:
        return ""
    if human.get("typed"):
        text = "a command the person typed"
    elif "rejected" in human:
        text = "rejected by the person" + (f": {human['rejected']}" if human["rejected"] else "")
    elif human.get("interrupted"):
        text = f"the person interrupted the {human['interrupted']}" + (
            f": {human['message']}" if human.get("message") else "")
    else:
        text = ", ".join(f"{k}: {v}" for k, v in human.items())
    if human.get("replaced_with"):
        text += f" (ran instead: {human['replaced_with']})"
    return f'<div class="human">person: {esc(text)}</div>'


def _turn(step: dict[str, Any], tokens: int, budget: tuple[int, int] | None, dream: bool) -> str:
    n = int(step.get("index") or 0)
    action = step.get("action")
    timings = step.get("timings") or {}
    used = (step.get("tokens") or {}).get("context_used")
    status = step.get("command_status")
    head = [f'<a class="n" href="#turn-{n}">turn {n}</a>']
    if action:
        head.append(f'<span class="tool">{esc(action.get("tool"))}</span>')
    elif step.get("format_error"):
        head.append('<span class="note">format error</span>')
    elif step.get("cut_off"):
        head.append('<span class="note">cut off</span>')
    else:
        head.append('<span class="muted">reply</span>')
    if status and status != "ok":
        head.append(f'<span class="bad">{esc(status)}</span>')
    elif step.get("exit_code") is not None:
        code = step["exit_code"]
        head.append(f'<span class="{"good" if code == 0 else "bad"}">exit {esc(code)}</span>')
    if step.get("submitted"):
        head.append('<span class="good">submitted</span>')
    head.append(f'<span class="muted">{tokens:,} tokens'
                + (f" · context {used:,}" if isinstance(used, int) else "") + "</span>")
    head.append(f'<span class="muted">model {float(timings.get("model") or 0):.1f}s · command '
                f'{float(timings.get("command") or 0):.2f}s · other {float(timings.get("overhead") or 0):.2f}s</span>')
    if budget:
        head.append(f'<span class="muted">budget left: {budget[0]:,} turns, {budget[1]:,} tokens</span>')
    reasoning, reply = _reasoning_and_reply(str(step.get("completion") or ""))
    body = ['<div class="turn-head">' + " ".join(head) + "</div>"]
    if reasoning:
        body.append(f'<details class="reasoning"><summary>reasoning: {esc(_first_line(reasoning))}</summary>'
                    f"<pre>{esc(reasoning)}</pre></details>")
    body.append(_human(step.get("human")))
    if action:
        body.append(f'<div class="part action">{_action(action)}</div>')
    else:
        if step.get("format_error"):
            body.append(f'<div class="note">{esc(step["format_error"])}</div>')
        if reply:
            body.append(f'<div class="part reply"><div class="label">reply</div>{_folded(reply)}</div>')
    if step.get("observation") is not None:
        label = "imagined observation (dream: nothing ran)" if dream else "observation"
        shown = _folded(step["observation"]) if step["observation"] else "<pre class=muted>(no output)</pre>"
        body.append(f'<div class="part observation"><div class="label">{label}</div>{shown}</div>')
    body.append(_imagination(step))
    return (f'<section class="turn{" dream" if dream else ""}" id="turn-{n}" data-turn="{n}">'
            + "".join(body) + "</section>")


def _timeline(steps: list[dict[str, Any]], tokens: list[int]) -> str:
    """Inline SVG: tokens per turn above the middle line, seconds below; a bar links to its turn."""
    if not steps:
        return ""
    seconds = [_seconds(s.get("timings")) for s in steps]
    top_tokens, top_seconds = max(tokens) or 1, max(seconds) or 1.0
    width, half = 10, 46
    bars = []
    for i, step in enumerate(steps):
        n, x = int(step.get("index") or i + 1), i * width
        t, s = tokens[i] / top_tokens * half, seconds[i] / top_seconds * half
        failed = step.get("format_error") or (step.get("command_status") not in (None, "ok"))
        bars.append(f'<a href="#turn-{n}"><title>turn {n}: {tokens[i]:,} tokens, {seconds[i]:.1f}s</title>'
                    f'<rect class="hit" x="{x}" y="0" width="{width}" height="100"/>'
                    f'<rect class="tok{" bad" if failed else ""}" x="{x + 1}" y="{49 - t:.1f}" width="{width - 2}" '
                    f'height="{t:.1f}"/>'
                    f'<rect class="sec" x="{x + 1}" y="51" width="{width - 2}" height="{s:.1f}"/></a>')
    return (f'<section id="timeline"><h2>Timeline</h2><div class="label"><span class="key tok">tokens per turn '
            f'(most {max(tokens):,})</span> · <span class="key sec">seconds per turn (most {max(seconds):.1f}s)</span>'
            f' · click a bar to jump to its turn</div>'
            f'<svg viewBox="0 0 {len(steps) * width} 100" preserveAspectRatio="none" role="img" '
            f'aria-label="tokens and seconds per turn">{"".join(bars)}</svg></section>')


def _time_split(timings: dict[str, Any]) -> str:
    model, command = float(timings.get("model") or 0), float(timings.get("command") or 0)
    wall = float(timings.get("wall") or 0)
    other = max(0.0, wall - model - command) if wall else float(timings.get("overhead") or 0)
    total = (model + command + other) or 1.0
    bar = "".join(f'<span class="{k}" style="width:{v / total * 100:.1f}%"></span>'
                  for k, v in (("model", model), ("command", command), ("other", other)))
    return (f'<div class="facts"><span class="key model">model {model:.1f}s</span>'
            f'<span class="key command">commands {command:.1f}s</span>'
            f'<span class="key other">everything else {other:.1f}s</span>'
            + (f"<span><b>wall</b> {wall:.1f}s</span>" if wall else "") + f'</div><div class="split">{bar}</div>')


def _header(data: dict[str, Any], config: dict[str, Any], turns: int, tokens: int) -> str:
    task, model = data.get("task") or {}, data.get("model") or {}
    exit_ = data.get("exit")
    good = exit_ == "submitted" and data.get("counted", True) is not False and data.get("patch_applies") is not False
    issue = str(task.get("issue") or "")
    facts = [f'<span><b>exit</b> <span class="exit {"ok" if good else "fail"}">{esc(exit_ or "not finished")}</span>'
             + (f" {esc(data.get('detail'))}" if data.get("detail") else "") + "</span>",
             f'<span><b>turns</b> <span id="turns">{turns:,} turns</span>'
             + (f" of {esc(config['max_turns'])}" if config.get("max_turns") else "") + "</span>",
             f"<span><b>tokens</b> {tokens:,}" + (f" of {int(config['context_window']):,}"
                                                  if isinstance(config.get("context_window"), int) else "") + "</span>",
             f"<span><b>model</b> {esc(model.get('name', '?'))} ({esc(model.get('format', '?'))})</span>"]
    if data.get("created"):
        facts.append(f"<span><b>created</b> {esc(data['created'])}</span>")
    if "patch_applies" in data:
        applies = data["patch_applies"]
        facts.append("<span><b>patch</b> " + ("unknown (imagined)" if applies is None and data.get("patch")
                                               else "applies" if applies else "does not apply" if data.get("patch")
                                               else "none") + "</span>")
    if data.get("finished") is False and data.get("counted") is False and data.get("patch"):
        facts.append('<span class="note">the episode did not finish: its last patch is not counted</span>')
    imagination = data.get("imagination") or {}
    if imagination.get("mode"):
        facts.append(f"<span><b>imagination</b> {esc(imagination['mode'])}"
                     + (f" · {esc(imagination['note'])}" if imagination.get("note") else "") + "</span>")
    rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" for k, v in config.items())
    versions = ", ".join(f"{k} {v}" for k, v in (data.get("versions") or {}).items())
    return (f'<header id="summary" data-exit="{esc(exit_ or "")}" data-turns="{turns}" data-tokens="{tokens}">'
            f"<h1>{esc(task.get('label') or 'trajectory')}</h1>"
            + (f"<details><summary>issue: {esc(_first_line(issue))}</summary><pre>{esc(issue)}</pre></details>"
               if issue else "")
            + f'<div class="facts">{"".join(facts)}</div>' + _time_split(data.get("timings") or {})
            + f"<details><summary>configuration</summary><table>{rows}</table>"
            + (f'<div class="label">versions: {esc(versions)}</div>' if versions else "") + "</details></header>")


def _outcome(data: dict[str, Any]) -> str:
    patch = data.get("patch") if data.get("patch") is not None else data.get("submission")
    parts = ['<section id="patch"><h2>Final patch</h2>']
    parts.append(diff(patch) if patch else '<p class="muted">no patch submitted</p>')
    workspace = data.get("workspace_diff")
    if workspace and workspace != patch:
        parts.append(f"<details><summary>the sandbox's working tree at the end (differs from the patch)"
                     f"</summary>{diff(workspace)}</details>")
    parts.append("</section>")
    if data.get("summary"):
        parts.append(f'<section id="final-summary"><h2>Summary</h2><pre>{esc(data["summary"])}</pre></section>')
    return "".join(parts)


# --- the page -------------------------------------------------------------------------------------


def _machine_paths(data: dict[str, Any], folder: Path | None) -> list[str]:
    """The absolute paths of the machine that made the trajectory, to keep out of the page."""
    found: list[str] = []
    if folder is not None:
        found += [str(folder), str(Path(folder).resolve())]
    for section in (data.get("task") or {}, data.get("config") or {}):
        repo = section.get("repo")
        if isinstance(repo, str) and os.path.isabs(repo) and repo.rstrip("/"):
            found += [repo.rstrip("/"), str(Path(repo).resolve())]
    return [p for p in dict.fromkeys(found) if p.rstrip("/")]


def _utf8(text: str) -> str:
    """The page as text that encodes: a non-UTF-8 byte kept as a surrogate becomes U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace").decode("utf-8")


def render(trajectory: dict[str, Any], *, absolute_paths: bool = False, folder: Path | None = None) -> str:
    """The page of one trajectory (trajectory.json loaded). ``folder`` is where it was read from:
    it, the repository in the task or config and the home folder are scrubbed from the page
    unless ``absolute_paths``. Secrets in the configuration never appear, there or anywhere else."""
    data = trajectory
    steps = list(data.get("steps") or [])
    config, secrets = _secrets(dict(data.get("config") or {}))
    tokens = _turn_tokens(steps)
    turns = int(data["turns"]) if isinstance(data.get("turns"), int) else len(steps)
    total = int(data["tokens"]) if isinstance(data.get("tokens"), int) else sum(tokens)
    dream = (data.get("imagination") or {}).get("mode") == "dream"
    toolbar = ('<nav id="toolbar"><input id="search" type="search" placeholder="search turns  ( / )" '
               'autocomplete="off" aria-label="search turns"><span id="search-count" class="muted"></span>'
               '<span class="muted">j / k: next / previous turn · Esc: clear</span></nav>')
    body = "".join([
        _header(data, config, turns, total),
        toolbar,
        _timeline(steps, tokens),
        f'<section id="turn-list"{" class=lazy" if len(steps) > LAZY_TURNS else ""}><h2>Turns</h2>',
        *(_turn(step, tokens[i], _budget_after(steps, i), dream) for i, step in enumerate(steps)),
        "</section>",
        _outcome(data),
    ])
    for secret in secrets:
        body = body.replace(esc(secret), MASK).replace(secret, MASK)
    title = f"{(data.get('task') or {}).get('label') or 'trajectory'} · cwm-agent"
    if not absolute_paths:
        paths = _machine_paths(data, folder)
        body = scrub_paths(body, [*paths, *(esc(p) for p in paths)])
        title = scrub_paths(title, paths)
    return _utf8(document(title, body, css=CSS, js=JS))


def write_html(trajectory_path: Path, out: Path | None = None, *, absolute_paths: bool = False) -> Path:
    """Write the page of a trajectory.json (or of the run folder holding one) to ``out`` (a file,
    or a folder to hold trajectory.html), by default trajectory.html next to it, atomically;
    returns the path written."""
    path = Path(trajectory_path)
    if path.is_dir():
        path = path / "trajectory.json"
    page = render(load(path), absolute_paths=absolute_paths, folder=path.parent.absolute())
    target = path.with_name("trajectory.html") if out is None else Path(out)
    if target.is_dir():
        target = target / "trajectory.html"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
