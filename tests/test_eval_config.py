"""Eval configurations (evals/*.toml, `cwm-agent eval --config`): parsing, layering, errors, and one
run end to end against the scripted model (the only stand-in), with real containers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cwm_agent import protocol
from cwm_agent.bench import runner as evaluate
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.config import ConfigError, load_settings, read_config_file
from cwm_agent.paths import PROJECT_ROOT, TASKS_DIR
from cwm_agent.testing.scripted_server import ScriptedServer

EVALS = PROJECT_ROOT / "evals"
SHIPPED = sorted(EVALS.glob("*.toml"))
TASK = "demo-slugify-unicode"


def resolve(path: Path, flags: dict | None = None, environ: dict | None = None, *, user: Path | None = None,
            project: Path | None = None):
    """The settings and eval options `cwm-agent eval --config path` would run with."""
    file = read_config_file(path, evaluate.EVAL_KEYS)
    nothing = path.parent / "no-such-config.toml"
    settings = load_settings(flags, command="eval", environ=environ or {}, config_file=file,
                             user_config=user or nothing, project_config=project or nothing)
    return file, settings


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`cwm-agent ARGS` in `cwd`, with a HOME of its own and no CWM_AGENT_* from this shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CWM_AGENT_")}
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "cwm_agent.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**clean, "HOME": str(home), "COLUMNS": "200", **(env or {})})


# --- the shipped files ------------------------------------------------------------------------


def test_the_three_configurations_of_the_issue_ship():
    assert {p.name for p in SHIPPED} >= {"bundled.toml", "generated-more-itertools.toml", "swebench-verified-cwm.toml"}
    assert (EVALS / "README.md").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_parses_resolves_and_says_how_to_run_it(path: Path):
    file, settings = resolve(path)
    assert file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file.options["tasks"] and file.options["name"] == path.stem
    text = path.read_text()
    assert text.startswith("#") and f"cwm-agent eval --config evals/{path.name}" in text
    # CWM's published sampling in every shipped run
    assert (settings.temperature, settings.top_p) == (1.0, 0.95)
    opts = evaluate.EvalOptions(out=Path("x"), workers=file.options["workers"], attempts=file.options["attempts"],
                                tasks=file.options["tasks"])
    assert opts.public()["tasks"] == file.options["tasks"]


def test_bundled_config_names_the_bundled_tasks_wherever_the_package_lies():
    file, _ = resolve(EVALS / "bundled.toml")
    assert evaluate.task_source(file.options["tasks"]) == TASKS_DIR
    assert len(load_tasks(evaluate.task_source(file.options["tasks"]))) >= 10


def test_generated_config_gives_the_command_that_makes_its_tasks():
    path = EVALS / "generated-more-itertools.toml"
    file, _ = resolve(path)
    assert file.options["tasks"] == "generated-tasks"
    assert "cwm-agent tasks generate pypi:more-itertools==10.5.0 --count 50 --out generated-tasks" in path.read_text()


def test_swebench_verified_cwm_is_exactly_cwms_published_settings():
    path = EVALS / "swebench-verified-cwm.toml"
    file, s = resolve(path)
    assert (s.max_turns, s.context_window, s.turn_tokens, s.command_timeout) == (128, 131_072, 65_536, 120.0)
    assert (s.temperature, s.top_p, s.max_format_errors, s.grade_unfinished) == (1.0, 0.95, 0, False)
    assert (s.format, s.tools, s.reasoning) == ("cwm", "all", True)
    # the same numbers protocol.py renders into CWM's system prompt
    assert (s.max_turns, s.context_window, s.turn_tokens, s.command_timeout) == (
        protocol.MAX_TURNS, protocol.CONTEXT_WINDOW, protocol.TURN_TOKEN_LIMIT, protocol.SESSION_TIMEOUT_SECONDS)
    assert file.options["attempts"] == 1 and file.options["grade"] is True and file.options["tasks"].endswith(".jsonl")
    text = path.read_text()
    for cited in ("github.com/facebookresearch/cwm", "MODEL_CARD.md", "evals/README.md", "53.9", "65.8",
                  "mean of 4", "best-of-16", "SWE-bench_Verified"):
        assert cited in text


def test_the_tts_config_is_cwms_test_time_scaling_recipe():
    path = EVALS / "swebench-verified-cwm-tts.toml"
    file, s = resolve(path)
    assert (file.options["attempts"], file.options["test_attempts"], file.options["select"]) == (40, 40, "tests")
    assert (s.temperature, s.top_p, s.max_turns, s.max_format_errors, s.grade_unfinished) == (1.0, 0.95, 128, 0, False)
    text = path.read_text()
    for cited in ("65.8", "best@16", "swerl_testgen_tool.py", "top-5", "cwm-agent select", "GPU cluster"):
        assert cited in text


# --- layering ---------------------------------------------------------------------------------


def test_the_config_file_lies_above_the_toml_files_and_below_environment_and_flags(tmp_path: Path):
    user = tmp_path / "user.toml"
    user.write_text('memory = "1g"\nmax_turns = 10\nbase_url = "http://user:1/v1"\n')
    project = tmp_path / "cwm-agent.toml"
    project.write_text("max_turns = 20\ntemperature = 0.9\ncommand_timeout = 30\npids = 77\n")
    config = tmp_path / "run.toml"
    config.write_text("max_turns = 128\ntemperature = 0.2\ncommand-timeout = 60\ntop_p = 0.5\nworkers = 8\n"
                      'tasks = "bundled"\n')
    env = {"CWM_AGENT_COMMAND_TIMEOUT": "45"}
    file, s = resolve(config, {"top_p": 0.8, "temperature": None}, env, user=user, project=project)
    assert s.base_url == "http://user:1/v1" and s.memory == "1g"  # only the user file sets them
    assert s.pids == 77  # only ./cwm-agent.toml sets it
    assert (s.max_turns, s.temperature) == (128, 0.2)  # the file beats ./cwm-agent.toml and the user file
    assert s.command_timeout == 45.0  # CWM_AGENT_* beats the file
    assert s.top_p == 0.8  # a flag beats the file; a flag left at None does not
    assert s.max_format_errors == 0  # eval's own default still lies under everything
    assert file.options == {"workers": 8, "tasks": "bundled"}  # the eval's keys are not settings
    _, flagged = resolve(config, {"max_turns": 5}, {"CWM_AGENT_TEMPERATURE": "0.3"}, project=project)
    assert (flagged.max_turns, flagged.temperature) == (5, 0.3)


def test_unknown_keys_and_bad_types_name_the_file_and_the_key(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("turbo = true\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'turbo'; known: .*tasks.*temperature"):
        read_config_file(bad, evaluate.EVAL_KEYS)
    for line, key in [('max_turns = "many"', "max_turns"), ("temperature = true", "temperature"),
                      ("workers = 2.5", "workers"), ('grade = "maybe"', "grade"), ("tasks = 3", "tasks"),
                      ('format = "cmw"', "format"), ("memory = [1]", "memory")]:
        bad.write_text(line + "\n")
        with pytest.raises(ConfigError, match=rf"bad\.toml: {key} must be"):
            read_config_file(bad, evaluate.EVAL_KEYS)


# --- the command line, before any episode -------------------------------------------------------


def failing(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    return " ".join(out.stderr.split())


def test_eval_cli_refuses_an_unknown_key_and_a_bad_type_with_exit_2(tmp_path: Path):
    config = tmp_path / "mine.toml"
    config.write_text('tasks = "bundled"\nwokers = 2\n')
    message = failing(cli("eval", "--config", str(config), cwd=tmp_path))
    assert "mine.toml" in message and "unknown key 'wokers'" in message and "workers" in message
    config.write_text('tasks = "bundled"\ntemperature = "hot"\n')
    message = failing(cli("eval", "--config", str(config), cwd=tmp_path))
    assert "mine.toml" in message and "temperature must be a number, got 'hot'" in message
    config.write_text('tasks = "bundled"\nslice = "five"\n')
    assert "mine.toml: slice must be START:STOP" in failing(cli("eval", "--config", str(config), cwd=tmp_path))
    config.write_text('tasks = "bundled"\nimagine = "sometimes"\n')
    assert "mine.toml" in failing(cli("eval", "--config", str(config), cwd=tmp_path))
    message = failing(cli("eval", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path))
    assert "absent.toml" in message


def test_eval_cli_needs_a_task_set_from_the_argument_or_the_file_and_the_argument_wins(tmp_path: Path):
    message = failing(cli("eval", cwd=tmp_path))
    assert "no task set; pass TASKS" in message and "--config" in message
    config = tmp_path / "mine.toml"
    config.write_text('description = "no tasks here"\n')
    assert "tasks = ..." in failing(cli("eval", "--config", str(config), cwd=tmp_path))
    config.write_text('tasks = "not-here"\n')
    message = failing(cli("eval", "--config", str(config), cwd=tmp_path))
    assert "not-here" in message and "`tasks` in" in message  # relative to the current directory
    config.write_text('tasks = "bundled"\n')
    message = failing(cli("eval", "elsewhere", "--config", str(config), cwd=tmp_path))
    assert "no task set at elsewhere" in message  # TASKS beats `tasks`


def test_eval_help_explains_config():
    out = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "eval", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "400"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "evals/bundled.toml" in out.stdout and "sha256" in out.stdout


# --- one run end to end -------------------------------------------------------------------------


def act(tool: str, body: str) -> str:
    return "Thinking.\n</think>\n" + protocol.render_action(protocol.Action(tool, body))


def solves_the_task():
    """Writes the gold patch, submits it, then summarises (a finished episode)."""
    gold = next(t.patch for t in load_tasks(TASKS_DIR) if t.instance_id == TASK)

    def reply(request):
        turn = request["prompt"].count("<|start_header_id|>assistant")
        return [act("bash", f"cat > fix.patch <<'EOF_PATCH'\n{gold}EOF_PATCH"), act("submit", "fix.patch"),
                "Done.\n</think>\nSummary: applied the fix."][min(turn - 1, 2)]
    return reply


@pytest.mark.docker
def test_eval_runs_from_a_config_file_and_report_json_holds_the_resolved_configuration(tmp_path: Path, sandbox_image):
    (tmp_path / "cwm-agent.toml").write_text('temperature = 0.9\ntop_p = 0.9\nmemory = "3g"\n')
    config = tmp_path / "my-eval.toml"
    config.write_text(f'# a test run\nname = "mine"\ntasks = "bundled"\nfilter = "^{TASK}$"\nworkers = 3\n'
                      "attempts = 1\ngrade = true\ntemperature = 0.2\ntop_p = 0.5\nmax_turns = 128\n"
                      "command_timeout = 60\n")
    with ScriptedServer([solves_the_task()] * 6, api_key="sk-test-secret") as server:
        done = cli("eval", "--config", "my-eval.toml", "--no-grade", "--base-url", server.base_url, "--max-turns", "5",
                   "--workers", "1", cwd=tmp_path, timeout=600,
                   env={"CWM_AGENT_COMMAND_TIMEOUT": "45", "CWM_AGENT_API_KEY": "sk-test-secret"})
        requests = [body for _, body in server.generation_requests()]
    assert done.returncode == 0, done.stdout + done.stderr
    assert requests and all((r["temperature"], r["top_p"]) == (0.2, 0.5) for r in requests)  # the file's
    out = tmp_path / "cwm-runs" / "my-eval"  # the default --out of --config FILE
    text = (out / "report.json").read_text()
    report = json.loads(text)
    assert report["exits"] == {"submitted": 1} and report["instances"][0]["resolved"] is None  # --no-grade
    resolved = report["config"]
    assert resolved["file"] == str(config.resolve())
    assert resolved["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    s = resolved["settings"]
    assert (s["temperature"], s["top_p"]) == (0.2, 0.5)  # the file beats ./cwm-agent.toml
    assert s["memory"] == "3g"  # what only ./cwm-agent.toml says still counts
    assert s["max_turns"] == 5  # the flag beats the file
    assert s["command_timeout"] == 45.0  # CWM_AGENT_* beats the file
    assert s["max_format_errors"] == 0 and s["base_url"] == server.base_url
    assert s["api_key"] == "***" and "sk-test-secret" not in text
    e = resolved["eval"]
    assert (e["name"], e["tasks"], e["tasks_path"], e["filter"]) == ("mine", "bundled", str(TASKS_DIR), f"^{TASK}$")
    assert (e["workers"], e["attempts"], e["grade"], e["imagine"]) == (1, 1, False, "off")  # flags beat the file
    trajectory = json.loads((out / "instances" / TASK / "attempt-1" / "trajectory.json").read_text())
    assert trajectory["config"]["temperature"] == 0.2 and trajectory["config"]["max_turns"] == 5

    # the same file, a sampling flag and a variable over it; no --config: nothing recorded of a file
    with ScriptedServer([solves_the_task()] * 12) as server:
        again = cli("eval", "--config", "my-eval.toml", "--no-grade", "--base-url", server.base_url, "--top-p", "0.8",
                    "--out", "second", cwd=tmp_path, timeout=600, env={"CWM_AGENT_TEMPERATURE": "0.4"})
        requests = [body for _, body in server.generation_requests()]
        plain = cli("eval", "bundled", "--filter", f"^{TASK}$", "--no-grade", "--base-url", server.base_url,
                    "--out", "plain", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert requests and all((r["temperature"], r["top_p"]) == (0.4, 0.8) for r in requests)
    assert json.loads((tmp_path / "second" / "report.json").read_text())["config"]["eval"]["workers"] == 3
    assert plain.returncode == 0, plain.stdout + plain.stderr
    bare = json.loads((tmp_path / "plain" / "report.json").read_text())["config"]
    assert (bare["file"], bare["sha256"]) == (None, None)
    assert (bare["settings"]["temperature"], bare["eval"]["tasks"]) == (0.9, "bundled")  # ./cwm-agent.toml, no file
