"""What every HTML report shares: the page (inline CSS and JS, a Content-Security-Policy that
forbids any network request), escaping, ANSI colours, syntax highlighting, coloured diffs, and
paths of the machine that made the report kept out of it.

A report is one file that opens anywhere, offline: a CI artifact, a file attached to a pull
request, a laptop on a plane. Nothing in it is fetched: no CDN, no font, no image by URL.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

# default-src 'none': the page may load nothing at all; its own <style> and <script> run inline.
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

BASE_CSS = """
:root { --bg: #fff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --card: #f6f8fa;
        --accent: #0969da; --good: #1a7f37; --bad: #cf222e; --warn: #9a6700;
        --add: #dafbe1; --del: #ffebe9; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --card: #151b23;
          --accent: #4493f8; --good: #3fb950; --bad: #f85149; --warn: #d29922; --add: #12261e; --del: #25171c; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 64px; }
h1 { font-size: 20px; margin: 8px 0; } h2 { font-size: 16px; margin: 24px 0 8px; }
a { color: var(--accent); }
pre, code { font-family: var(--mono); font-size: 12.5px; }
pre { margin: 0; padding: 8px 10px; background: var(--card); border: 1px solid var(--line); border-radius: 6px;
      overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
.muted { color: var(--muted); } .good { color: var(--good); } .bad { color: var(--bad); } .warn { color: var(--warn); }
/* whole-line backgrounds: inline-block, as a display:block span before "\n" in a <pre> adds a blank line */
.diff span { display: inline-block; width: 100%; }
.diff .add { background: var(--add); } .diff .del { background: var(--del); }
.diff .hunk { color: var(--accent); } .diff .file { font-weight: 700; }
"""

# ANSI SGR colours (30-37, 90-97) as CSS colours readable on both themes.
_ANSI_COLOURS = {0: "#6e7781", 1: "#cf222e", 2: "#1a7f37", 3: "#9a6700", 4: "#0969da", 5: "#8250df", 6: "#1b7c83",
                 7: "#8c959f"}
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_OTHER_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b\][^\x07]*\x07")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def ansi(text: str) -> str:
    """Terminal output as HTML: SGR colours and bold become spans, other escapes go, the rest is escaped."""
    text = _OTHER_ESCAPES.sub("", text)
    out: list[str] = []
    open_span = False
    pos = 0
    for match in _SGR.finditer(text):
        out.append(esc(text[pos:match.start()]))
        pos = match.end()
        styles = []
        for code in [int(c) for c in match.group(1).split(";") if c.isdigit()] or [0]:
            if code == 1:
                styles.append("font-weight:700")
            elif 30 <= code <= 37 or 90 <= code <= 97:
                styles.append(f"color:{_ANSI_COLOURS[code % 10]}")
        if open_span:
            out.append("</span>")
            open_span = False
        if styles:
            out.append(f'<span style="{";".join(styles)}">')
            open_span = True
    out.append(esc(text[pos:]))
    if open_span:
        out.append("</span>")
    return "".join(out)


def highlight(code: str, language: str = "bash") -> str:
    """Source as HTML with inline-styled tokens (pygments; no stylesheet to fetch)."""
    from pygments import highlight as pygmentize
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        return f"<pre>{esc(code)}</pre>"
    return pygmentize(code, lexer, HtmlFormatter(noclasses=True, nowrap=False, style="default",
                                                 cssstyles="margin:0", prestyles="white-space:pre-wrap"))


def diff(patch: str) -> str:
    """A unified diff, each line coloured by its kind."""
    lines = []
    for line in patch.splitlines():
        kind = ("file" if line.startswith(("diff --git", "+++ ", "--- ")) else "hunk" if line.startswith("@@")
                else "add" if line.startswith("+") else "del" if line.startswith("-") else "")
        lines.append(f'<span class="{kind}">{esc(line) or " "}</span>' if kind else esc(line))
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


def scrub_paths(text: str, extra: list[str | Path] = ()) -> str:
    """The machine's own paths out of a report: the home folder and ``extra`` (a run folder, a
    repository) become ~ and …, so a shared report says nothing of where it was made."""
    for path in sorted({str(p) for p in extra if str(p) not in ("", "/")}, key=len, reverse=True):
        text = text.replace(path, "…")
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        text = text.replace(home, "~")
    return text


def document(title: str, body: str, *, css: str = "", js: str = "") -> str:
    """One self-contained page."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{BASE_CSS}{css}</style></head>"
            f"<body><main>{body}</main><script>{js}</script></body></html>\n")
