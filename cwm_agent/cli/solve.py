"""`cwm-agent solve`: one episode (built by episode.py) on one repository and issue, then the
outputs on disk. It prints through the console it is given and returns the exit code: 0 the episode finished (submitted, then summarised) with a
patch that applies, 1 otherwise, 2 infrastructure, 130 interrupted. An episode that a limit ended
failed, as in CWM's evaluation, whatever it submitted: its last patch is still written to
patch.diff, but it exits 1 and `--apply` leaves the repository alone, unless `grade_unfinished`
(`--grade-unfinished`) counts it as harnesses that submit on exit do. Whether a patch applies is
the grader's chain's verdict (sandbox.patch), so `solve` and `eval` agree.
"""

from __future__ import annotations

import json
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from cwm_agent import episode
from cwm_agent.agent import EpisodeResult, Events, Exit
from cwm_agent.config import Settings
from cwm_agent.models.client import Model
from cwm_agent.world.imagine import ImagineSpec

EXIT_OK, EXIT_NO_PATCH, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class SolveRequest:
    repo: Path
    issue: str
    label: str
    out: Path
    settings: Settings
    apply: bool = False
    host_repo: Path | None = None  # where --apply writes; None: nowhere
    imagine: ImagineSpec = field(default_factory=ImagineSpec)  # --imagine; dream: no sandbox at all


def connect_model(settings: Settings, console: Console, quiet: bool) -> Model:
    """The settings' model; says so when it is the embedded toy."""
    if not settings.base_url and not quiet:
        from cwm_agent.models.local import NOTICE

        console.print(f"[yellow]{NOTICE}[/]")
    return episode.connect_model(settings)


def _second_interrupt_forces() -> None:
    """The first Ctrl-C stops cleanly (trajectory saved, container removed); a second one forces."""
    def handler(signum, frame):
        signal.signal(signal.SIGINT, _force)
        raise KeyboardInterrupt

    def _force(signum, frame):
        import os

        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, handler)


def run_solve(req: SolveRequest, *, console: Console, quiet: bool = False, json_out: bool = False,
              verbose: bool = False, events: Events | None = None) -> int:
    from cwm_agent.sandbox import patch as patch_mod
    from cwm_agent.cli.ui import LiveView, final_panel

    _second_interrupt_forces()
    settings, run_id = req.settings, uuid.uuid4().hex[:12]
    outputs = {"patch": req.out / "patch.diff", "trajectory": req.out / "trajectory.json",
               "summary": req.out / "summary.md"}
    model = connect_model(settings, console, quiet)
    dream = req.imagine.dream
    if events is None:
        events = Events() if quiet else LiveView(console, verbose=verbose, max_turns=settings.max_turns)
    with episode.open_episode(model, settings, repo=req.repo, run_id=run_id, trajectory_path=outputs["trajectory"],
                              task={"label": req.label, "repo": str(req.repo), "issue": req.issue},
                              imagine=req.imagine, events=events) as ep:
        sandbox, trajectory, agent = ep.sandbox, ep.trajectory, ep.agent
        result = agent.run(req.issue)
        imagination = agent.imagination
        patch = result.submission or ""
        # A dream's patch was never applied anywhere: whether it applies is unknown (None).
        check = None if dream or not patch else _check(patch_mod, patch, sandbox)
        applies = None if dream else bool(check)
        try:
            workspace = sandbox.diff()
        except Exception:  # the sandbox may be gone after an infrastructure failure
            workspace = None
        skipped = list(check.skipped) if check else []
        counted = counts(result, settings.grade_unfinished)
        trajectory.finish(patch=patch, patch_applies=applies, workspace_diff=workspace, finished=result.exit.finished,
                          counted=counted, patch_applied_with=check.applied_with if check else None,
                          patch_skipped_binary_files=skipped)
    outputs["patch"].write_bytes(patch.encode("utf-8", "surrogateescape"))  # the submitted bytes, exactly
    outputs["summary"].write_text(summary_markdown(req, result, applies, skipped=skipped), encoding="utf-8")
    page = write_page(outputs["trajectory"])
    if page is not None:
        outputs["html"] = page
    stats = patch_mod.diffstat(patch) if patch and applies is not None else []
    code = exit_code(result, True if dream else applies, grade_unfinished=settings.grade_unfinished)
    applied = None
    if req.apply and patch and applies and req.host_repo and counted:
        if not quiet:
            console.print(Syntax(patch, "diff", theme="ansi_dark", background_color="default"))
        applied = patch_mod.apply_to_repo(patch, req.host_repo)
        if not quiet:
            how = f" with {applied.applied_with}" if applied.applied_with else ""
            console.print(f"[green]applied to {req.host_repo}{how}[/]")
            if applied.skipped:
                console.print(f"[yellow]skipped binary files with no data:[/] {', '.join(applied.skipped)}")
    elif req.apply and patch and not counted and not quiet:
        console.print(f"[yellow]not applied to {req.host_repo}: the episode did not finish ({result.exit.value}); "
                      f"its last patch is in {outputs['patch']} (--grade-unfinished applies it anyway)[/]")
    if json_out:
        print(json.dumps({"exit": result.exit.value, "detail": result.detail, "exit_code": code,
                          "finished": result.exit.finished, "counted": counted,
                          "patch_applies": applies, "patch_applied_with": check.applied_with if check else None,
                          "skipped_binary_files": skipped, "applied_to_repo": bool(applied),
                          "turns": result.turns, "tokens": result.tokens,
                          "timings": result.timings, **{k: str(v) for k, v in outputs.items()},
                          **({"imagination": imagination.summary(), "imagined": dream} if imagination else {})}))
    elif quiet:
        note = "" if counted or not patch else " (episode did not finish: patch not counted)"
        console.print(f"{result.exit.value}: {outputs['patch'] if patch else 'no patch'}{note} "
                      f"(trajectory {outputs['trajectory']})", highlight=False)
    else:
        console.print(final_panel(result, stats=stats, outputs=outputs, applies=applies, dream=dream,
                                  imagination=imagination.summary() if imagination else None,
                                  counted=counted, skipped=skipped))
    return code


def write_page(trajectory_path: Path) -> Path | None:
    """trajectory.html next to trajectory.json (report/trajectory.py). The run never fails for
    it: a page that cannot be written is one yellow line on stderr (stdout may be --json)."""
    try:
        from cwm_agent.report.trajectory import write_html

        return write_html(trajectory_path)
    except Exception as exc:  # noqa: BLE001 - the page is a convenience, the run's outputs are written
        Console(stderr=True).print(f"[yellow]could not write the HTML page of {trajectory_path}:[/] "
                                   f"{escape(f'{type(exc).__name__}: {exc}')}", highlight=False)
        return None


def _check(patch_mod, patch: str, sandbox):
    try:
        return patch_mod.check_applies(patch, sandbox)
    except Exception as exc:  # a malformed patch or a dead sandbox: it does not apply
        return patch_mod.ApplyCheck(False, str(exc), skipped=tuple(_dataless(patch_mod, patch)))


def _dataless(patch_mod, patch: str) -> list[str]:
    try:
        return patch_mod.dataless_binary_files(patch)
    except Exception:
        return []


def _skipped_words(applies: bool | None) -> str:
    if applies is False:  # the chain failed on them (GNU patch passes over new files only)
        return "binary files with no data, which no command can apply"
    return "skipped binary files with no data (nothing to apply)"


def counts(result: EpisodeResult, grade_unfinished: bool = False) -> bool:
    """Is this episode's submission its answer? Only a finished episode's is (CWM's rule), unless
    grade_unfinished, which takes the last submitted patch of any episode the agent ended."""
    if result.exit.finished:
        return True
    return grade_unfinished and not result.exit.infrastructure and result.exit is not Exit.INTERRUPTED


def exit_code(result: EpisodeResult, applies: bool | None, *, grade_unfinished: bool = False) -> int:
    if result.exit.infrastructure:
        return EXIT_INFRA
    if result.exit is Exit.INTERRUPTED:
        return EXIT_INTERRUPTED
    if result.submission and applies and counts(result, grade_unfinished):
        return EXIT_OK
    return EXIT_NO_PATCH


def summary_markdown(req: SolveRequest, result: EpisodeResult, applies: bool | None, *,
                     skipped: list[str] | tuple[str, ...] = ()) -> str:
    lines = [f"# cwm-agent: {req.label}", "", f"- exit: `{result.exit.value}` {result.detail}".rstrip(),
             f"- turns: {result.turns}, tokens: {result.tokens:,}",
             f"- patch: {'submitted' if result.submission else 'none'}"
             + ("" if not result.submission else (", applies to the base" if applies else ", does NOT apply"))]
    if skipped:
        lines.append(f"- {_skipped_words(applies)}: {', '.join(skipped)}")
    if result.submission and not result.exit.finished and not result.exit.infrastructure:
        counted = counts(result, req.settings.grade_unfinished)
        lines.append(f"- the episode did not finish ({result.exit.value}): the patch above is the last one "
                     + ("submitted, counted as the answer (--grade-unfinished)" if counted else
                        "submitted, kept for you to look at; it is not counted as a solution"))
    lines.append("")
    if req.imagine.dream:  # nothing ran, so nothing was checked
        lines[4:] = [f"- patch: {'imagined' if result.submission else 'none'} (dream: no sandbox; every "
                     "observation was imagined by the model)", ""]
    lines.append(result.summary or "_The model gave no final summary._")
    return "\n".join(lines) + "\n"


def run_solve_scaled(req: SolveRequest, *, attempts: int, test_attempts: int, method: str, console: Console,
                     quiet: bool = False, json_out: bool = False) -> int:
    """`solve --attempts K`: K patch episodes and M test-generation episodes, one after another,
    then selection (bench/selection.py); the chosen patch goes to patch.diff."""
    from rich.table import Table

    from cwm_agent.bench import selection
    from cwm_agent.bench.tasks import DEFAULT_TEST_COMMAND
    from cwm_agent.sandbox import patch as patch_mod

    _second_interrupt_forces()
    settings = req.settings
    model = connect_model(settings, console, quiet)
    say = (lambda text: None) if quiet else (lambda text: console.print(text, highlight=False))
    runs: dict[int, EpisodeResult] = {}
    candidates, tests = [], []
    for kind, count in (("patch", attempts), ("test", test_attempts)):
        for n in range(1, count + 1):
            folder = req.out / (f"attempt-{n}" if kind == "patch" else f"test-attempt-{n}")
            folder.mkdir(parents=True, exist_ok=True)
            say(f"[bold]{'patch' if kind == 'patch' else 'test'} attempt {n}/{count}[/] …")
            with episode.open_episode(model, settings, repo=req.repo, run_id=uuid.uuid4().hex[:12], kind=kind,
                                      trajectory_path=folder / "trajectory.json",
                                      task={"label": req.label, "repo": str(req.repo), "issue": req.issue,
                                            "attempt": n, "kind": kind}) as ep:
                result = ep.agent.run(req.issue)
            if result.exit is Exit.INTERRUPTED:
                return EXIT_INTERRUPTED
            say(f"  {result.exit.value} after {result.turns} turns, {result.tokens:,} tokens")
            write_page(folder / "trajectory.json")
            submitted = result.submission or ""
            if kind == "patch":
                runs[n] = result
                (folder / "patch.diff").write_bytes(submitted.encode("utf-8", "surrogateescape"))
                if submitted.strip() and counts(result, settings.grade_unfinished):
                    candidates.append(selection.Candidate(n, submitted, result.tokens))
            elif submitted.strip() and result.exit.finished:
                (folder / "test_issue.py").write_bytes(submitted.encode("utf-8", "surrogateescape"))
                tests.append(selection.GeneratedTest(n, submitted))
    chosen, executions = selection.run_and_choose(
        method, candidates, tests,
        lambda subject: lambda: episode.open_sandbox(settings, req.repo, f"select-{subject}-{uuid.uuid4().hex[:6]}"),
        test_command=DEFAULT_TEST_COMMAND, on_subject=lambda subject: say(f"running the tests: {subject} …"))
    selection.save(req.out / "selection.json", chosen, executions)
    winner = runs.get(chosen.winner) if chosen.winner is not None else None
    patch = winner.submission if winner else ""
    (req.out / "patch.diff").write_bytes((patch or "").encode("utf-8", "surrogateescape"))
    applies = bool(patch) and bool(patch_mod.check_applies(patch, req.repo))
    if req.apply and patch and applies and req.host_repo:
        patch_mod.apply_to_repo(patch, req.host_repo)
        say(f"[green]applied to {req.host_repo}[/]")
    rows = {row["attempt"]: row for row in chosen.table}
    if json_out:
        print(json.dumps({"winner": chosen.winner, "reason": chosen.reason, "method": method,
                          "candidates": [{"attempt": n, "exit": r.exit.value, "tokens": r.tokens, **rows.get(n, {})}
                                         for n, r in runs.items()],
                          "tests": len(tests), "kept_tests": chosen.kept_tests, "patch": str(req.out / "patch.diff"),
                          "patch_applies": applies, "container_seconds": round(chosen.container_seconds, 2)}))
    elif not quiet:
        table = Table(title=f"{len(runs)} candidates, {len(tests)} generated tests, select {method}")
        for column in ("attempt", "exit", "tokens", "existing tests", "generated tests", "votes", "score", ""):
            table.add_column(column)
        for n, r in runs.items():
            row = rows.get(n, {})
            table.add_row(str(n), r.exit.value, f"{r.tokens:,}", str(row.get("existing_passed", "")),
                          str(row.get("generated_resolved", "")), str(row.get("votes", "")),
                          str(row.get("score", "")), "[green]chosen[/]" if n == chosen.winner else "")
        console.print(table)
        console.print(chosen.reason, highlight=False)
        console.print(f"patch: {req.out / 'patch.diff'} · why: {req.out / 'selection.json'}", highlight=False)
    else:
        console.print(f"selected attempt {chosen.winner}: {req.out / 'patch.diff'}" if patch else "no patch selected",
                      highlight=False)
    return EXIT_OK if patch and applies else EXIT_NO_PATCH
