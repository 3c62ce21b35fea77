"""The `cwm-agent` command line. Thin: parse flags, build settings, call the modules, show results."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cwm_agent import __version__, protocol
from cwm_agent.cli.optional_value import optional_value_command
from cwm_agent.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="cwm-agent",
    help="A bash-only coding agent for Meta FAIR's Code World Model (CWM).\n\n"
    "Start with `cwm-agent doctor`, then `cwm-agent solve --repo PATH --issue TEXT`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
sandbox_app = typer.Typer(help="Build and manage the sandbox image.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
tasks_app = typer.Typer(help="Make task sets.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


GRADE_UNFINISHED_HELP = ("Count an episode that the turn, context or time limit ended by its last submitted patch, "
                         "as harnesses that submit on exit do (mini-swe-agent). Default: such an episode failed, "
                         "whatever it submitted (CWM's rule).")
TEMPERATURE_HELP = "Sampling temperature of the model's turns (default 1.0, CWM's published setting)."
IMAGINE_HELP = ("Imagination (CWM servers only): off | log (predict every output, run it anyway, score) | "
                "lookahead[:K] (K candidate actions, imagine each, let the model pick; K=3) | dream (no sandbox: "
                "every output imagined).")


class UsageProblem(Exception):
    """Bad input from the user: one line with the fix, exit 2."""


def _version(value: bool) -> None:
    if value:
        console.print(f"cwm-agent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug


def settings_from(*, command: str | None = None, **flags) -> Settings:
    return load_settings(flags, command=command)


def read_issue(issue: str) -> str:
    """`--issue` is the text itself or a path to a file holding it."""
    candidate = Path(issue).expanduser()
    looks_like_path = "\n" not in issue and len(issue) < 4096 and (
        candidate.suffix in (".md", ".txt", ".rst") or "/" in issue)
    try:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageProblem(f"cannot read the issue file {issue}: {exc.strerror}; check its permissions") from None
    if looks_like_path and " " not in issue:
        raise UsageProblem(f"issue file {issue} does not exist; pass the issue text itself or an existing file")
    if not issue.strip():
        raise UsageProblem("the issue is empty; pass --issue TEXT or --issue FILE")
    return issue


def resolve_inputs(repo: Optional[Path], issue: Optional[str], task: Optional[str], workdir: Path,
                   ref: Optional[str] = None):
    """Return (repo directory, issue text, label) from --repo/--issue or a bundled --task."""
    if task:
        from cwm_agent.bench import tasks as tasks_mod
        from cwm_agent.paths import TASKS_DIR

        name = tasks_mod.DEMO_TASK if task == "demo" else task
        source = Path(name) if Path(name).exists() else TASKS_DIR / name
        if not source.exists():
            raise UsageProblem(f"no task {task!r}; bundled tasks are in {TASKS_DIR} (or pass a task.json path)")
        loaded = tasks_mod.load_tasks(source)
        if len(loaded) != 1:
            raise UsageProblem(f"{source} holds {len(loaded)} tasks; solve takes one (use `cwm-agent eval` for many)")
        the_task = loaded[0]
        checkout = workdir / "repo"
        the_task.checkout(checkout)
        return checkout, issue and read_issue(issue) or the_task.problem_statement, the_task.instance_id
    if issue and (fetched := issue_from_url(issue, repo, ref, workdir)):
        return fetched
    repo = (repo or Path.cwd()).expanduser().resolve()
    if not repo.is_dir():
        raise UsageProblem(f"repository {repo} does not exist or is not a directory; pass --repo PATH")
    if not issue:
        raise UsageProblem("no issue given; pass --issue TEXT, --issue FILE or --issue URL (or --task demo)")
    return repo, read_issue(issue), repo.name


def issue_from_url(issue: str, repo: Optional[Path], ref: Optional[str], workdir: Path):
    """`--issue https://github.com/OWNER/REPO/issues/N`: (repo, text, label), the repository cloned
    into workdir/repo when no --repo is given; None when ``issue`` is not such a URL."""
    from cwm_agent.github.issues import clone, fetch_issue, parse_issue_url

    ref_ = parse_issue_url(issue)
    if ref_ is None:
        return None
    fetched = fetch_issue(ref_)
    if repo is None:
        target = workdir / "repo"
        if target.exists():
            raise UsageProblem(f"{target} exists already; pass --repo PATH or another --out")
        console.print(f"[dim]cloning {ref_.owner}/{ref_.repo}{' at ' + ref if ref else ''} into {target}[/]")
        repo = clone(ref_, target, git_ref=ref)
    repo = repo.expanduser().resolve()
    if not repo.is_dir():
        raise UsageProblem(f"repository {repo} does not exist or is not a directory; pass --repo PATH")
    return repo, fetched.text(), ref_.slug


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:40] or "run"


def _check_choices(format: Optional[str], sandbox: Optional[str]) -> None:
    if format not in (None, "cwm", "chat"):
        raise UsageProblem(f"--format must be cwm or chat, not {format!r}")
    if sandbox not in (None, "auto", "docker", "bwrap"):
        raise UsageProblem(f"--sandbox must be auto, docker or bwrap, not {sandbox!r}")


# The options solve and chat share, declared once.
_BASE_URL_OPTION = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint ending in /v1, e.g. http://gpu-box:8000/v1. Default: the embedded CPU model.")
_MODEL_OPTION = typer.Option(None, "--model", help="Model id on the endpoint (default: the first it serves).")
_API_KEY_OPTION = typer.Option(None, "--api-key", help="Bearer token for the endpoint (or CWM_AGENT_API_KEY).")
_FORMAT_OPTION = typer.Option(None, "--format", help="cwm | chat (default: cwm when the model id contains 'cwm').")
_TEMPERATURE_OPTION = typer.Option(None, "--temperature", help=TEMPERATURE_HELP)
_TOP_P_OPTION = typer.Option(None, "--top-p", help="Nucleus sampling of the model's turns (default 0.95, CWM's published setting).")
_IMAGE_OPTION = typer.Option(None, "--image", help="Sandbox image (default: the base image of `cwm-agent sandbox build`).")
_SANDBOX_OPTION = typer.Option(None, "--sandbox", help="docker | bwrap | auto (default auto: docker when its engine answers).")
_COMMAND_TIMEOUT_OPTION = typer.Option(None, "--command-timeout", help=f"Seconds per command (CWM's default {protocol.SESSION_TIMEOUT_SECONDS}).")
_MEMORY_OPTION = typer.Option(None, "--memory", help="Sandbox memory limit (default 4g).")
_BASH_ONLY_OPTION = typer.Option(False, "--bash-only", help="Offer only bash and submit (CWM's bash-only variant).")


@app.command()
def solve(
    repo: Optional[Path] = typer.Option(None, "--repo", help="Repository to work on (default: current directory). Never modified without --apply."),
    issue: Optional[str] = typer.Option(None, "--issue", help="The issue: its text, a path to a file holding it, or a GitHub issue URL (https://github.com/OWNER/REPO/issues/N; GITHUB_TOKEN for private ones)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="With an issue URL and no --repo: clone at this branch, tag or commit (default: the default branch)."),
    task: Optional[str] = typer.Option(None, "--task", help="A bundled task id (or `demo`) or a task.json path instead of --repo/--issue."),
    base_url: Optional[str] = _BASE_URL_OPTION,
    model: Optional[str] = _MODEL_OPTION,
    api_key: Optional[str] = _API_KEY_OPTION,
    format: Optional[str] = _FORMAT_OPTION,
    temperature: Optional[float] = _TEMPERATURE_OPTION,
    top_p: Optional[float] = _TOP_P_OPTION,
    image: Optional[str] = _IMAGE_OPTION,
    sandbox: Optional[str] = _SANDBOX_OPTION,
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help=f"Turn limit (CWM's default {protocol.MAX_TURNS}; at most this many minus one actions run)."),
    command_timeout: Optional[float] = _COMMAND_TIMEOUT_OPTION,
    memory: Optional[str] = _MEMORY_OPTION,
    wall_time: Optional[float] = typer.Option(None, "--wall-time", help="Stop after this many seconds (default: no limit)."),
    max_format_errors: Optional[int] = typer.Option(None, "--max-format-errors", help="End the episode after this many malformed replies in a row; 0: never (default 5)."),
    grade_unfinished: Optional[bool] = typer.Option(None, "--grade-unfinished/--no-grade-unfinished", help=GRADE_UNFINISHED_HELP + " With it, exit 0 and --apply take such a patch too."),
    bash_only: bool = _BASH_ONLY_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: a new folder under ./cwm-runs/)."),
    apply: bool = typer.Option(False, "--apply", help="Apply the patch to --repo after showing it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final result."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object for scripts (implies --quiet)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the model's full reasoning."),
    imagine: str = typer.Option("off", "--imagine", help=IMAGINE_HELP),
    imagine_tokens: Optional[int] = typer.Option(None, "--imagine-tokens", help="Token cap of one imagined output (default 4096)."),
    attempts: int = typer.Option(1, "--attempts", help="Patch episodes (CWM's test-time scaling above 1): the selected patch goes to patch.diff, with a table of the candidates and why it won."),
    test_attempts: Optional[int] = typer.Option(None, "--test-attempts", help="Test-generation episodes for --select tests (default: as many as --attempts)."),
    select_: str = typer.Option("tests", "--select", help="With --attempts above 1: tests (run the repository's tests and the generated ones against every candidate) | majority | first."),
) -> None:
    """Solve one issue: run an episode in a sandbox copy of the repository and write a patch.

    Writes patch.diff, trajectory.json, summary.md and trajectory.html to --out. Exit code 0: the episode
    finished (submitted, then summarised) with a patch that applies to the base; 1: it did
    not (an episode a limit ended keeps its last patch in patch.diff, not counted, unless
    --grade-unfinished); 2: bad input or broken infrastructure (no Docker, unreachable model,
    missing repo).

    Example: `cwm-agent solve --repo ~/src/mylib --issue issue.md --base-url http://gpu-box:8000/v1`
    """
    from cwm_agent.world.imagine import ImagineSpec
    from cwm_agent.cli.solve import SolveRequest, run_solve

    _check_choices(format, sandbox)
    settings = settings_from(base_url=base_url, model=model, api_key=api_key, format=format, image=image,
                             temperature=temperature, top_p=top_p,
                             sandbox=sandbox, max_turns=max_turns, command_timeout=command_timeout,
                             memory=memory, wall_time=wall_time, tools="bash-only" if bash_only else None,
                             max_format_errors=max_format_errors, grade_unfinished=grade_unfinished, command="solve")
    stamp = __import__("time").strftime("%Y%m%d-%H%M%S")
    out_dir = (out or Path("cwm-runs") / f"{stamp}-{_slug(task or (repo or Path.cwd()).resolve().name)}").resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(f"cannot create the output folder {out_dir}: {exc.strerror}; pass --out DIR") from None
    repo_dir, issue_text, label = resolve_inputs(repo, issue, task, out_dir, ref)
    spec = ImagineSpec.parse(imagine, max_tokens=imagine_tokens)
    request = SolveRequest(repo=repo_dir, issue=issue_text, label=label, out=out_dir, settings=settings, imagine=spec,
                           apply=apply and not task, host_repo=repo_dir if not task else None)
    if attempts < 1 or (test_attempts or 0) < 0:
        raise UsageProblem("--attempts must be at least 1 and --test-attempts at least 0")
    if select_ not in ("tests", "majority", "first"):
        raise UsageProblem(f"--select must be tests, majority or first, not {select_!r}")
    if attempts > 1:
        from cwm_agent.cli.solve import run_solve_scaled

        if spec.mode != "off":
            raise UsageProblem("--imagine works with one attempt; drop it or --attempts")
        tests = (attempts if test_attempts is None else test_attempts) if select_ == "tests" else 0
        code = run_solve_scaled(request, attempts=attempts, test_attempts=tests, method=select_, console=console,
                                quiet=quiet or json_out, json_out=json_out)
        raise typer.Exit(code)
    code = run_solve(request, console=console, quiet=quiet or json_out, json_out=json_out, verbose=verbose)
    raise typer.Exit(code)


@app.command()
def chat(
    repo: Optional[Path] = typer.Option(None, "--repo", help="Repository to work on (default: current directory). Changed only by /apply, after you say y."),
    issue: Optional[str] = typer.Option(None, "--issue", help="The task: its text, a path to a file holding it, or a GitHub issue URL (default: asked at the prompt)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="With an issue URL and no --repo: clone at this branch, tag or commit."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the session saved in this run folder (a fresh sandbox with its files; works after a crash or kill -9)."),
    mode: str = typer.Option("confirm", "--mode", help="confirm (ask before each action) | yolo (run everything) | human (you type the commands). Switch any time with /mode."),
    base_url: Optional[str] = _BASE_URL_OPTION,
    model: Optional[str] = _MODEL_OPTION,
    api_key: Optional[str] = _API_KEY_OPTION,
    format: Optional[str] = _FORMAT_OPTION,
    temperature: Optional[float] = _TEMPERATURE_OPTION,
    top_p: Optional[float] = _TOP_P_OPTION,
    image: Optional[str] = _IMAGE_OPTION,
    sandbox: Optional[str] = _SANDBOX_OPTION,
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help=f"Turn limit over the whole session (CWM's default {protocol.MAX_TURNS})."),
    command_timeout: Optional[float] = _COMMAND_TIMEOUT_OPTION,
    memory: Optional[str] = _MEMORY_OPTION,
    max_format_errors: Optional[int] = typer.Option(None, "--max-format-errors", help="End CWM's turn after this many malformed replies in a row; 0: never (default 5)."),
    bash_only: bool = _BASH_ONLY_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: a new folder under ./cwm-runs/)."),
) -> None:
    """Work on a repository together with CWM: approve, edit or reject each action, steer it, take the result.

    CWM works in a sandbox copy; your repository changes only when you /apply. At the
    approval prompt: Enter or `y` runs the action, `n MESSAGE` rejects it (MESSAGE goes to
    CWM), `e` edits it first, `a` allows its first word for the session. Ctrl-C stops the
    model or a command and asks what to tell CWM; Ctrl-C again leaves. /help lists the
    commands (/diff /undo /apply /mode /allowed /save /quit). The session is saved after
    every step: `cwm-agent chat --resume RUN` continues it. Exit code 0 when you leave with
    /quit or Ctrl-D, 130 after Ctrl-C, 2 for bad input or broken infrastructure.

    Example: `cwm-agent chat --repo ~/src/mylib --base-url http://gpu-box:8000/v1`
    """
    from cwm_agent.cli.chat import MODES, ChatRequest, load_session, run_chat

    _check_choices(format, sandbox)
    if mode not in MODES:
        raise UsageProblem(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    flags = dict(base_url=base_url, model=model, format=format, image=image, temperature=temperature, top_p=top_p,
                 sandbox=sandbox, max_turns=max_turns, command_timeout=command_timeout, memory=memory,
                 tools="bash-only" if bash_only else None, max_format_errors=max_format_errors)
    flags = {k: v for k, v in flags.items() if v is not None}
    saved = None
    if resume is not None:
        out_dir = resume.expanduser().resolve()
        try:
            saved = load_session(out_dir)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        flags = {**saved.get("flags", {}), **flags}  # what the session ran with, unless passed again
        repo = repo or Path(saved["repo"])
        issue_text, label = saved.get("issue"), saved.get("label") or Path(saved["repo"]).name
        mode = saved.get("mode", mode) if mode == "confirm" else mode
    else:
        stamp = __import__("time").strftime("%Y%m%d-%H%M%S")
        out_dir = (out or Path("cwm-runs") / f"{stamp}-chat-{_slug((repo or Path.cwd()).resolve().name)}").resolve()
        issue_text, label = None, None
        if issue and (fetched := issue_from_url(issue, repo, ref, out_dir)):
            repo, issue_text, label = fetched
        elif issue:
            issue_text = read_issue(issue)
    repo_dir = (repo or Path.cwd()).expanduser().resolve()
    if not repo_dir.is_dir():
        raise UsageProblem(f"repository {repo_dir} does not exist or is not a directory; pass --repo PATH")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(f"cannot create the run folder {out_dir}: {exc.strerror}; pass --out DIR") from None
    settings = settings_from(api_key=api_key, command="chat", **flags)
    request = ChatRequest(repo=repo_dir, issue=issue_text, label=label or repo_dir.name, out=out_dir,
                          settings=settings, flags=flags, mode=mode, resume=saved)
    raise typer.Exit(run_chat(request, console=console))


@app.command("github")
def github_command(
    label: str = typer.Option("cwm-agent", "--label", help="The issue label that starts a run."),
    command: str = typer.Option("/cwm", "--command", help="The comment command that starts a run (from an owner, member or collaborator; instructions may follow it)."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help=f"Turn limit (CWM's default {protocol.MAX_TURNS})."),
    draft: bool = typer.Option(True, "--draft/--no-draft", help="Open the pull request as a draft (default)."),
    branch_prefix: str = typer.Option("cwm-agent/", "--branch-prefix", help="Branches are PREFIX + issue-N (then -2, -3...)."),
    author: str = typer.Option("cwm-agent[bot] <cwm-agent[bot]@users.noreply.github.com>", "--author", help="The commit's author, 'Name <email>'."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint serving CWM, ending in /v1."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id on the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer token for the endpoint (or CWM_AGENT_API_KEY)."),
    format: Optional[str] = typer.Option(None, "--format", help="cwm | chat."),
    image: Optional[str] = typer.Option(None, "--image", help="Sandbox image (default: the base image of `cwm-agent sandbox build`)."),
    command_timeout: Optional[float] = typer.Option(None, "--command-timeout", help=f"Seconds per command (CWM's default {protocol.SESSION_TIMEOUT_SECONDS})."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: $RUNNER_TEMP/cwm-agent; the action uploads it)."),
) -> None:
    """The GitHub Action's entry point: answer an issue with a draft pull request.

    Reads the Actions environment (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_REPOSITORY,
    GITHUB_WORKSPACE, GITHUB_TOKEN, GITHUB_SERVER_URL, GITHUB_RUN_ID, GITHUB_API_URL). Runs when the
    issue gets --label, or on a --command comment from an owner, member or collaborator; anything
    else exits 0 touching nothing. Exit 0: a pull request was opened (or nothing to do); 1: the
    episode gave no patch that applies (the tracking comment says why); 2: set-up failed
    (environment, GitHub's API, the model's endpoint, Docker). See action.yml.
    """
    from cwm_agent.github.action import ActionEnv, ActionOptions, run_action

    if not base_url and not os.environ.get("CWM_AGENT_BASE_URL"):
        raise UsageProblem("no model endpoint: pass --base-url (the action's `base-url` input) pointing at a "
                           "server that serves CWM")
    settings = settings_from(base_url=base_url, model=model, api_key=api_key, format=format, image=image,
                             max_turns=max_turns, command_timeout=command_timeout, command="github")
    env = ActionEnv.from_environ()
    options = ActionOptions(label=label, command=command, draft=draft, branch_prefix=branch_prefix, author=author,
                            out=out)
    code = run_action(env, options, settings, log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    raise typer.Exit(code)


CONFIG_HELP = ("An eval configuration (TOML), e.g. evals/bundled.toml: the task set, model settings, limits, "
               "attempts, workers, imagination and grading as data (see evals/README.md). Layered above "
               "./cwm-agent.toml and below CWM_AGENT_* variables and these flags; report.json records the "
               "resolved configuration and the file's sha256.")


@app.command("eval")
def eval_command(
    tasks: Optional[str] = typer.Argument(None, help="Task set, as SWE-bench's harness takes it: a Hugging Face dataset name (SWE-bench/SWE-bench_Verified), a .parquet, a save_to_disk folder, a .jsonl or .json of rows; or a folder like tasks/, or `bundled`. Default: `tasks` of --config."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    split: Optional[str] = typer.Option(None, "--split", help="The split of a Hub dataset or a saved DatasetDict (default: test)."),
    pull: Optional[str] = typer.Option(None, "--pull", help="Task images (a row's `image`): missing (pull what the engine lacks, before the task's first attempt; default) | always | never (a missing image is an infrastructure error that says how to get it)."),
    prefetch: bool = typer.Option(False, "--prefetch", help="Pull every task image before the first attempt."),
    remove_images: Optional[bool] = typer.Option(None, "--remove-images/--keep-images", help="Remove each task image after its last attempt, to save disk (default: keep)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Where attempts run: threads (here, --workers at once; default) | ray (each attempt a Ray task on a node that announces a `docker` resource; pip install 'cwm-agent[ray]'). Results, trajectories and resume stay in --out on this machine."),
    address: Optional[str] = typer.Option(None, "--address", help="The Ray cluster for --backend ray (HOST:PORT of its head; default: RAY_ADDRESS, or the cluster this machine belongs to)."),
    instance_ids: Optional[list[str]] = typer.Option(None, "--instance-ids", help="Only these tasks (repeat the flag or separate ids with commas)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Eval folder; re-running with the same folder resumes. Default: cwm-runs/eval, or cwm-runs/NAME with --config evals/NAME.toml."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Episodes in parallel, each in its own container (default 1)."),
    attempts: Optional[int] = typer.Option(None, "--attempts", help="Attempts per task (pass@k, best-of-k; default 1)."),
    filter: Optional[str] = typer.Option(None, "--filter", help="Regex on instance ids."),
    slice_: Optional[str] = typer.Option(None, "--slice", help="START:STOP over the filtered tasks."),
    shuffle: Optional[int] = typer.Option(None, "--shuffle", help="Shuffle with this seed before slicing."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Re-run attempts that ended in an infrastructure error."),
    rerun: bool = typer.Option(False, "--rerun", help="Re-run finished attempts too."),
    grade: Optional[bool] = typer.Option(None, "--grade/--no-grade", help="Grade each attempt (default), or only produce predictions and grade later with `cwm-agent grade`."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint ending in /v1."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id on the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer token for the endpoint."),
    format: Optional[str] = typer.Option(None, "--format", help="cwm | chat."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help=TEMPERATURE_HELP),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling of the model's turns (default 0.95, CWM's published setting)."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help=f"Turn limit (CWM's default {protocol.MAX_TURNS}; at most this many minus one actions run)."),
    command_timeout: Optional[float] = typer.Option(None, "--command-timeout", help=f"Seconds per command (CWM's default {protocol.SESSION_TIMEOUT_SECONDS})."),
    max_format_errors: Optional[int] = typer.Option(None, "--max-format-errors", help="End an episode after this many malformed replies in a row; 0: never, as CWM's evaluation (default 0)."),
    grade_unfinished: Optional[bool] = typer.Option(None, "--grade-unfinished/--no-grade-unfinished", help=GRADE_UNFINISHED_HELP + " report.json records the rule."),
    bash_only: bool = typer.Option(False, "--bash-only", help="Offer only bash and submit."),
    imagine: Optional[str] = typer.Option(None, "--imagine", help=IMAGINE_HELP + " The report adds imagination accuracy per task. Default off."),
    imagine_tokens: Optional[int] = typer.Option(None, "--imagine-tokens", help="Token cap of one imagined output (default 4096)."),
    test_attempts: Optional[int] = typer.Option(None, "--test-attempts", help="Test-generation episodes per task (CWM's test_issue.py task), for --select tests (default 8 with it, else 0)."),
    select_: Optional[str] = typer.Option(None, "--select", help="Choose one patch per task: tests (CWM's test-time scaling: existing and generated tests run against every candidate) | majority (the most frequent patch) | first. With tests, --attempts and --test-attempts default to 8. Re-running with another --select on the same --out re-selects without new episodes."),
) -> None:
    """Run many episodes over a task set, grade them as SWE-bench does, and report.

    Resumable: a finished attempt is never re-run unless --rerun; infrastructure failures are
    not counted against the agent and --retry-errors re-runs exactly those. As in CWM's
    evaluation, an episode that a limit ended is not graded (empty model_patch, unresolved)
    unless --grade-unfinished. Writes
    predictions.jsonl (official format), results.jsonl, per-task trajectories and report.json
    (with the resolved configuration, so the run can be repeated from it), and report.html
    beside it: one self-contained page of the run, each attempt linked to its trajectory's page.

    --config FILE takes the whole run from an eval configuration (evals/*.toml: task set, model
    settings, limits, attempts, workers, imagination, grading); a flag, or the TASKS argument,
    overrides the file's value.

    Example: `cwm-agent eval --config evals/bundled.toml --base-url http://gpu:8000/v1`; without a
    file: `cwm-agent eval tasks/ --workers 2 --base-url http://gpu:8000/v1 --out runs/bundled`
    """
    from cwm_agent.bench import runner as evaluate
    from cwm_agent.cli.solve import connect_model
    from cwm_agent.cli.ui import EvalView, report_table
    from cwm_agent.config import read_config_file

    file = read_config_file(config, evaluate.EVAL_KEYS) if config is not None else None
    settings = load_settings(dict(base_url=base_url, model=model, api_key=api_key, format=format, max_turns=max_turns,
                                  temperature=temperature, top_p=top_p, command_timeout=command_timeout,
                                  tools="bash-only" if bash_only else None, max_format_errors=max_format_errors,
                                  grade_unfinished=grade_unfinished), command="eval", config_file=file)
    options = _eval_options(file, tasks=tasks, workers=workers, attempts=attempts,
                            filter=filter, slice=slice_, shuffle=shuffle, grade=grade, imagine=imagine,
                            imagine_tokens=imagine_tokens, test_attempts=test_attempts, select=select_, pull=pull,
                            remove_images=remove_images, backend=backend, address=address)
    if options.get("address") and options.get("backend") != "ray":
        raise UsageProblem("--address names a Ray cluster: add --backend ray")
    if options.get("tasks") is None:
        either = f"name one with `tasks = ...` in {config}" if config else "--config evals/NAME.toml"
        raise UsageProblem(f"no task set; pass TASKS (a folder like tasks/, a .jsonl of SWE-bench rows, or `bundled`) "
                           f"or {either}")
    if split is not None:
        options["split"] = split
    named = f" (`tasks` in {config})" if tasks is None and config else ""
    loaded = _load_task_set(evaluate, options, instance_ids, named)
    out = out or Path("cwm-runs") / (config.stem if config is not None else "eval")
    scaling = options.get("select") == "tests"
    default_k = evaluate.SCALING_DEFAULT if scaling else 1
    on_ray = options.get("backend") == "ray"
    # On Ray, without --workers, every `docker` slot of the cluster is used (0: no cap of our own).
    opts = evaluate.EvalOptions(out=out, workers=options.get("workers", 0 if on_ray else 1),
                                attempts=options.get("attempts", default_k),
                                backend=options.get("backend", "threads"), address=options.get("address"),
                                test_attempts=options.get("test_attempts", evaluate.SCALING_DEFAULT if scaling else 0),
                                select=options.get("select"), pull=options.get("pull", "missing"),
                                prefetch=prefetch, remove_images=options.get("remove_images", False),
                                filter=options.get("filter"), slice=options.get("slice"),
                                shuffle=options.get("shuffle"), retry_errors=retry_errors, rerun=rerun,
                                grade=options.get("grade", True),
                                imagine=_imagine_spec(options, file, flagged=(imagine, imagine_tokens) != (None, None)),
                                tasks=options["tasks"], split=options.get("split"), name=options.get("name"),
                                description=options.get("description"))
    client = connect_model(settings, console, quiet=False)
    with EvalView(console) as view:
        evaluate.run_eval(loaded, opts, settings, model=client, on_update=view.update)
    resolved = evaluate.run_config(settings, opts, file)
    data = evaluate.report(out, grade_unfinished=settings.grade_unfinished, config=resolved)
    console.print(report_table(data))
    if data.get("test_time_scaling"):
        _print_scaling(data["test_time_scaling"], reasons=False)
        console.print(f"[dim]selected patches: {out / 'predictions-selected.jsonl'} · why: {out / 'selection.jsonl'}[/]")
    if file is not None:
        console.print(f"[dim]config: {file.path} (sha256 {file.sha256[:12]}…)[/]")
    page = _write_eval_pages(out, data)
    console.print(f"[dim]predictions: {out / 'predictions.jsonl'} · report: {out / 'report.json'}"
                  + (f" · page: {page}" if page else "") + "[/]")


def _write_eval_pages(out: Path, data: dict) -> Optional[Path]:
    """report.html and the trajectories' pages (report/eval.py write_pages); a page that cannot be
    written is one yellow line, never a failed eval. Returns report.html, or None."""
    try:
        from cwm_agent.report.eval import write_pages

        page, problems = write_pages(out, data)
    except Exception as exc:
        page, problems = None, [f"report.html: {type(exc).__name__}: {exc}"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        err_console.print(f"[yellow]HTML page not written: {escape(problems[0])}{more}[/]", highlight=False)
    return page


def _load_task_set(evaluate, options: dict, instance_ids: Optional[list[str]], named: str = ""):
    """The tasks to run: the set (any form datasets.load_task_set takes), --instance-ids, and
    the rows that cannot run named with what they lack and left out."""
    from cwm_agent.bench.datasets import HUB_NAME, load_task_set, only, unrunnable

    source = evaluate.task_source(options["tasks"])
    if not source.exists() and not HUB_NAME.match(str(options["tasks"])):
        raise UsageProblem(f"no task set at {source}{named}; pass a folder like tasks/, a .jsonl, .json or .parquet "
                           "file, a save_to_disk folder, a Hugging Face dataset name or `bundled`")
    loaded = load_task_set(source if source.exists() else options["tasks"], split=options.get("split"))
    ids = [i.strip() for value in instance_ids or [] for i in value.split(",") if i.strip()]
    loaded = only(loaded, ids)
    reasons = [(t, why) for t in loaded if (why := unrunnable(t))]
    for _, why in reasons[:5]:
        err_console.print(f"[yellow]not run:[/] {escape(why)}", highlight=False, soft_wrap=True)
    if len(reasons) > 5:
        err_console.print(f"[yellow]not run: {len(reasons) - 5} more rows like these[/]")
    runnable = [t for t in loaded if not unrunnable(t)]
    if not runnable:
        raise UsageProblem(f"none of the {len(loaded)} rows can run (see above)")
    return runnable


def _imagine_spec(options: dict, file, *, flagged: bool):
    """The imagination spec; a bad value from the file names the file."""
    from cwm_agent.world.imagine import ImagineSpec

    try:
        return ImagineSpec.parse(options.get("imagine"), max_tokens=options.get("imagine_tokens"))
    except ConfigError as exc:
        raise ConfigError(f"{file.path}: {exc}" if file is not None and not flagged else str(exc)) from None


def _eval_options(file, **flags) -> dict:
    """The eval's own keys: the config file's, each overridden by a flag that was given (not None);
    values a run would choke on are refused with their origin (the file, or the flag)."""
    from cwm_agent.bench.runner import check_option

    merged = dict(file.options) if file is not None else {}
    for key, value in merged.items():
        check_option(key, value, str(file.path))
    for key, value in flags.items():
        if value is not None:
            check_option(key, value, "TASKS" if key == "tasks" else f"--{key.replace('_', '-')}")
            merged[key] = value
    return merged


@app.command()
def grade(
    predictions: Path = typer.Argument(..., help="predictions.jsonl in SWE-bench's format."),
    tasks: Path = typer.Argument(..., help="The task set the predictions are for."),
    workers: int = typer.Option(1, "--workers", "-w", help="Graders in parallel."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Grade predictions as SWE-bench does: apply the patch, run FAIL_TO_PASS and PASS_TO_PASS in a fresh container.

    Example: `cwm-agent grade cwm-runs/eval/predictions.jsonl tasks/`
    """
    from cwm_agent.bench import grade as grade_mod
    from cwm_agent.bench.tasks import load_tasks

    for path in (predictions, tasks):
        if not path.exists():
            raise UsageProblem(f"{path} does not exist")
    docker_client()
    with console.status("grading") as status:
        report = grade_mod.grade_report(predictions, load_tasks(tasks), workers=workers,
                                        on_result=lambda r: status.update(f"graded {r.instance_id}: {r.status}"))
    written = report.write(predictions.with_name(predictions.stem + ".report.json"))
    if json_out:
        print(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"resolved {report.resolved}/{report.submitted} ({report.rate:.1%})")
    for column in ("instance", "status", "FAIL_TO_PASS", "PASS_TO_PASS", "applied with", "detail"):
        table.add_column(column)
    for row in report.rows():
        style = "green" if row["resolved"] else "yellow"
        table.add_row(row["instance_id"], f"[{style}]{row['status']}[/]", str(row["fail_to_pass"]),
                      str(row["pass_to_pass"]), str(row["patch_applied_with"] or ""), row["detail"] or "")
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"[dim]report: {written}[/]")


@app.command("select")
def select_command(
    run_dir: Path = typer.Argument(..., help="An eval folder (its results.jsonl, tests.jsonl and per-task selection.json)."),
    method: str = typer.Option("tests", "--select", help="tests | majority | first."),
    json_out: bool = typer.Option(False, "--json", help="Print the report's test_time_scaling block as JSON."),
) -> None:
    """Choose one patch per task again from a finished eval, without running any episode.

    `tests` uses the executions saved in instances/ID/selection.json (run `eval --select tests`
    on the folder first to make them); `majority` and `first` need only results.jsonl.
    Rewrites selection.jsonl, predictions-selected.jsonl, report.json and report.html.
    """
    from cwm_agent.bench import runner as evaluate
    from cwm_agent.bench.datasets import load_task_set

    if method not in ("tests", "majority", "first"):
        raise UsageProblem(f"--select must be tests, majority or first, not {method!r}")
    report_path = run_dir / "report.json"
    if not (run_dir / "results.jsonl").is_file() or not report_path.is_file():
        raise UsageProblem(f"{run_dir} is not a finished eval folder (results.jsonl and report.json); "
                           "pass the --out of a `cwm-agent eval` run")
    config = json.loads(report_path.read_text(encoding="utf-8")).get("config") or {}
    recorded = config.get("eval") or {}
    tasks_path = recorded.get("tasks_path") or recorded.get("tasks")
    if not tasks_path:
        raise UsageProblem(f"{run_dir}'s report names no task set; selection needs its task rows")
    opts = evaluate.EvalOptions(out=run_dir, select=method)
    settings = Settings(**{k: v for k, v in (config.get("settings") or {}).items() if k != "api_key"})
    ids = {line_id for line_id, _ in evaluate.load_results(run_dir / "results.jsonl")}
    tasks = [t for t in load_task_set(tasks_path, split=recorded.get("split")) if t.instance_id in ids]
    evaluate.run_selection(tasks, opts, settings, run=False)
    data = evaluate.report(run_dir, config=config)
    _write_eval_pages(run_dir, data)  # report.html follows report.json
    scaling = data.get("test_time_scaling") or {}
    if json_out:
        print(json.dumps(scaling, indent=2))
        return
    _print_scaling(scaling, reasons=True)


def _print_scaling(scaling: dict, *, reasons: bool) -> None:
    """pass@1, pass@k, best@k, majority@k and first, with their intervals; each task's choice."""
    table = Table(title=f"test-time scaling: select {scaling.get('method')} · k = {scaling.get('k')} patches, "
                        f"{scaling.get('test_attempts')} generated tests per task")
    for column in ("measure", "resolved", "rate", "95% interval"):
        table.add_column(column)
    for name in ("pass@1", "pass@k", "best@k", "majority@k", "first"):
        row = scaling.get(name) or {}
        low, high = row.get("ci95", [0, 0])
        table.add_row(name, f"{row.get('resolved', 0)}/{row.get('of', 0)}", f"{row.get('rate', 0):.1%}",
                      f"{low:.1%}-{high:.1%}")
    console.print(table)
    cost = scaling.get("cost") or {}
    console.print(f"[dim]cost: candidates {cost.get('candidates', {}).get('seconds', 0)} s, test generation "
                  f"{cost.get('test_generation', {}).get('seconds', 0)} s, selection "
                  f"{cost.get('selection', {}).get('container_seconds', 0)} container-s[/]")
    if reasons:
        for task in scaling.get("per_task", []):
            console.print(f"[bold]{task['instance_id']}[/]: {escape(task.get('reason') or '')}", highlight=False)


@app.command()
def serve(
    model: Optional[str] = typer.Argument(None, help="Model to serve (default: facebook/cwm on a GPU, the embedded model without one)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default; 0.0.0.0 to serve a network)."),
    tensor_parallel: Optional[int] = typer.Option(None, "--tensor-parallel-size", help="GPUs to split the model over (default: as needed)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help=f"Context length (default: {protocol.CONTEXT_WINDOW} when it fits)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the vLLM command and exit."),
) -> None:
    """Start vLLM with the right flags for CWM on this machine's GPUs (or the embedded model on a CPU).

    One 80 GB GPU: fp8 weights and KV cache; one 141 GB GPU: bf16 at 131,072 tokens; several
    GPUs: tensor parallel. Prints the `--base-url` to use and serves until Ctrl-C.

    Example: `cwm-agent serve facebook/cwm --port 8000`
    """
    from cwm_agent.models.serve import ServeError, serve_main

    try:
        code = serve_main(model, port=port, host=host, tensor_parallel=tensor_parallel,
                          max_model_len=max_model_len, dry_run=dry_run, out=console.print)
    except ServeError as exc:
        raise UsageProblem(str(exc)) from None
    raise typer.Exit(code)


@tasks_app.command("generate")
def tasks_generate(
    source: str = typer.Argument("pypi:more-itertools==10.5.0", help="pypi:NAME==VERSION, an sdist, or a project folder with tests."),
    out: Path = typer.Option(Path("generated-tasks"), "--out", help="Where the task folders go."),
    count: int = typer.Option(50, "--count", help="Tasks to keep."),
    seed: int = typer.Option(0, "--seed", help="Seed of the mutation order."),
    jobs: int = typer.Option(2, "--jobs", help="Test runs in parallel."),
    timeout: float = typer.Option(60.0, "--timeout", help="Cap in seconds on one test-suite run of a mutant."),
    max_per_function: int = typer.Option(1, "--max-per-function", help="Tasks per function or class, for variety."),
    verify: str = typer.Option("auto", "--verify", help="Who checks gold and empty patches: docker (the grader, in the sandbox image) | local | auto."),
    python: Optional[str] = typer.Option(None, "--python", help="Run the suites with this interpreter on the host (default: in a sandbox container with docker, else this Python)."),
) -> None:
    """Make SWE-bench-style tasks from a real project by mutating its code (in the style of SWE-smith).

    Keeps mutants that make tests fail, derives FAIL_TO_PASS and PASS_TO_PASS, writes an issue from
    the failures, and keeps a task only when its gold patch resolves it and the empty patch does not.

    Example: `cwm-agent tasks generate pypi:more-itertools==10.5.0 --count 50 --out generated-tasks`
    """
    from cwm_agent.bench.generate import generate_tasks

    if verify not in ("auto", "local", "docker"):
        raise UsageProblem(f"--verify must be auto, local or docker, not {verify!r}")
    with console.status("generating tasks") as status:
        made = generate_tasks(source, out, count=count, seed=seed, jobs=jobs, timeout_per_mutant=timeout,
                              max_per_function=max_per_function, verify=verify, python=python,  # type: ignore[arg-type]
                              progress=lambda p: status.update(
                                  f"kept {p.kept}/{p.target} · tried {p.tried}/{p.candidates} · {p.message[:60]}"))
    console.print(f"[green]{len(made)} task(s)[/] in {out}; run them with `cwm-agent eval {out}`")


@app.command(cls=optional_value_command("--html"))
def show(
    trajectory: Path = typer.Argument(..., help="A trajectory.json (or the run folder holding one)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full reasoning and observations."),
    html: Optional[str] = typer.Option(None, "--html", metavar="[FILE]", help="Write a self-contained HTML page instead (no network needed to open it): to FILE, or RUN/trajectory.html when FILE is left out. Put it after RUN."),
    absolute_paths: bool = typer.Option(False, "--absolute-paths", help="With --html: keep this machine's paths (run folder, repository, home) in the page; by default they are scrubbed."),
) -> None:
    """Render a saved trajectory readably: each turn's reasoning, action and observation.

    With --html, writes one HTML page instead (timeline, turns, imagination, patch; j/k and /
    to move and search) and prints its path.

    Example: `cwm-agent show cwm-runs/20261125-120000-mylib/`, `cwm-agent show RUN --html`
    """
    path = trajectory / "trajectory.json" if trajectory.is_dir() else trajectory
    if not path.is_file():
        raise UsageProblem(f"no trajectory at {path}; pass a trajectory.json or a run folder")
    if absolute_paths and html is None:
        raise UsageProblem("--absolute-paths goes with --html")
    if html is not None:
        from cwm_agent.report.trajectory import write_html

        try:
            written = write_html(path, Path(html).expanduser() if html else None, absolute_paths=absolute_paths)
        except (ValueError, OSError) as exc:
            raise UsageProblem(f"cannot write the HTML page of {path}: {exc}") from None
        console.print(str(written), highlight=False, soft_wrap=True)
        return
    from cwm_agent import trajectory as traj_mod
    from cwm_agent.cli.ui import render_trajectory

    try:
        data = traj_mod.load(path)
    except (ValueError, OSError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from None
    render_trajectory(console, data, verbose=verbose)


def _cwm_model(base_url: Optional[str], model: Optional[str], api_key: Optional[str], format: Optional[str], what: str):
    """A CWM completions client for traces and the debugger (the embedded model cannot do them)."""
    if not base_url:
        raise UsageProblem(f"{what} needs CWM: pass --base-url of a vLLM serving it, e.g. http://gpu-box:8000/v1")
    from cwm_agent.models.connect import connect

    settings = settings_from(base_url=base_url, model=model, api_key=api_key, format=format)
    return connect(base_url=settings.base_url, model=settings.model, api_key=settings.api_key,
                   format=settings.format, retries=settings.retries)


@app.command()
def trace(
    file: Path = typer.Argument(..., help="The Python file whose functions to trace."),
    call: str = typer.Option(..., "--call", help="The entry call, e.g. 'f(\"a\")' (evaluated against the file's functions)."),
    entry: Optional[str] = typer.Option(None, "--entry", help="Trace from this function (default: the one the call names)."),
    predict: bool = typer.Option(False, "--predict", help="Ask the model for the same trace, frame by frame, and score it (needs --base-url)."),
    teacher_forcing: bool = typer.Option(False, "--teacher-forcing", help="With --predict: predict each frame from the true frames before it."),
    halt_steps: Optional[int] = typer.Option(None, "--halt-steps", help="Does the call return within N steps? (and the model's answer, with --predict)"),
    max_steps: int = typer.Option(10_000, "--max-steps", help="Stop the ground truth after this many frames."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds the traced call may run."),
    temperature: float = typer.Option(0.6, "--temperature", help="Sampling temperature of predicted frames (CWM's demo: 0.6)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="vLLM endpoint serving CWM, ending in /v1."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id on the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer token for the endpoint."),
    format: Optional[str] = typer.Option(None, "--format", help="cwm (needed; default when the id contains 'cwm')."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (frames, prediction, metrics)."),
    raw: bool = typer.Option(False, "--raw", help="Print the prompt and the trace exactly as CWM reads them."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the trace as one self-contained HTML page (frame by frame, the model's prediction beside it with --predict, where they part marked)."),
) -> None:
    """Ground-truth execution trace of a call in CWM's trace format, and the model's prediction next to it.

    With --predict, reports CWM's metrics: per-step state and line exact match, the first
    divergence, and whether the return value matches.

    Example: `cwm-agent trace demo.py --call 'f("a")' --predict --base-url http://gpu-box:8000/v1`
    """
    from cwm_agent.world import trace_predict
    from cwm_agent.cli import trace_view
    from cwm_agent.world.trace import halts_within, run_trace

    if not file.is_file():
        raise UsageProblem(f"no file {file}; pass the Python file whose function to trace")
    if halt_steps is not None and halt_steps < 1:
        raise UsageProblem("--halt-steps must be at least 1")
    client = _cwm_model(base_url, model, api_key, format, "--predict") if predict else None
    truth = run_trace(file, call, entry=entry, max_steps=max_steps, timeout=timeout)
    if truth.entry_function is None:
        raise UsageProblem(f"{call} never entered a function of {file} ({truth.error or truth.stop_reason}); "
                           "pass a call of a function defined there")
    report = None
    if client is not None:
        predictor = trace_predict.FramePredictor(client, temperature=temperature)
        report = trace_predict.compare_with_model(truth, predictor, teacher_forcing=teacher_forcing,
                                                  halt_steps=halt_steps)
    halt = report.get("halt") if report else None
    if halt_steps is not None and halt is None:
        halt = {"steps": halt_steps, "truth": halts_within(file, call, halt_steps, timeout=timeout)}
    if json_out:
        print(trace_predict.report_json({"file": str(file), "call": call, "truth": trace_predict.truth_dict(truth),
                                         **(report or {}), **({"halt": halt} if halt else {})}))
    elif raw:
        print(truth.prompt + truth.text)
        if report:
            print("\n--- model ---\n" + report["prompt"] + "".join(report["given"]) + report["prediction"]["text"])
    else:
        trace_view.render(console, truth, report, halt=halt)
    if html is not None:
        from cwm_agent.report.trace import write_html

        try:
            written = write_html(html, truth, report, halt=halt)
        except OSError as exc:
            raise UsageProblem(f"cannot write the HTML page {html}: {exc}") from None
        (err_console if json_out or raw else console).print(f"[dim]page: {written}[/]", highlight=False)


@app.command("debug")
def debug_command(
    file: Path = typer.Argument(..., help="The Python file; mark the function to start from with `# << START_OF_TRACE`."),
    call: Optional[str] = typer.Option(None, "--call", help="Bind the arguments by running this call, e.g. 'f(\"a\")' (default: the model samples them)."),
    entry: Optional[str] = typer.Option(None, "--entry", help="Start from this function instead of the marked one."),
    command: Optional[list[str]] = typer.Option(None, "--command", "-x", help="Run this debugger command first (repeatable)."),
    temperature: float = typer.Option(0.6, "--temperature", help="Sampling temperature of predicted frames."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds the real run (ground truth) may take."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="vLLM endpoint serving CWM, ending in /v1."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id on the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer token for the endpoint."),
    format: Optional[str] = typer.Option(None, "--format", help="cwm (needed; default when the id contains 'cwm')."),
) -> None:
    """The neural debugger: pdb-style stepping through frames CWM predicts.

    Commands: step, next (forces a call's return), out, continue, back, print, set NAME VALUE,
    reset, list, where, break, help, quit. Where the program can run with the same arguments,
    every frame is marked where the prediction and the real run part. Commands come from -x,
    then from stdin (a prompt when it is a terminal).

    Example: `cwm-agent debug demo.py --call 'f("a")' --base-url http://gpu-box:8000/v1`
    """
    from cwm_agent.cli.debugger import NeuralDebugger
    from cwm_agent.world.trace_predict import FramePredictor

    if not file.is_file():
        raise UsageProblem(f"no file {file}; pass the Python file to debug")
    client = _cwm_model(base_url, model, api_key, format, "the neural debugger")
    debugger = NeuralDebugger(FramePredictor(client, temperature=temperature), file, console=console,
                              entry=entry, call=call, timeout=timeout)
    debugger.show_start()
    debugger.run(command or [])
    if debugger.quit:
        return
    if sys.stdin.isatty():
        debugger.interact()
    else:
        debugger.run(line.rstrip("\n") for line in sys.stdin)


@app.command("imagine-report")
def imagine_report(
    trajectories: list[Path] = typer.Argument(..., help="trajectory.json files, or folders holding them (searched recursively)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Imagination accuracy by command kind (ls/cat/grep, tests, python, git, other) over saved trajectories.

    Example: `cwm-agent imagine-report cwm-runs/eval/instances/`
    """
    from cwm_agent.world import imagine

    try:
        data = imagine.report(trajectories)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageProblem(str(exc)) from None
    if json_out:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"imagination accuracy · {data['with_imagination']} of {data['trajectories']} trajectories "
                        "imagined something")
    for name in ("command kind", "turns", "scored", "exact", "line similarity", "first line", "error/timeout",
                 "+tokens/turn"):
        table.add_column(name, justify="left" if name == "command kind" else "right")

    def row(name: str, s: dict) -> list[str]:
        pct = [("-" if s[k] is None else f"{s[k]:.0%}") for k in ("exact", "line_similarity", "first_line",
                                                                  "error_agreement")]
        tokens = f"{s['prompt_tokens_per_turn']:,.0f} / {s['completion_tokens_per_turn']:,.0f}"
        return [name, str(s["turns"]), str(s["scored"]), *pct, tokens]

    for kind, summary in data["by_kind"].items():
        table.add_row(*row(kind, summary))
    table.add_row(*row("all", data["overall"]), style="bold")
    console.print(table)
    console.print("[dim]+tokens/turn: extra prompt / completion tokens the imagination requests cost per turn[/]")



@app.command()
def doctor(
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Model endpoint to check (ends in /v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id on that endpoint."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox", help="docker | bwrap | auto"),
) -> None:
    """Check Docker, the sandbox image, the model and packages; print the fix for what is missing.

    Example: `cwm-agent doctor --base-url http://gpu-box:8000/v1`
    """
    from cwm_agent.cli.doctor import run_checks

    settings = settings_from(base_url=base_url, model=model, sandbox=sandbox)
    table = Table(title=f"cwm-agent {__version__} doctor", show_lines=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    table.add_column("fix")
    checks = run_checks(settings)
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
        table.add_row(check.name, mark, check.detail, f"[bold]{check.fix}[/]" if check.fix else "")
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed.[/] Run the commands in the fix column, then try again.")
        raise typer.Exit(1)
    console.print("[green]All green.[/]")


@sandbox_app.command("build")
def sandbox_build(
    method: str = typer.Option("auto", "--method", help="auto | dockerfile | offline (mmdebstrap, no registry)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the recipe has not changed."),
) -> None:
    """Build the base sandbox image (Debian bookworm with git, python3, pytest).

    The tag carries the package version and a hash of the recipe, so it is rebuilt only when the recipe changes.

    Example: `cwm-agent sandbox build`
    """
    from cwm_agent.sandbox import image

    if method not in ("auto", "dockerfile", "offline"):
        raise UsageProblem(f"--method must be auto, dockerfile or offline, not {method!r}")
    client = docker_client()
    with console.status("building the sandbox image") as status:
        name = image.build_image(client, method=method, force=force,
                                 progress=lambda msg: status.update(f"[dim]{msg[:100]}"))
    console.print(f"[green]ready[/] {name} ({image.image_size_mb(client, name):.0f} MB)")


@app.command()
def cleanup() -> None:
    """Remove containers (label `cwm-agent`) and repository copies left behind by killed runs.

    Example: `cwm-agent cleanup`
    """
    from cwm_agent.sandbox.docker import cleanup_orphans

    containers, copies = cleanup_orphans(docker_client())
    console.print(f"removed {containers} container(s) and {copies} repository cop{'y' if copies == 1 else 'ies'}")


def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        raise UsageProblem("the Docker engine is not reachable; start it with: bash scripts/install-docker.sh") from None


def _known_errors() -> tuple[type[BaseException], ...]:
    # Imported here, only once a command has failed: `--help` starts faster without them.
    from cwm_agent.bench.generate import GenerateError
    from cwm_agent.bench.grade import GradeError
    from cwm_agent.bench.ray_backend import ClusterError
    from cwm_agent.bench.swebench_export import ExportError
    from cwm_agent.bench.tasks import TaskError
    from cwm_agent.github.action import ActionError
    from cwm_agent.github.api import GitHubError
    from cwm_agent.models.client import ModelError
    from cwm_agent.sandbox.base import SandboxError
    from cwm_agent.sandbox.patch import PatchError

    return (UsageProblem, ConfigError, SandboxError, ModelError, PatchError, TaskError, GradeError,
            ExportError, GenerateError, GitHubError, ActionError, ClusterError)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become one line and exit 2, never a traceback."""
    try:
        result = app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except _known_errors() as exc:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, unless --debug
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                          "(run with --debug for the traceback, and please report it)", highlight=False, soft_wrap=True)
        sys.exit(3)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
