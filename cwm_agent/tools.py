"""The model's tools: bash, edit, create, submit, each run in the sandbox's bash session.

`execute(action, sandbox)` turns one parsed Action into the feedback string CWM
was trained on. Everything runs through `sandbox.run`, the model's own
persistent session, so relative paths resolve against the cwd the model `cd`-ed
to, exactly as in CWM's scaffold:

- bash: the body, verbatim.
- edit / create: sandbox/edit.py and sandbox/create.py, run by the sandbox's
  python3. The body never touches the shell: it travels base64-encoded in a
  quoted here-document (base64 has no "_", the terminator does), so quotes,
  `$(...)`, here-doc terminators, CRLF, NUL or a missing final newline all
  arrive byte for byte. The scripts are installed on first use into
  HELPER_DIR (named by their content hash, so a changed script is a new dir);
  if the model deletes them, the next call notices and reinstalls.
- submit: reads the patch file through the session (base64 again, so the
  exact bytes come back) and checks it as CWM did.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from functools import cache

from cwm_agent import protocol
from cwm_agent.paths import SANDBOX_DIR
from cwm_agent.protocol import Action
from cwm_agent.sandbox.base import CommandResult, Sandbox, SandboxError
from cwm_agent.sandbox.patch import heredoc_b64

HELPER_SCRIPTS = ("edit", "create")
HELPER_ROOT = "/tmp/.cwm-agent"
# Printed by the wrapper when a helper script is gone (the model may rm -rf /tmp/.cwm-agent).
MISSING_MARKER = "__CWM_AGENT_HELPER_MISSING__"
# Users can point the helpers at another interpreter, as CWM's PYPLUGIN_PYTHON_PATH did.
PYTHON = '"${CWM_AGENT_PYTHON:-python3}"'


# What the model reads after its session was killed and restarted (CWM's remote/session.py).
RESTART_FEEDBACK = {
    "timeout": protocol.FEEDBACK["session_timeout"],
    "overflow": protocol.FEEDBACK["session_output_limit"],
    "died": protocol.FEEDBACK["session_died"],
}


def command_feedback(result: CommandResult) -> str:
    """What the model sees of one command: its output (stdout and stderr merged), or the restart notice."""
    return result.output if result.ok else RESTART_FEEDBACK[result.status]


@dataclass
class ToolResult:
    feedback: str  # the exact text that goes inside <output>
    submitted_patch: str | None = None  # set only by a successful submit: the file's exact content
    command: CommandResult | None = None  # the last session command this tool ran


def execute(action: Action, sandbox: Sandbox, *, task: str = "patch") -> ToolResult:
    """Run one tool call in the sandbox and return CWM's feedback for it. In a test-generation
    episode (``task="test"``) submit takes any readable file, as CWM's `submit_file`.

    parse_action has already refused tools the episode does not offer. Raises SandboxError
    only when the sandbox itself fails.
    """
    if action.tool == "submit" and task == "test":
        return _submit_test(action.body, sandbox)
    runner = _TOOLS.get(action.tool)
    if runner is None:
        return ToolResult(protocol.FEEDBACK["no_such_tool"].format(tool=action.tool))
    return runner(action.body, sandbox)


def _bash(body: str, sandbox: Sandbox) -> ToolResult:
    result = sandbox.run(body)
    return ToolResult(command_feedback(result), command=result)


# --- edit / create -------------------------------------------------------------------------

@cache
def _script(name: str) -> bytes:
    return (SANDBOX_DIR / f"{name}.py").read_bytes()


@cache
def helper_dir() -> str:
    """Where the helper scripts live in a sandbox: one dir per version of the scripts."""
    digest = hashlib.sha256()
    for name in HELPER_SCRIPTS:
        digest.update(name.encode() + b"\0" + _script(name))
    return f"{HELPER_ROOT}/{digest.hexdigest()[:12]}"


def install_helpers(sandbox: Sandbox) -> str:
    """Write edit.py and create.py into the sandbox through its session; return their dir.

    Needs nothing from the sandbox but bash, base64 and a writable /tmp, so it
    works the same on Docker, bubblewrap and any image. Each file is written
    under a temporary name and renamed, so a half-written script never runs.
    It runs in a subshell: the model's cwd, variables and options stay as they were.
    """
    lines = [f"( set -e; umask 022; mkdir -p {shlex.quote(helper_dir())}"]
    for name in HELPER_SCRIPTS:
        final = shlex.quote(f"{helper_dir()}/{name}.py")
        lines.append(f"base64 -d >| {final}.tmp {heredoc_b64(_script(name))}mv -f {final}.tmp {final}")
    result = sandbox.run("\n".join(lines) + " )")
    if result.status != "ok" or result.exit_code != 0:
        raise SandboxError(
            f"could not install the edit/create helpers into {helper_dir()} in the sandbox "
            f"({result.brief()[:300]}); the sandbox "
            "needs bash, base64 and a writable /tmp. Run with --bash-only to do without them."
        )
    return helper_dir()


def _plugin_command(name: str, body: str) -> str:
    script = shlex.quote(f"{helper_dir()}/{name}.py")
    # -I: ignore PYTHON* variables and user site-packages the model may have set up.
    return (f"if [ -f {script} ]; then command {PYTHON} -I {script} "
            f"{heredoc_b64(body.encode('utf-8', 'surrogateescape'))}"
            f"else echo {MISSING_MARKER}; fi")


def _plugin(name: str, body: str, sandbox: Sandbox) -> ToolResult:
    result = sandbox.run(_plugin_command(name, body))
    if result.status == "ok" and result.output.strip() == MISSING_MARKER:
        install_helpers(sandbox)
        result = sandbox.run(_plugin_command(name, body))
    if result.status != "ok":
        return ToolResult(command_feedback(result), command=result)
    if result.exit_code == 127 and result.output.rstrip().endswith("not found"):
        raise SandboxError(
            f"the {name} tool needs python3 (3.5 or later) in the sandbox and found none "
            f"({result.output.strip()[-200:]}); set CWM_AGENT_PYTHON in the sandbox to an "
            "interpreter, or run with --bash-only"
        )
    # Raw, as CWM read it (sanitize=False): the plugin's closing print() newline stays.
    return ToolResult(result.output, command=result)


def _edit(body: str, sandbox: Sandbox) -> ToolResult:
    return _plugin("edit", body, sandbox)


def _create(body: str, sandbox: Sandbox) -> ToolResult:
    return _plugin("create", body, sandbox)


# --- submit --------------------------------------------------------------------------------

def _read_submitted(path: str, sandbox: Sandbox) -> tuple[bytes | None, CommandResult]:
    """The file's exact bytes through the session (None: unreadable)."""
    # stdin from /dev/null: a path that expands to nothing must not leave cat reading the session.
    result = sandbox.run(f"( set -o pipefail; cat {path} 2>&1 </dev/null | base64 )")
    if result.status != "ok" or result.exit_code != 0:
        return None, result
    try:
        return base64.b64decode(result.output, validate=False), result
    except ValueError:
        return None, result


def _submit_test(body: str, sandbox: Sandbox) -> ToolResult:
    """CWM's `submit_file` (test generation): any readable file is the submission, shown back."""
    path = body.strip()
    raw, result = _read_submitted(path, sandbox)
    if raw is None:
        return ToolResult(protocol.FEEDBACK["submit_unreadable"].format(path=path), command=result)
    shown = protocol.FEEDBACK["testgen_submit_success"].format(test=raw.decode("utf-8", errors="replace"))
    return ToolResult(shown, submitted_patch=raw.decode("utf-8", errors="surrogateescape"), command=result)


def _submit(body: str, sandbox: Sandbox) -> ToolResult:
    """CWM's submit: ``cat {path}`` in the session, the path stripped and NOT quoted (so
    ``$PWD/fix.diff`` and ``~/fix.diff`` expand as they did in training); the output must
    not be blank and must start with "diff".

    The file travels as base64, so ``submitted_patch`` holds its exact bytes (trailing
    newline and all; bytes that are not UTF-8 kept as surrogate escapes, so a Latin-1
    patch still applies when written back with errors="surrogateescape"). The feedback
    shows it raw, as CWM's session did, with undecodable bytes replaced.
    """
    path = body.strip()
    feedback = protocol.FEEDBACK
    raw, result = _read_submitted(path, sandbox)
    if raw is None:
        return ToolResult(feedback["submit_unreadable"].format(path=path), command=result)
    content = raw.decode("utf-8", errors="surrogateescape")
    if content.strip() == "":
        return ToolResult(feedback["submit_empty"].format(path=path), command=result)
    if not content.startswith("diff"):
        return ToolResult(feedback["submit_not_diff"].format(path=path), command=result)
    shown = feedback["submit_success"].format(patch=raw.decode("utf-8", errors="replace"))
    return ToolResult(shown, submitted_patch=content, command=result)


_TOOLS = {"bash": _bash, "edit": _edit, "create": _create, "submit": _submit}
