"""The pages of an eval (report.html) and of a trace (`trace --html`), read without a browser:
the DOM contract, no path of the machine, no secret. (tests/test_html.py opens them in Chromium.)"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cwm_agent.bench import runner
from cwm_agent.bench.attempts import AttemptResult
from cwm_agent.report import eval as eval_page
from cwm_agent.testing.scripted_server import ScriptedServer
from cwm_agent.trajectory import dumps
from cwm_agent.world.trace import Frame, render_frame, run_trace
from trace_oracle import replies

CLI = [sys.executable, "-m", "cwm_agent.cli"]
FAKE_KEY = "sk-fake-0123456789abcdef"
EXITS = ["submitted"] * 6 + ["turn_limit", "format_errors", "model_error"]


class Elements(HTMLParser):
    """Every start tag with its attributes; the text inside elements with an id."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag not in ("input", "br", "meta", "rect", "path"):
            self._open.append(attributes.get("id"))
            if attributes.get("id"):
                self.text[attributes["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("input", "br", "meta", "rect", "path") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for name in self._open:
            if name:
                self.text[name] += data

    def having(self, tag: str, css: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and css in a.get("class", "").split()]


def imagination(rng: random.Random) -> dict:
    from cwm_agent.world.imagine import SCORE_KEYS, merge

    by_kind = {kind: {"turns": 2, "scored": 2, **{k: round(rng.random(), 2) for k in SCORE_KEYS},
                      "prompt_tokens_per_turn": 100.0, "completion_tokens_per_turn": 20.0}
               for kind in ("tests", "ls/cat/grep")}
    return {"mode": "log", **merge(list(by_kind.values())), "by_kind": by_kind}


def make_eval(out: Path, tasks: int, attempts: int = 1, *, seed: int = 0, imagine: bool = False,
              selection: bool = False) -> dict:
    """An eval folder as `cwm-agent eval` leaves it: results.jsonl (and selection.jsonl), report.json."""
    rng = random.Random(seed)
    out.mkdir(parents=True)
    with (out / "results.jsonl").open("w", encoding="utf-8") as fh:
        for t in range(tasks):
            for k in range(1, attempts + 1):
                exit = EXITS[rng.randrange(len(EXITS))]
                infrastructure = exit == "model_error"
                resolved = None if infrastructure else exit == "submitted" and rng.random() < 0.5
                row = AttemptResult(f"repo__repo-{t}", k, exit, "", infrastructure, "diff --git a/x b/x\n", resolved,
                                    None if resolved is None else "resolved" if resolved else "failed", [],
                                    rng.randint(2, 60), rng.randint(2_000, 120_000), rng.uniform(20, 900),
                                    {"model": 40.0, "command": 12.0, "overhead": 1.0, "wall": 53.0, "grade": 9.0},
                                    imagination(rng) if imagine else None, finished=exit == "submitted")
                fh.write(dumps(asdict(row)) + "\n")
    if selection:
        with (out / "selection.jsonl").open("w", encoding="utf-8") as fh:
            for t in range(tasks):
                fh.write(json.dumps({"instance_id": f"repo__repo-{t}", "method": "tests", "winner": 1,
                                     "resolved": t % 2 == 0, "reason": f"attempt 1: passes {t} tests",
                                     "majority_winner": 2, "majority_resolved": False, "first_resolved": True,
                                     "any_resolved": True, "candidates": attempts, "tests": 3, "kept_tests": 2,
                                     "container_seconds": 30.0}) + "\n")
    config = {"file": str(out.parent / "evals" / "mine.toml"), "sha256": "0" * 64,
              "settings": {"base_url": "http://gpu:8000/v1", "api_key": FAKE_KEY, "max_turns": 40},
              "eval": {"name": "mine", "tasks": "tasks", "tasks_path": str(out.parent / "tasks"),
                       "imagine_tokens": 4096, "hf_token": FAKE_KEY}}
    return runner.report(out, config=config)


def test_the_eval_page_keeps_its_dom_contract(tmp_path):
    out = tmp_path / "eval"
    report = make_eval(out, tasks=10, imagine=True)
    page = eval_page.write_html(out).read_text(encoding="utf-8")
    assert eval_page.write_html(out, report).read_text(encoding="utf-8") == page  # report.json or the dict alike
    dom = Elements(page)
    assert dom.text["resolved-rate"] == f"{report['resolved_rate']:.1%}"
    assert dom.text["resolved-count"] == f"{report['resolved']}/{report['scored']}"
    low, high = report["resolved_rate_ci95"]
    assert dom.text["resolved-ci"] == f"95% interval {low:.1%}–{high:.1%}"
    rows = dom.having("tr", "attempt")
    assert len(rows) == 10 == report["attempts"]
    assert [(r["data-instance"], r["data-attempt"]) for r in rows] == [(f"repo__repo-{t}", "1") for t in
                                                                       sorted(range(10), key=str)]
    links = [a["href"] for t, a in dom.tags if t == "a"]
    assert links == [f"instances/{r['data-instance']}/attempt-1/trajectory.html" for r in rows]
    headers = [a.get("data-type") for t, a in dom.tags if t == "th"][:8]
    assert headers == ["text", "num", "text", "num", "num", "num", "num", None]
    assert ("input", {"id": "filter", "type": "search", "placeholder": "filter: task, exit, yes/no…",
                      "aria-label": "filter the attempts"}) in dom.tags
    charts = {a["id"] for a in dom.having("figure", "chart")}
    assert charts == {"chart-exits", "chart-turns", "chart-tokens", "chart-time", "chart-imagination"}
    # self-contained: nothing fetched, no path of this machine, no secret
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert str(tmp_path) not in page and os.path.expanduser("~") not in page
    config = json.loads(dom.text["config"].removeprefix("configuration"))
    assert FAKE_KEY not in page and config["settings"]["api_key"] == config["eval"]["hf_token"] == "***"
    assert config["eval"]["imagine_tokens"] == 4096 and config["eval"]["tasks_path"] == "…/tasks"
    assert str(tmp_path) in eval_page.render(out, report, absolute_paths=True)


def test_a_test_time_scaling_page_shows_the_candidates_and_the_choice(tmp_path):
    out = tmp_path / "eval"
    report = make_eval(out, tasks=3, attempts=4, selection=True)
    dom = Elements(eval_page.render(out, report))
    assert "chart-scaling" in {a["id"] for a in dom.having("figure", "chart")}
    assert [a["data-instance"] for a in dom.having("tr", "choice")] == ["repo__repo-0", "repo__repo-1", "repo__repo-2"]
    assert len(dom.having("span", "cand")) == 12 and len(dom.having("span", "win")) == 3
    assert [(a["data-instance"], a["data-attempt"]) for a in dom.having("tr", "winner")] == [
        ("repo__repo-0", "1"), ("repo__repo-1", "1"), ("repo__repo-2", "1")]
    assert "attempt 1: passes 2 tests" in dom.text["selection"]


def test_a_page_written_elsewhere_links_back_to_the_trajectories(tmp_path):
    out = tmp_path / "eval"
    make_eval(out, tasks=1)
    (tmp_path / "shared").mkdir()
    page = eval_page.write_html(out, out=tmp_path / "shared" / "page.html").read_text(encoding="utf-8")
    assert 'href="../eval/instances/repo__repo-0/attempt-1/trajectory.html"' in page


def test_500_attempts_stay_light(tmp_path):
    out = tmp_path / "eval"
    make_eval(out, tasks=100, attempts=5, imagine=True, selection=True)
    page = eval_page.write_html(out).read_text(encoding="utf-8")
    size = len(page.encode())
    print(f"\n500-attempt report.html: {size:,} bytes, {page.count('<svg')} SVGs")
    assert page.count('<tr class="attempt') == 500
    assert page.count("<svg") < 20  # charts over totals, never one per row
    assert size < 600_000


def test_trajectory_pages_are_written_when_missing_or_stale(tmp_path, monkeypatch):
    """write_pages writes each attempt's trajectory.html that is missing or older than its
    trajectory.json, through cwm_agent.report.trajectory (stood in for here)."""
    import types

    out = tmp_path / "eval"
    make_eval(out, tasks=3)
    for t in range(3):
        folder = out / "instances" / f"repo__repo-{t}" / "attempt-1"
        folder.mkdir(parents=True)
        (folder / "trajectory.json").write_text("{}")
    fresh = out / "instances" / "repo__repo-0" / "attempt-1" / "trajectory.html"
    fresh.write_text("already here")
    os.utime(fresh.with_name("trajectory.json"), (0, 0))
    written: list[Path] = []

    def write_html(path: Path, out: Path | None = None, *, absolute_paths: bool = False) -> Path:
        if "repo-2" in str(path):
            raise ValueError("a broken trajectory")
        written.append(path)
        return path.with_name("trajectory.html")

    monkeypatch.setitem(sys.modules, "cwm_agent.report.trajectory", types.SimpleNamespace(write_html=write_html))
    page, problems = eval_page.write_pages(out)
    assert page == out / "report.html" and page.is_file()
    assert written == [out / "instances" / "repo__repo-1" / "attempt-1" / "trajectory.json"]
    assert problems == ["instances/repo__repo-2/attempt-1: ValueError: a broken trajectory"]


@pytest.mark.docker
def test_the_eval_cli_writes_report_html(tmp_path, sandbox_image):
    from test_eval import SOLVED, scripted_model
    from cwm_agent.bench.tasks import load_tasks
    from cwm_agent.paths import TASKS_DIR

    tasks = load_tasks(TASKS_DIR)
    with ScriptedServer([scripted_model(tasks, broken_down=False)] * 10) as server:
        out = subprocess.run([*CLI, "eval", str(TASKS_DIR), "--filter", f"^{SOLVED}$", "--base-url", server.base_url,
                              "--api-key", FAKE_KEY, "--out", str(tmp_path / "e"), "--max-turns", "5"],
                             capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    page_path = tmp_path / "e" / "report.html"
    assert f"page: {page_path}" in out.stdout and "HTML page not written" not in out.stderr
    page = page_path.read_text(encoding="utf-8")
    dom = Elements(page)
    assert (dom.text["resolved-rate"], dom.text["resolved-count"]) == ("100.0%", "1/1")
    assert [(r["data-instance"], r["data-attempt"]) for r in dom.having("tr", "attempt")] == [(SOLVED, "1")]
    assert str(tmp_path) not in page and FAKE_KEY not in page


# --- trace --html -----------------------------------------------------------------------------

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


@pytest.fixture()
def demo(tmp_path) -> Path:
    path = tmp_path / "demo.py"
    path.write_text(textwrap.dedent(DEMO).lstrip("\n"))
    return path


def trace_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "trace", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "160"})


def test_trace_html_shows_the_ground_truth_frame_by_frame(demo, tmp_path):
    page_path = tmp_path / "trace.html"
    out = trace_cli(str(demo), "--call", 'f("r")', "--html", str(page_path))
    assert out.returncode == 0, out.stderr
    assert f"page: {page_path}" in out.stdout.replace("\n", "")
    page = page_path.read_text(encoding="utf-8")
    dom = Elements(page)
    truth = run_trace(demo, 'f("r")')
    frames = dom.having("tr", "frame")
    assert [int(a["data-index"]) for a in frames] == list(range(truth.steps)) == list(range(30))
    assert [a["data-line"] for a in frames] == [str(f.lineno) for f in truth.frames]
    assert not dom.having("tr", "diverged") and "metrics" not in dom.text
    assert len(dom.having("span", "src")) == 10 and dom.text["return-value"] == "3"
    assert "letter=&#x27;r&#x27;" in page and str(tmp_path) not in page
    # --json stays one JSON object on stdout; the page's path goes to stderr
    quiet = trace_cli(str(demo), "--call", 'f("r")', "--json", "--html", str(page_path))
    assert json.loads(quiet.stdout)["truth"]["steps"] == 30 and "page:" in quiet.stderr


def test_trace_html_marks_where_the_prediction_parts(demo, tmp_path):
    truth = run_trace(demo, 'f("r")')
    frame = truth.frames[11]
    wrong = {11: render_frame(Frame(frame.event, {**frame.locals, "n": "5"}, frame.line, frame.value))
             .removesuffix("<|frame_sep|>")}
    page_path = tmp_path / "predicted.html"
    with ScriptedServer(replies(truth.frames, 40, wrong=wrong)) as server:
        out = trace_cli(str(demo), "--call", 'f("r")', "--predict", "--base-url", server.base_url,
                        "--html", str(page_path))
    assert out.returncode == 0, out.stderr
    dom = Elements(page_path.read_text(encoding="utf-8"))
    assert len(dom.having("tr", "frame")) == 30 and len(dom.having("tr", "given")) == 1
    diverged = [int(a["data-index"]) for a in dom.having("tr", "diverged")]
    assert diverged and diverged[0] == 11
    assert [a["data-index"] for a in dom.having("tr", "first-divergence")] == ["11"]
    marked = [a for a in dom.having("span", "diverged")]
    assert len(marked) >= 2  # n=1 on the truth's side, n=5 on the model's
    assert dom.text["first-divergence"] == "step 11: locals differs: expected n=1, got n=5"
    assert dom.text["state-exact"].endswith("%") and dom.text["line-exact"] == "100.0%"
    assert dom.text["return-match"] == "matches"
