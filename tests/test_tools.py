"""The tools, byte for byte: the in-sandbox scripts on the host, then execute() in real containers."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cwm_agent import protocol
from cwm_agent.paths import SANDBOX_DIR
from cwm_agent.protocol import FEEDBACK, Action

# Bodies that would break any shell quoting: every one must reach the file untouched.
HOSTILE = (
    "quotes: ' \" \\' \\\" `backticks` $(touch /tmp/pwned) ${HOME} $HOME\n"
    "EOF\n"
    "'EOF'\n"
    "CWM_AGENT_B64_END\n"
    "EOF_938176592\n"
    "__CWM_AGENT_HELPER_MISSING__\n"
    "crlf line\r\n"
    "tab\there, unicode: héllo → 世界 🐍\n"
    "no trailing newline at the end"
)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cwm_sandbox_{name}", SANDBOX_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, body: str, cwd: Path) -> tuple[str, int]:
    """Run a helper the way the sandbox does: python3 -I, body base64 on stdin."""
    done = subprocess.run(
        [sys.executable, "-I", str(SANDBOX_DIR / f"{name}.py")],
        input=base64.b64encode(body.encode("utf-8", "surrogateescape")),
        cwd=cwd, capture_output=True,
    )
    assert done.stderr == b""
    out = done.stdout.decode("utf-8", "surrogateescape")
    assert out.endswith("\n")
    return out[:-1], done.returncode


def edit_body(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


def numbered(start: int, lines: list[str]) -> str:
    return "\n".join(f"{i:6}\t{line}" for i, line in enumerate(lines, start=start))


TWENTY = "".join(f"line {i}\n" for i in range(1, 21))


# --- the scripts alone ---------------------------------------------------------------------

def test_script_literals_are_protocol_literals() -> None:
    edit, create = load_script("edit"), load_script("create")
    assert edit.PARSE_ERROR == FEEDBACK["edit_parse_error"]
    assert edit.TOO_MANY_BLOCKS == FEEDBACK["edit_multiple_blocks"]
    assert edit.NO_PATH == FEEDBACK["edit_no_path"]
    assert edit.NOT_FOUND == FEEDBACK["edit_not_found"]
    assert edit.INDENT_HINT == FEEDBACK["edit_indentation_hint"]
    assert edit.MULTIPLE == FEEDBACK["edit_multiple_matches"]
    assert edit.SUCCESS == FEEDBACK["edit_success"]
    assert "{:6}\t{}".format(42, "x") == FEEDBACK["edit_snippet_line"].format(number=42, line="x")
    assert create.EXISTS == FEEDBACK["create_exists"]
    assert create.EMPTY_PATH == FEEDBACK["create_empty_path"]
    assert create.NO_PARENT == FEEDBACK["create_no_parent"]
    assert create.CREATED == FEEDBACK["create_success"]


def test_edit_script_success_message_and_snippet(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text(TWENTY)
    out, code = run_script("edit", edit_body("f.txt", "line 10", "ten\nTEN"), tmp_path)
    lines = TWENTY.replace("line 10\n", "ten\nTEN\n").split("\n")
    # line 10, snippet from 2 to 10 + 8 + 1 newline in the replacement = 19
    assert out == ("File f.txt has been successfully updated at line 10 and now contains 22 lines. "
                   "The surrounding lines after the edit are shown below:\n"
                   + numbered(2, lines[1:19]) +
                   "\nReview the changes and make sure they are as expected.")
    assert code == 0
    assert (tmp_path / "f.txt").read_text() == TWENTY.replace("line 10\n", "ten\nTEN\n")


def test_edit_script_snippet_is_clipped_at_both_ends(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("a\nb\nc")
    out, code = run_script("edit", edit_body("f.txt", "a", "A"), tmp_path)
    assert code == 0
    assert out == ("File f.txt has been successfully updated at line 1 and now contains 3 lines. "
                   "The surrounding lines after the edit are shown below:\n"
                   "     1\tA\n     2\tb\n     3\tc\n"
                   "Review the changes and make sure they are as expected.")


def test_edit_script_matches_only_at_line_starts(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("xfoo\nfoo\n")
    out, code = run_script("edit", edit_body("f.txt", "foo", "bar"), tmp_path)
    assert code == 0 and "at line 2 " in out
    assert (tmp_path / "f.txt").read_text() == "xfoo\nbar\n"


def test_edit_script_reports_every_occurrence_with_overlaps(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x\nx\nx\ny\n")
    out, code = run_script("edit", edit_body("f.txt", "x\nx", "z"), tmp_path)
    assert code == 1
    assert out == ("No replacement was performed. Multiple occurrences of the search text in lines "
                   "[1, 2] of f.txt. Please ensure it is unique.")
    assert (tmp_path / "f.txt").read_text() == "x\nx\nx\ny\n"


def test_edit_script_keeps_crlf_files_crlf(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    out, code = run_script("edit", edit_body("w.txt", "two", "2\nzwei"), tmp_path)
    assert code == 0 and "now contains 5 lines" in out
    assert (tmp_path / "w.txt").read_bytes() == b"one\r\n2\r\nzwei\r\nthree\r\n"


def test_edit_script_keeps_undecodable_bytes(tmp_path: Path) -> None:
    (tmp_path / "l1.txt").write_bytes(b"caf\xe9\nkeep\n")
    out, code = run_script("edit", edit_body("l1.txt", "keep", "kept"), tmp_path)
    assert code == 0
    assert (tmp_path / "l1.txt").read_bytes() == b"caf\xe9\nkept\n"


def test_create_script_writes_content_exactly(tmp_path: Path) -> None:
    out, code = run_script("create", "h.txt\n" + HOSTILE, tmp_path)
    assert (code, out) == (0, f"File created successfully at: h.txt ({HOSTILE.count(chr(10)) + 1} lines).")
    assert (tmp_path / "h.txt").read_bytes() == HOSTILE.encode()


def test_create_script_with_path_only_makes_empty_file(tmp_path: Path) -> None:
    out, code = run_script("create", "empty.txt", tmp_path)
    assert (code, out) == (0, "File created successfully at: empty.txt (1 lines).")
    assert (tmp_path / "empty.txt").read_bytes() == b""


# --- execute() in a real container ---------------------------------------------------------

def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tools") / "repo"
    path.mkdir()
    (path / "app.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "notes.txt").write_text("alpha\nbeta\n")
    git(path, "init", "-q")
    git(path, "-c", "user.name=t", "-c", "user.email=t@e", "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base")
    return path


@pytest.fixture(scope="module")
def sandbox(docker_client, sandbox_image: str, repo: Path):
    from cwm_agent.sandbox.docker import DockerSandbox

    with DockerSandbox(sandbox_image, repo=repo, client=docker_client) as box:
        yield box


@pytest.fixture
def scratch(sandbox) -> str:
    """A fresh directory, and the session cd-ed into it: relative paths land there."""
    import uuid

    path = f"/tmp/scratch-{uuid.uuid4().hex[:8]}"
    assert sandbox.run(f"mkdir -p {path} && cd {path}").exit_code == 0
    yield path
    sandbox.run(f"cd {sandbox.repo_root}")


def tool(sandbox, name: str, body: str):
    from cwm_agent.tools import execute

    return execute(Action(name, body), sandbox)


def read_bytes(sandbox, path: str) -> bytes:
    result = sandbox.run(f"base64 < '{path}'")
    assert result.exit_code == 0, result.output
    return base64.b64decode(result.output)


def put_text(sandbox, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    assert sandbox.run(f"printf %s {encoded} | base64 -d > '{path}'").exit_code == 0


docker = pytest.mark.docker


@docker
def test_bash_feedback_is_the_session_output(sandbox, scratch: str) -> None:
    result = tool(sandbox, "bash", "echo out; echo err >&2; pwd; false")
    assert result.feedback == f"out\nerr\n{scratch}\n"
    assert result.command is not None and result.command.exit_code == 1
    assert result.submitted_patch is None


@docker
def test_create_writes_hostile_content_byte_for_byte(sandbox, scratch: str) -> None:
    result = tool(sandbox, "create", "hostile.txt\n" + HOSTILE)
    assert result.feedback == f"File created successfully at: hostile.txt ({HOSTILE.count(chr(10)) + 1} lines).\n"
    assert read_bytes(sandbox, f"{scratch}/hostile.txt") == HOSTILE.encode()
    assert sandbox.run("test -e /tmp/pwned; echo $?").output == "1\n"  # nothing was executed


@docker
def test_create_counts_lines_and_adds_no_newline(sandbox, scratch: str) -> None:
    assert tool(sandbox, "create", "two.txt\na\n").feedback == "File created successfully at: two.txt (2 lines).\n"
    assert read_bytes(sandbox, f"{scratch}/two.txt") == b"a\n"
    assert tool(sandbox, "create", "bare.txt").feedback == "File created successfully at: bare.txt (1 lines).\n"
    assert read_bytes(sandbox, f"{scratch}/bare.txt") == b""


@docker
def test_create_errors_are_cwms(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/taken.txt", "old")
    assert tool(sandbox, "create", "taken.txt\nnew").feedback == (
        "taken.txt already exists. Cannot create a new file at an existing path.\n")
    assert read_bytes(sandbox, f"{scratch}/taken.txt") == b"old"
    assert tool(sandbox, "create", "\ncontent").feedback == "Path is empty. Please provide a valid path.\n"
    assert tool(sandbox, "create", "nope/deeper/x.txt\nhi").feedback == (
        f"File creation failed. The parent directory {scratch}/nope/deeper does not exist.\n")
    assert tool(sandbox, "create", "/tmp\nx").feedback == (
        "/tmp already exists. Cannot create a new file at an existing path.\n")


@docker
def test_create_resolves_relative_paths_against_the_session_cwd(sandbox, scratch: str) -> None:
    assert sandbox.run("mkdir sub && cd sub").exit_code == 0
    assert tool(sandbox, "create", "rel.txt\nhere").feedback == "File created successfully at: rel.txt (1 lines).\n"
    assert read_bytes(sandbox, f"{scratch}/sub/rel.txt") == b"here"
    assert tool(sandbox, "create", "../up.txt\nthere").feedback == (
        "File created successfully at: ../up.txt (1 lines).\n")
    assert read_bytes(sandbox, f"{scratch}/up.txt") == b"there"


@docker
def test_edit_success_message_and_snippet(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/f.txt", TWENTY)
    result = tool(sandbox, "edit", edit_body("f.txt", "line 10\nline 11", "ten\neleven\nELEVEN"))
    after = TWENTY.replace("line 10\nline 11\n", "ten\neleven\nELEVEN\n")
    lines = after.split("\n")
    assert result.feedback == (
        "File f.txt has been successfully updated at line 10 and now contains 22 lines. "
        "The surrounding lines after the edit are shown below:\n"
        + numbered(2, lines[1:20])  # 10 - 8 .. 10 + 8 + 2 newlines in the replacement
        + "\nReview the changes and make sure they are as expected.\n"  # raw: print()'s newline stays
    )
    assert read_bytes(sandbox, f"{scratch}/f.txt") == after.encode()
    assert result.command is not None and result.command.exit_code == 0


@docker
def test_edit_errors_are_cwms(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/code.py", "def f():\n    return 1\n\ndef g():\n    return 1\n")
    parse_error = (
        "Failed to parse the edit tool call. Make sure it has the following format:\n\n"
        "<tool: edit>\n[path]\n<<<<<<< SEARCH\n[search_lines]\n=======\n[replacement_lines]\n"
        ">>>>>>> REPLACE\n</tool>\n"
    )
    assert tool(sandbox, "edit", "code.py\nreturn 1\nreturn 2").feedback == parse_error
    two = edit_body("code.py", "a", "b") + "\n" + edit_body("code.py", "c", "d")
    assert tool(sandbox, "edit", two).feedback == "Only one search/replace block is allowed. Got: 2.\n"
    assert tool(sandbox, "edit", edit_body("missing.py", "a", "b")).feedback == (
        "The path missing.py does not exist. Please provide a valid path.\n")
    assert tool(sandbox, "edit", edit_body("code.py", "return 7", "x")).feedback == (
        "No replacement was performed, the search lines did not appear verbatim in code.py.\n")
    assert tool(sandbox, "edit", edit_body("code.py", "return 1", "x")).feedback == (
        "No replacement was performed, the search lines did not appear verbatim in code.py."
        " The search lines must exactly match one or more consecutive lines from the file,"
        " with indentations preserved.\n")
    assert tool(sandbox, "edit", edit_body("code.py", "    return 1", "x")).feedback == (
        "No replacement was performed. Multiple occurrences of the search text in lines [2, 5] of "
        "code.py. Please ensure it is unique.\n")
    assert read_bytes(sandbox, f"{scratch}/code.py") == b"def f():\n    return 1\n\ndef g():\n    return 1\n"
    result = tool(sandbox, "edit", edit_body(scratch, "a", "b"))
    assert result.feedback.startswith(f"Failed to edit {scratch}: Is a directory.")


@docker
def test_edit_carries_hostile_search_and_replacement(sandbox, scratch: str) -> None:
    before = "start\n$(touch /tmp/pwned) `id` 'q' \"dq\"\nEOF\nCWM_AGENT_B64_END\nend"
    put_text(sandbox, f"{scratch}/h.txt", before)
    search = "$(touch /tmp/pwned) `id` 'q' \"dq\"\nEOF\nCWM_AGENT_B64_END"
    replace = "ünïcödé → 世界\n${HOME} $((1+1))\nEOF_938176592\n'EOF'"
    result = tool(sandbox, "edit", edit_body("h.txt", search, replace))
    assert result.feedback.startswith("File h.txt has been successfully updated at line 2 and now contains 6 lines.")
    assert "     3\t${HOME} $((1+1))\n" in result.feedback
    assert read_bytes(sandbox, f"{scratch}/h.txt") == before.replace(search, replace).encode()
    assert sandbox.run("test -e /tmp/pwned; echo $?").output == "1\n"


@docker
def test_edit_of_crlf_file_with_crlf_body(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/w.txt", "one\r\ntwo\r\n")
    result = tool(sandbox, "edit", edit_body("w.txt", "two\r", "2\r"))
    assert result.feedback.startswith("File w.txt has been successfully updated at line 2 and now contains 3 lines.")
    assert read_bytes(sandbox, f"{scratch}/w.txt") == b"one\r\n2\r\n"


@docker
def test_edit_resolves_relative_paths_against_the_session_cwd(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/rel.txt", "x\n")
    assert sandbox.run("mkdir -p deep && cd deep").exit_code == 0
    result = tool(sandbox, "edit", edit_body("../rel.txt", "x", "y"))
    assert result.feedback.startswith("File ../rel.txt has been successfully updated at line 1")
    assert read_bytes(sandbox, f"{scratch}/rel.txt") == b"y\n"


@docker
def test_tools_leave_the_session_state_alone(sandbox, scratch: str) -> None:
    sandbox.run("export KEEP=kept; cd /tmp")
    tool(sandbox, "create", "/tmp/state.txt\nx")
    tool(sandbox, "edit", edit_body("/tmp/state.txt", "x", "y"))
    tool(sandbox, "submit", "/tmp/state.txt")
    assert sandbox.run("echo $KEEP; pwd").output == "kept\n/tmp\n"


@docker
def test_helpers_come_back_after_the_model_deletes_them(sandbox, scratch: str) -> None:
    from cwm_agent.tools import HELPER_ROOT

    tool(sandbox, "create", "first.txt\n1")
    assert sandbox.run(f"rm -rf {HELPER_ROOT} && ls {HELPER_ROOT}").exit_code != 0
    assert tool(sandbox, "create", "second.txt\n2").feedback == "File created successfully at: second.txt (1 lines).\n"
    assert read_bytes(sandbox, f"{scratch}/second.txt") == b"2"


@docker
def test_submit_returns_the_exact_patch(sandbox) -> None:
    sandbox.run("cd /testbed && sed -i 's/a + b/a - b/' app.py && git diff > fix.patch && mkdir -p sub && cd sub")
    patch = read_bytes(sandbox, "/testbed/fix.patch").decode()
    assert patch.startswith("diff --git a/app.py b/app.py") and patch.endswith("\n")
    result = tool(sandbox, "submit", "  ../fix.patch \n")
    assert result.submitted_patch == patch
    assert result.feedback == (
        "The following patch content is marked as your final submission:\n\n<submission>\n"
        + patch  # raw: the patch's own last newline stays
        + "\n</submission>\n\nReview the patch content and ensure it correctly resolves the issue. "
        "If necessary, you can continue refining the patch and submit an updated version."
    )
    sandbox.run("cd /testbed && git checkout -q app.py && rm -rf fix.patch sub")


@docker
def test_submit_errors_are_cwms(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/empty.diff", "")
    put_text(sandbox, f"{scratch}/blank.diff", " \n\t\n")
    put_text(sandbox, f"{scratch}/prose.diff", "I changed app.py\ndiff --git a/x b/x\n")
    put_text(sandbox, f"{scratch}/my patch.diff", "diff --git a/x b/x\n")
    cases = {
        "missing.diff": "Failed to submit missing.diff. Make sure it exists and is readable.",
        scratch: f"Failed to submit {scratch}. Make sure it exists and is readable.",
        "empty.diff": "Failed to submit empty.diff. It is an empty file.",
        "blank.diff": "Failed to submit blank.diff. It is an empty file.",
        "prose.diff": "Failed to submit prose.diff. It is not a valid diff file.",
        # `cat {path}`, unquoted as in CWM: a spaced path is two paths, an empty expansion reads nothing.
        "my patch.diff": "Failed to submit my patch.diff. Make sure it exists and is readable.",
        "$(true)": "Failed to submit $(true). It is an empty file.",
    }
    for path, feedback in cases.items():
        result = tool(sandbox, "submit", path)
        assert (result.feedback, result.submitted_patch) == (feedback, None)
    assert tool(sandbox, "submit", "'my patch.diff'").submitted_patch == "diff --git a/x b/x\n"


@docker
def test_submit_expands_the_path_as_bash_does(sandbox, scratch: str) -> None:
    put_text(sandbox, f"{scratch}/fix.diff", "diff --git a/x b/x\n")
    assert sandbox.run("cd sub 2>/dev/null || mkdir sub && cd sub").exit_code == 0
    result = tool(sandbox, "submit", "$PWD/../fix.diff")
    assert result.submitted_patch == "diff --git a/x b/x\n"
    assert "<submission>\ndiff --git a/x b/x\n\n</submission>" in result.feedback


@docker
def test_submit_keeps_a_latin1_patch_byte_for_byte(sandbox, scratch: str) -> None:
    raw = b"diff --git a/n.txt b/n.txt\n--- a/n.txt\n+++ b/n.txt\n@@ -1 +1 @@\n-caf\xe9\n+caf\xe8\n"
    assert sandbox.run(f"printf %s {base64.b64encode(raw).decode()} | base64 -d > latin1.diff").exit_code == 0
    result = tool(sandbox, "submit", "latin1.diff")
    assert result.submitted_patch is not None
    assert result.submitted_patch.encode("utf-8", "surrogateescape") == raw  # the bytes git will apply
    assert "-caf\ufffd\n+caf\ufffd\n" in result.feedback  # the model reads it as CWM's session decoded it


@docker
def test_unknown_tool_is_refused_without_running_anything(sandbox) -> None:
    result = tool(sandbox, "python", "print(1)")
    assert result.feedback == protocol.FEEDBACK["no_such_tool"].format(tool="python")
    assert result.command is None
