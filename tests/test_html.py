"""The HTML reports in a real headless Chromium (Debian's; scripts/install-chromium.sh).

Each page made from a real run (the trajectory of `cwm-agent solve`, the report of `cwm-agent
eval`, the page of `cwm-agent trace`, the model being the scripted server) opens with no console
error, no request of any kind, its key numbers in the DOM and something drawn; it keeps this
machine's paths and the API key of the configuration out. The first tests check the harness
itself (tests/_chromium.py): that it does see what these tests say is absent.

Under CI=true a missing Chromium fails these tests (tests/_ci.py); elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _chromium import Browser, chromium_binary, png_is_blank, png_stats
from _ci import unavailable
from cwm_agent import protocol
from cwm_agent.paths import TASKS_DIR
from cwm_agent.report.page import document
from cwm_agent.testing.scripted_server import ScriptedServer, think

CLI = [sys.executable, "-m", "cwm_agent.cli"]
FAKE_KEY = "sk-cwm-FAKE-key-3f9c2a7e51d04b88"  # set in the configuration; must appear nowhere
HOME = str(Path.home())

# What every page is asked after load: the numbers the tests read, and ids used twice.
PROBE = """(() => {
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const text = id => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
  return {duplicate_ids: [...new Set(ids.filter((id, i) => ids.indexOf(id) !== i))], title: document.title,
          csp: !!document.querySelector('meta[http-equiv="Content-Security-Policy"]'),
          body_height: document.documentElement.scrollHeight, text};
})()"""


@pytest.fixture(scope="module")
def browser():
    if chromium_binary() is None:
        unavailable("chromium is not installed; run scripts/install-chromium.sh")
    with Browser() as b:
        yield b


def probe(extra: str = "") -> str:
    """PROBE plus ``extra`` (a JS object literal's entries) in one result."""
    return f"(() => ({{...{PROBE}, {extra}}}))()" if extra else PROBE


def opened_cleanly(browser: Browser, page: Path, shot: Path, script: str | None = None, **options):
    """Open ``page``: no console error, no uncaught exception, no request; a non-blank screenshot."""
    result = browser.open(page, screenshot=shot, script=script or PROBE, **options)
    assert result.errors == [], f"{page.name}: console errors {result.errors}"
    assert result.requests == [], f"{page.name}: requests {result.requests}"
    stats = png_stats(shot)
    assert not png_is_blank(shot), f"{page.name}: blank screenshot {stats}"
    assert (stats["width"], stats["height"]) == browser.size
    assert result.result["csp"], f"{page.name}: no Content-Security-Policy meta"
    assert result.result["duplicate_ids"] == [], f"{page.name}: ids used twice {result.result['duplicate_ids']}"
    return result


def keeps_private(text: str, *paths: Path | str) -> None:
    assert FAKE_KEY not in text
    for path in paths:
        assert str(path) not in text, f"{path} is in the page"
    assert HOME + "/" not in text and f'"{HOME}"' not in text


# -- the harness sees what it must -----------------------------------------------------------------

def test_harness_catches_console_errors_exceptions_and_every_request(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("""<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><h1>bad</h1>
        <img src="http://example.invalid/x.png"><link rel="stylesheet" href="https://cdn.example.com/a.css">
        <img src="sibling.png">
        <script>console.error("x"); console.warn("careful"); console.log("hello", 3);
        fetch("https://api.example.com/data").catch(() => {});
        new WebSocket("ws://example.invalid/socket");
        Promise.reject(new Error("rejected"));
        setTimeout(() => { throw new Error("boom later"); }, 10);
        undefinedFunction();</script></body></html>""")
    result = browser.open(page, script="navigator.sendBeacon('https://beacon.example.com/b', 'x')")
    texts = [(m["level"], m["text"]) for m in result.console]
    assert ("error", "x") in texts and ("warning", "careful") in texts and ("info", "hello 3") in texts
    assert any("undefinedFunction is not defined" in e for e in result.exceptions)
    assert any("boom later" in e for e in result.exceptions)
    assert any("rejected" in e for e in result.exceptions)
    urls = {r["url"] for r in result.requests}
    assert {"http://example.invalid/x.png", "https://cdn.example.com/a.css", (tmp_path / "sibling.png").as_uri(),
            "https://api.example.com/data", "ws://example.invalid/socket", "https://beacon.example.com/b"} <= urls
    assert page.as_uri() not in urls  # the file itself is not a request
    # the harness failed them: nothing was fetched
    assert all(r["blocked"] for r in result.requests if not r["url"].startswith("ws:"))


def test_harness_sees_requests_the_reports_csp_blocks(browser, tmp_path):
    """A report's own CSP (page.py) stops a request before the network: the harness still sees it."""
    page = tmp_path / "csp.html"
    page.write_text(document("csp", '<h1>csp</h1><img src="http://example.invalid/x.png">'
                                     '<img src="local.png"><iframe src="https://frame.example.com/"></iframe>',
                             js='fetch("https://api.example.com/data").catch(() => {});'))
    result = browser.open(page)
    urls = {r["url"] for r in result.requests}
    assert {"http://example.invalid/x.png", "https://api.example.com/data"} <= urls, result.requests
    assert any(url.startswith("https://frame.example.com") for url in urls)  # a frame: its origin only
    assert any(r["url"].startswith("file") for r in result.requests)  # local.png, reported as its scheme
    assert all(r["blocked"] == "csp" for r in result.requests)
    assert any("Content Security Policy" in e for e in result.errors)


def test_harness_presses_real_keys_and_runs_scripts(browser, tmp_path):
    page = tmp_path / "keys.html"
    page.write_text(document("keys", '<h1 id="h">keys</h1><input id="box">',
                             js="document.addEventListener('keydown', e => { document.body.dataset.keys = "
                                "(document.body.dataset.keys || '') + e.key; });"))
    result = browser.open(page, keys=["j", "k", "/"], script="document.body.dataset.keys")
    assert result.result == "jk/"
    assert 'data-keys="jk/"' in result.dom_after and "data-keys" not in result.dom
    assert result.timing["load_ms"] > 0 and result.timing["dom_nodes"] >= 5


def test_png_check_tells_a_drawn_page_from_a_blank_one(browser, tmp_path):
    blank, quarter = tmp_path / "blank.html", tmp_path / "quarter.html"
    blank.write_text("<!DOCTYPE html><html><body style='margin:0;background:#fff'></body></html>")
    quarter.write_text("<!DOCTYPE html><html><body style='margin:0;background:#fff'>"
                       "<div style='width:640px;height:400px;background:#c00'></div></body></html>")
    browser.open(blank, screenshot=tmp_path / "blank.png")
    browser.open(quarter, screenshot=tmp_path / "quarter.png")
    assert png_is_blank(tmp_path / "blank.png")
    assert png_stats(tmp_path / "blank.png")["colours"] == 1
    stats = png_stats(tmp_path / "quarter.png")  # the decoder is exact: a quarter of the pixels, two colours
    assert (stats["colours"], stats["background"], stats["foreground_fraction"]) == (2, "ffffff", 0.25)
    assert png_is_blank(tmp_path / "quarter.png", min_colours=2) is False


# -- a trajectory page: a real `cwm-agent solve` ---------------------------------------------------

EDIT = ("slugkit/core.py\n<<<<<<< SEARCH\nimport re\nfrom typing import Iterable, Optional\n=======\n"
        "import re\nimport unicodedata\nfrom typing import Iterable, Optional\n>>>>>>> REPLACE")
NORMALISE = ('slugkit/core.py\n<<<<<<< SEARCH\n    text = _APOSTROPHES.sub("", text).lower()\n=======\n'
             '    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")\n'
             '    text = _APOSTROPHES.sub("", text).lower()\n>>>>>>> REPLACE')
SOLVE_SCRIPT = [
    think("Let me look at how slugify splits words.", "bash", "grep -n 'text = ' slugkit/core.py"),
    think("Coloured output, as a terminal shows it.", "bash",
          "printf '\\033[1;31mFAILED\\033[0m \\033[32mok\\033[0m\\n'; ls --color=always slugkit"),
    think("Accents must be folded before splitting. Import unicodedata first.", "edit", EDIT),
    think("Now normalise before the apostrophes are removed.", "edit", NORMALISE),
    think("A regression test.", "create", "tests/test_accents.py\nfrom slugkit import slugify\n\n\n"
          "def test_accents():\n    assert slugify(\"Crème Brûlée\") == \"creme-brulee\"\n"),
    think("Run the tests.", "bash", "python3 -m pytest -q tests 2>&1 | tail -n 2"),
    think("Write the patch.", "bash", "git diff > fix.patch && wc -l fix.patch"),
    think("Submit it.", "submit", "fix.patch"),
    "The patch is in.\n</think>\n## Issue Summary\n\nAccents split words.\n\n## Solution and Code Changes\n\n"
    "Fold accents with NFKD before splitting.",
]


@pytest.fixture(scope="module")
def solved(tmp_path_factory, sandbox_image) -> Path:
    """A finished `cwm-agent solve` run folder; the API key comes from ./cwm-agent.toml."""
    work = tmp_path_factory.mktemp("solve")
    (work / "cwm-agent.toml").write_text(f'api_key = "{FAKE_KEY}"\n')
    with ScriptedServer(SOLVE_SCRIPT) as server:
        result = subprocess.run([*CLI, "solve", "--base-url", server.base_url, "--out", str(work / "run"), "--json",
                                 "--task", "demo", "--command-timeout", "30"],
                                cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["exit"] == "submitted"
    return work / "run"


@pytest.mark.docker
def test_trajectory_page_opens_clean_with_its_numbers(browser, solved, tmp_path):
    shown = subprocess.run([*CLI, "show", str(solved), "--html"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    page = solved / "trajectory.html"
    assert shown.stdout.strip().endswith("trajectory.html") and page.is_file()
    data = json.loads((solved / "trajectory.json").read_text())
    steps = len(data["steps"])
    script = probe("""turns: document.querySelectorAll('section.turn').length,
        head: {...document.getElementById('summary').dataset},
        turn_ids: [...document.querySelectorAll('section.turn')].map(t => t.id + '/' + t.dataset.turn),
        search: !!document.querySelector('input#search'),
        ansi: [...document.querySelectorAll('section.turn span[style*="color"]')].map(s => s.textContent)""")
    result = opened_cleanly(browser, page, tmp_path / "trajectory.png", script=script)
    got = result.result
    assert got["turns"] == steps == 9 and got["search"]
    assert got["head"]["exit"] == "submitted"
    assert int(got["head"]["turns"]) == data["turns"] and int(got["head"]["tokens"]) == data["tokens"] > 0
    assert got["turn_ids"] == [f"turn-{n}/{n}" for n in range(1, steps + 1)]
    assert "FAILED" in got["ansi"] and "ok" in got["ansi"]  # the terminal's colours, drawn as colours
    assert "unicodedata" in result.dom and "Crème Brûlée" in result.dom
    keeps_private(page.read_text(), solved, solved.parent, solved.resolve())


@pytest.mark.docker
def test_trajectory_page_moves_with_j_and_k_and_searches_with_slash(browser, solved, tmp_path):
    page = solved / "keys.html"
    subprocess.run([*CLI, "show", str(solved), "--html", str(page)], check=True, capture_output=True, timeout=120)
    current = """[...document.querySelectorAll('section.turn.current')].map(t => t.id)"""
    top = "(document.querySelector('section.turn.current') || document.body).getBoundingClientRect().top"
    # from the top of the page: j selects the first turn, j the second, k the first again
    for keys, expected in ((["j"], "turn-1"), (["j", "j"], "turn-2"), (["j", "j", "k"], "turn-1")):
        result = browser.open(page, keys=keys, script=f"({{current: {current}, top: {top}}})")
        assert result.result["current"] == [expected], keys
        assert 0 <= result.result["top"] < 200  # scrolled to it, just under the sticky toolbar
        assert result.errors == [] and result.requests == []
    # opened at #turn-1 (a link to a turn), j moves to turn 2
    result = browser.open(page, fragment="turn-1", keys=["j"], script=f"{current}")
    assert result.result == ["turn-2"]
    # / focuses the search box; typed words hide the turns without them, Escape brings them back
    typed = list("unicodedata")
    result = browser.open(page, keys=["/", *typed], script="""new Promise(done => setTimeout(() => done({
        focused: document.activeElement.id,
        shown: [...document.querySelectorAll('section.turn')].filter(t => !t.hidden).map(t => t.dataset.turn)}), 400))""")
    assert result.result["focused"] == "search"
    assert result.result["shown"] and len(result.result["shown"]) < 9  # the turns that mention it
    result = browser.open(page, keys=["/", *typed, "Escape"], script="""new Promise(done => setTimeout(() => done(
        [...document.querySelectorAll('section.turn')].filter(t => !t.hidden).length), 400))""")
    assert result.result == 9
    assert result.errors == [] and result.requests == []


@pytest.mark.docker
def test_trajectory_page_keeps_paths_only_when_asked(solved, tmp_path):
    from cwm_agent.report.trajectory import render, write_html

    from cwm_agent.trajectory import load

    data = load(solved / "trajectory.json")
    data.setdefault("config", {})["note"] = f"made in {solved} by {HOME}/somebody"  # paths a page could show
    data["config"]["api_key"] = FAKE_KEY  # as if a trajectory had recorded it unmasked
    scrubbed = render(data, folder=solved)
    kept = render(data, folder=solved, absolute_paths=True)
    keeps_private(scrubbed, solved, solved.resolve())
    assert str(solved) in kept and FAKE_KEY not in kept  # the paths when asked; the key never
    written = write_html(solved, tmp_path / "t.html")
    keeps_private(written.read_text(), solved)


# -- an eval report: a real `cwm-agent eval` -------------------------------------------------------

SOLVED, FLAILS = "demo-slugify-unicode", "pagekit-exact-multiple-pages"


def scripted_model(tasks):
    """One task solved with its gold patch, one flailing until the format errors end it."""
    gold = {t.instance_id: t.patch for t in tasks}
    statements = {t.instance_id: t.problem_statement.strip()[:200] for t in tasks}

    def reply(request):
        prompt = request["prompt"]
        task = next(i for i, s in statements.items() if s in prompt)
        turn = prompt.count("<|start_header_id|>assistant")
        if task == FLAILS:
            return "I am not sure.\n</think>\nno tool"
        act = lambda tool, body: "Thinking.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))  # noqa: E731
        return [act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{gold[task]}EOF_PATCH"), act("submit", "fix.patch"),
                "Done.\n</think>\nSummary: applied the fix."][min(turn - 1, 2)]
    return reply


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, sandbox_image) -> Path:
    """A graded `cwm-agent eval` folder of two tasks (one resolved); the key is in its --config file."""
    from cwm_agent.bench.tasks import load_tasks

    work = tmp_path_factory.mktemp("eval")
    config = work / "configs" / "html.toml"
    config.parent.mkdir()
    config.write_text(f'name = "html"\ntasks = "{TASKS_DIR}"\napi_key = "{FAKE_KEY}"\nmax_turns = 5\n'
                      "max_format_errors = 2\nworkers = 2\n")
    tasks = load_tasks(TASKS_DIR)
    with ScriptedServer([scripted_model(tasks)] * 20) as server:
        result = subprocess.run([*CLI, "eval", "--config", str(config), "--filter", f"^({SOLVED}|{FLAILS})$",
                                 "--base-url", server.base_url, "--out", str(work / "e")],
                                cwd=work, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr + result.stdout
    return work / "e"


@pytest.mark.docker
def test_eval_report_opens_clean_with_its_numbers(browser, evaluated, tmp_path):
    page = evaluated / "report.html"
    assert page.is_file(), "cwm-agent eval wrote no report.html"
    report = json.loads((evaluated / "report.json").read_text())
    assert (report["resolved"], report["scored"]) == (1, 2)
    script = probe("""rate: document.getElementById('resolved-rate').textContent.trim(),
        count: document.getElementById('resolved-count').textContent.trim(),
        rows: [...document.querySelectorAll('table#attempts tr.attempt')].map(r =>
              [r.dataset.instance, r.dataset.attempt]),
        links: [...document.querySelectorAll('table#attempts a[href]')].map(a => a.getAttribute('href')),
        charts: [...document.querySelectorAll('figure.chart')].map(f => f.id)""")
    result = opened_cleanly(browser, page, tmp_path / "eval.png", script=script)
    got = result.result
    assert got["rate"] == "50.0%" and got["count"] == "1/2"
    assert sorted(got["rows"]) == sorted([[FLAILS, "1"], [SOLVED, "1"]])
    assert "chart-exits" in got["charts"]
    # each attempt links to its trajectory's page, relative, and that page is there and opens clean
    assert len(got["links"]) == 2 and all(not link.startswith(("/", "file:", "http")) for link in got["links"])
    for link in got["links"]:
        target = (page.parent / link.split("#")[0]).resolve()
        assert target.is_file(), link
        opened_cleanly(browser, target, tmp_path / f"{target.parent.parent.name}.png")
    keeps_private(page.read_text(), evaluated, evaluated.parent, evaluated.resolve(), TASKS_DIR)
    for trajectory in evaluated.glob("instances/*/attempt-*/trajectory.html"):
        keeps_private(trajectory.read_text(), evaluated, evaluated.resolve(), TASKS_DIR)


@pytest.mark.docker
def test_eval_report_filters_its_table(browser, evaluated):
    result = browser.open(evaluated / "report.html", script="""(() => {
        const f = document.getElementById('filter');
        f.value = 'format'; f.dispatchEvent(new Event('input'));
        return [...document.querySelectorAll('tr.attempt')].filter(r => !r.hidden).map(r => r.dataset.instance);
    })()""")
    assert result.result == [FLAILS]
    assert result.errors == [] and result.requests == []


@pytest.mark.docker
def test_eval_report_keeps_paths_only_when_asked(evaluated):
    from cwm_agent.report.eval import render

    report = json.loads((evaluated / "report.json").read_text())
    scrubbed = render(evaluated, report)
    kept = render(evaluated, report, absolute_paths=True)
    config_file = report["config"]["file"]  # the --config file, in the eval's own folder
    keeps_private(scrubbed, evaluated, evaluated.parent, config_file, TASKS_DIR)
    assert config_file in kept and FAKE_KEY not in kept  # the paths when asked; the key never


# -- a trace page: `cwm-agent trace --html` ---------------------------------------------------------

DEMO = """
def count_letters(s, letter):
    n = 0
    for c in s:
        n += int(c == letter)
    return n

def f(c):
    word = "strawberry"
    num = count_letters(word, c)
    return num
"""


def test_trace_page_opens_clean_with_its_frames(browser, tmp_path):
    """A prediction that parts from the truth at frame 11 (n=5 for n=1) and carries it to frame 20."""
    from cwm_agent.world.trace import Frame, render_frame, run_trace
    from trace_oracle import replies

    demo = tmp_path / "demo.py"
    demo.write_text(textwrap.dedent(DEMO).lstrip("\n"))
    truth = run_trace(demo, 'f("r")')
    frame = truth.frames[11]
    wrong = {11: render_frame(Frame(frame.event, {**frame.locals, "n": "5"}, frame.line, frame.value))
             .removesuffix("<|frame_sep|>")}
    page = tmp_path / "trace.html"
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong)) as server:
        result = subprocess.run([*CLI, "trace", str(demo), "--call", 'f("r")', "--predict", "--base-url",
                                 server.base_url, "--api-key", FAKE_KEY, "--html", str(page)],
                                capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"})
    assert result.returncode == 0, result.stderr + result.stdout
    assert page.is_file()
    script = probe("""frames: [...document.querySelectorAll('tr.frame')].map(r => r.dataset.index),
        diverged: [...document.querySelectorAll('tr.frame.diverged')].map(r => +r.dataset.index),
        first: [...document.querySelectorAll('tr.frame.first-divergence')].map(r => +r.dataset.index),
        state: document.getElementById('state-exact').textContent.trim(),
        shown: (() => { const box = document.getElementById('only-diverged'); box.click();
                        return [...document.querySelectorAll('tr.frame')].filter(
                          r => r.offsetParent !== null).length; })()""")
    got = opened_cleanly(browser, page, tmp_path / "trace.png", script=script).result
    assert len(got["frames"]) == truth.steps == 30
    assert got["frames"] == [str(i) for i in range(30)]
    assert got["diverged"] == list(range(11, 21)) and got["first"] == [11]
    assert got["state"] == "65.5%"  # 19 of 29 steps
    assert got["shown"] == 10  # the checkbox keeps the frames that part
    keeps_private(page.read_text(), tmp_path, demo)
