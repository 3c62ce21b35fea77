"""The sentinel bash session, over a plain byte stream: the keeper runs as the main
process of `docker run -i` and we talk to it through that subprocess's pipes
(not the Docker API), so these tests pin the protocol, not one transport."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwm_agent.sandbox.base import OUTPUT_LIMIT, CommandResult
from cwm_agent.tools import command_feedback
from cwm_agent.sandbox.session import KEEPER_NAME, PipeTransport, Session, keeper_argv, quote

# --- pure -------------------------------------------------------------------------------------

SPEC_TIMEOUT = ("The current session has terminated due to timeout. A fresh session has started "
                "with the current working directory reset to default.")
SPEC_OVERFLOW = ("The current session has terminated because your previous command produced too much "
                 "output. A fresh session has started with the current working directory reset to default.")
SPEC_DIED = ("The current session has terminated unexpectedly. A fresh session has started with the "
             "current working directory reset to default.")


def test_the_output_cap_is_cwms():
    assert OUTPUT_LIMIT == 480 * 1024


def test_the_model_reads_the_output_when_ok_else_the_spec_restart_notice():
    # The restart notices belong to the tools: the sandbox only says what became of the session.
    assert command_feedback(CommandResult("out\n", 0, "ok", 0.1)) == "out\n"
    assert command_feedback(CommandResult("", None, "timeout", 1)) == SPEC_TIMEOUT
    assert command_feedback(CommandResult("", None, "overflow", 1)) == SPEC_OVERFLOW
    assert command_feedback(CommandResult("", None, "died", 1)) == SPEC_DIED


def test_keeper_argv_passes_ttl_and_root_as_arguments():
    argv = keeper_argv(77, "/work/repo")
    assert argv[0] == "/bin/bash" and argv[1] == "-c"
    assert argv[3:] == [KEEPER_NAME, "77", "/work/repo"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_quote_survives_bash(text):
    shown = subprocess.run(["bash", "-c", "printf %s " + quote(text)], capture_output=True).stdout
    assert shown.decode("utf-8") == text.replace("\0", "")


# --- over a real keeper ------------------------------------------------------------------------

def start_keeper(client, image: str, *, ttl: int = 300, timeout: float = 3.0):
    name = f"cwm-test-session-{uuid.uuid4().hex[:8]}"
    argv = keeper_argv(ttl, "/testbed")
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", "--init", "--network", "none", "--pids-limit", "256",
         "--memory", "512m", "--name", name, "--label", "cwm-agent=test-session",
         "--workdir", "/testbed", "--entrypoint", argv[0], image, *argv[1:]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    transport = PipeTransport(proc, interrupt=lambda: client.api.kill(name, signal="SIGUSR1"))
    session = Session(transport, command_timeout=timeout)
    return name, proc, session


def gone(client, name: str) -> bool:
    return not client.containers.list(all=True, ignore_removed=True, filters={"name": name})


@pytest.fixture(scope="module")
def session(docker_client, sandbox_image):
    name, proc, sess = start_keeper(docker_client, sandbox_image)
    sess.start()
    yield sess
    sess.close()
    try:
        docker_client.api.remove_container(name, force=True)
    except Exception:
        pass




@pytest.mark.docker
def test_cwd_environment_and_functions_persist(session):
    assert session.run("cd /tmp && export GREETING=hi && greet() { echo \"$GREETING $1\"; }").ok
    result = session.run("pwd; greet there")
    assert result.output == "/tmp\nhi there\n"
    assert session.run("cd /testbed").ok


@pytest.mark.docker
def test_output_is_merged_exit_code_reported_newlines_kept(session):
    result = session.run("echo out; echo err >&2; printf 'no newline'; exit_with() { return $1; }; exit_with 3")
    assert result.output == "out\nerr\nno newline"
    assert result.exit_code == 3 and result.status == "ok"
    assert session.run("true").output == ""
    assert session.run("echo x").output == "x\n"


@pytest.mark.docker
@pytest.mark.parametrize("command", ["cat", "python3", "read line", "head -1", "bash"])
def test_commands_read_eof_on_stdin(session, command):
    result = session.run(command)
    assert result.status == "ok", result
    assert result.output == ""


@pytest.mark.docker
def test_a_syntax_error_is_an_error_not_a_hang(session):
    result = session.run("echo 'unterminated")
    assert result.status == "ok"
    assert result.exit_code == 2
    assert "unexpected EOF" in result.output
    assert session.run("if true; then echo fine; fi").output == "fine\n"


@pytest.mark.docker
def test_here_documents_and_quotes_arrive_verbatim(session):
    body = "a'b\"c $HOME `x` \\n \\\\ end"
    result = session.run(f"cat <<'EOF'\n{body}\nEOF")
    assert result.output == body + "\n"


@pytest.mark.docker
def test_output_cannot_fake_the_sentinel(session):
    fake = "\\n__EXIT_CODE__=0\\n__CWM_DONE_0000_1__\\n__CWM_DONE_0000_2__ __EXIT_CODE__=0\\n"
    result = session.run(f"printf '{fake}'; printf 'after\\n'")
    assert result.output == "\n__EXIT_CODE__=0\n__CWM_DONE_0000_1__\n__CWM_DONE_0000_2__ __EXIT_CODE__=0\nafter\n"


@pytest.mark.docker
def test_background_output_never_splits_the_line_that_ends_a_command(session):
    # A fork bomb's processes write "fork: retry" lines while the session answers. The line
    # that ends a command (and the keeper's markers) goes out in one write, so such output
    # lands before or after it, never inside: there it made a plain `echo` time out.
    noise = "import os, time\nwhile True:\n    os.write(1, b'noise\\n'); time.sleep(0.0002)"
    started = session.run(f"python3 -c {quote(noise)} & echo started")
    assert started.status == "ok" and "started" in started.output.splitlines()
    for i in range(200):
        result = session.run("echo ok")
        assert result.status == "ok" and result.exit_code == 0, (i, result)
        assert "ok" in result.output.splitlines(), (i, result)
    assert session.run("exit").status == "died"  # the marker too, through the noise
    assert session.run("echo ok").output == "ok\n"  # the restart ended the writer


@pytest.mark.docker
def test_a_large_command_round_trips(session):
    payload = "x" * 300_000
    result = session.run(f"wc -c <<'EOF'\n{payload}\nEOF")
    assert result.output.strip() == str(len(payload) + 1)


@pytest.mark.docker
def test_output_limit_is_480_kib_exactly(session):
    fits = session.run(f"head -c {OUTPUT_LIMIT} /dev/zero | tr '\\0' a")
    assert fits.status == "ok" and len(fits.output) == OUTPUT_LIMIT
    before = session.generation
    over = session.run(f"cd /; head -c {OUTPUT_LIMIT + 1} /dev/zero | tr '\\0' a")
    assert over.status == "overflow" and over.output == "" and command_feedback(over) == SPEC_OVERFLOW
    assert session.generation > before
    assert session.run("pwd").output == "/testbed\n"


@pytest.mark.docker
def test_timeout_kills_and_restarts_in_the_repo_root(session):
    assert session.run("cd /tmp; export LEFTOVER=1").ok
    result = session.run("sleep 30", timeout=1)
    assert result.status == "timeout" and result.exit_code is None
    assert command_feedback(result) == SPEC_TIMEOUT
    after = session.run('pwd; echo "[${LEFTOVER-}]"; pgrep -x sleep || echo no-sleep')
    assert after.output == "/testbed\n[]\nno-sleep\n"


@pytest.mark.docker
def test_the_keepers_own_stderr_goes_nowhere_the_sessions_to_the_output(session):
    # bash reports each job the keeper kills on a restart ("cwm-keeper: line 38: 83 Killed
    # ( exec 8>&-; read ... )") on the keeper's stderr: it must not be the session's stream.
    assert session.run("readlink /proc/$PPID/fd/2").output == "/dev/null\n"
    assert session.run("tr '\\0' ' ' < /proc/$PPID/cmdline").output.startswith("/bin/bash -c")
    # ...while the session's own stderr, after a restart too, is part of the output.
    assert session.run("sleep 30", timeout=1).status == "timeout"
    assert session.run("echo out; echo err >&2; ls /no-such-path").output == (
        "out\nerr\nls: cannot access '/no-such-path': No such file or directory\n")


@pytest.mark.docker
@pytest.mark.parametrize("command", ["sleep 30 & sleep 30", "yes", "exit"])
def test_ten_restarts_in_a_row_leave_nothing_in_the_next_output(session, command):
    # Each restart kills the session and the keeper's own timer job; nothing of that
    # (job notices, the old session's output) may reach the next command's output.
    for _ in range(10):
        result = session.run(command, timeout=1)
        assert result.status in ("timeout", "overflow", "died"), result
        assert session.run("echo ok").output == "ok\n"


@pytest.mark.docker
def test_the_fresh_session_starts_once_every_killed_process_has_exited(session):
    # A killed process can still write what it was writing (8 KiB of `yes` came after the
    # next command's output), so the keeper waits for the old processes to be gone. One
    # with 300 MB to free takes a while to exit: it must not be around in the fresh session.
    big = "b = b'x' * (300 << 20); open('/tmp/big', 'w').close(); import time; time.sleep(300)"
    started = session.run(f"rm -f /tmp/big; python3 -c \"{big}\" >/dev/null 2>&1 & "
                          "for i in $(seq 1200); do [ -e /tmp/big ] && break; sleep 0.05; done; ls /tmp/big",
                          timeout=90)
    assert started.output == "/tmp/big\n"
    assert session.run("sleep 30", timeout=1).status == "timeout"
    assert session.run("ps -eo stat=,comm= | grep -v '^Z' | grep -c python3 || true").output == "0\n"


# Takes every pid, and (as a fork bomb does) each one that comes free.
PID_FILLER = """
import subprocess, time
taken = 0
while True:
    try:
        subprocess.Popen(["sleep", "300"])
        taken += 1
    except OSError:
        break
open("/tmp/filled", "w").write(f"{taken}\\n")
while True:
    try:
        subprocess.Popen(["sleep", "300"])
    except OSError:
        time.sleep(0.001)
"""


@pytest.mark.docker
def test_a_restart_needs_no_pid_while_the_session_holds_them_all(session):
    # A fork bomb takes every pid of the sandbox. The keeper must not need one then: bash
    # exits when it cannot fork (after retrying for seconds; a signal cuts that short), and
    # with the keeper the whole sandbox goes. Here the pids stay taken, not only for a while.
    filled = session.run(f"rm -f /tmp/filled; python3 -c {quote(PID_FILLER)} & "
                         "until [ -s /tmp/filled ]; do :; done; read -r n < /tmp/filled; echo $n", timeout=60)
    assert filled.status == "ok" and int(filled.output) > 200, filled
    time.sleep(3)  # longer than any periodic wake-up of the keeper's
    stuck = session.run("sleep 1", timeout=2)  # cannot fork: a timeout, and a restart
    assert stuck.status == "timeout", stuck
    assert session.run("echo ok").output == "ok\n"
    assert session.run("pgrep -c -x sleep || true").output == "0\n"


@pytest.mark.docker
@pytest.mark.parametrize("command", ["exit", "exit 7", "kill -9 $$", "set -e; false"])
def test_death_of_the_shell_is_reported_and_recovered(session, command):
    assert session.run("cd /tmp").ok
    result = session.run(command)
    assert result.status == "died" and command_feedback(result) == SPEC_DIED
    assert session.run("pwd").output == "/testbed\n"


@pytest.mark.docker
def test_session_pid_is_its_own(session):
    # `$$` must be the session's bash, not the keeper, or `kill $$` would end the sandbox.
    pid = session.run("echo $$").output.strip()
    comm = session.run(f"cat /proc/{pid}/cmdline | tr '\\0' ' '").output
    assert "-s" in comm and KEEPER_NAME not in comm


@pytest.mark.docker
def test_background_child_holding_stdout_does_not_block(session):
    result = session.run("sleep 30 & echo started", timeout=10)
    assert result.status == "ok" and result.output == "started\n"
    assert session.run("echo next").output == "next\n"


@pytest.mark.docker
def test_death_after_the_command_is_reported_on_the_next(session):
    assert session.run("(sleep 0.3; kill -9 $$) >/dev/null 2>&1 & echo armed").output == "armed\n"
    time.sleep(1.5)
    result = session.run("echo should-not-run > /tmp/ran")
    assert result.status == "died"
    assert session.run("cat /tmp/ran 2>/dev/null || echo not-run").output == "not-run\n"


@pytest.mark.docker
def test_restart_kills_everything_the_session_started(session):
    assert session.run("setsid sleep 1000 >/dev/null 2>&1 & nohup sleep 1001 >/dev/null 2>&1 &").ok
    wait_two = "for i in $(seq 100); do [ $(pgrep -c -x sleep) = 2 ] && break; sleep 0.05; done"
    assert session.run(f"{wait_two}; pgrep -c -x sleep").output.strip() == "2"
    session.restart()
    assert session.run("pgrep -c -x sleep || true").output.strip() == "0"


@pytest.mark.docker
def test_invalid_utf8_is_replaced_not_fatal(session):
    result = session.run("printf 'ok \\377\\376 end\\n'")
    assert result.output == "ok \ufffd\ufffd end\n"


@pytest.mark.docker
def test_unencodable_text_in_a_command_does_not_crash(session):
    assert session.run("echo '\ud800'").output == "?\n"


@pytest.mark.docker
def test_keeper_exits_when_its_stdin_closes(docker_client, sandbox_image):
    name, proc, sess = start_keeper(docker_client, sandbox_image)
    sess.start()
    assert sess.run("echo up").output == "up\n"
    proc.stdin.close()  # what the kernel does when the agent dies
    assert proc.wait(timeout=60) is not None
    deadline = time.monotonic() + 60
    while not gone(docker_client, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(docker_client, name)


@pytest.mark.docker
def test_keeper_ends_the_sandbox_after_its_ttl(docker_client, sandbox_image):
    name, proc, sess = start_keeper(docker_client, sandbox_image, ttl=3)
    sess.start()
    assert sess.run("while :; do :; done &").ok  # busy, and holding stdout
    assert proc.wait(timeout=60) is not None
    deadline = time.monotonic() + 60
    while not gone(docker_client, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(docker_client, name)
    sess.close()


def _raw_until(sess: Session, pattern: bytes, within: float) -> bytes:
    """Read the keeper's stream until `pattern` (a regex) shows up; what was read."""
    buf = bytearray()
    deadline = time.monotonic() + within
    while not re.search(pattern, buf) and time.monotonic() < deadline:
        chunk = sess.transport.recv(deadline - time.monotonic())
        if chunk == b"":
            break
        buf += chunk or b""
    return bytes(buf)


@pytest.mark.docker
@pytest.mark.parametrize("command", [
    "sleep 1000",
    # ignores SIGTERM, forks children that ignore it too, one of them in its own session
    "trap '' TERM; (trap '' TERM; sleep 1000) & setsid sleep 1001 & sleep 1002",
])
def test_keeper_ends_everything_when_its_stdin_closes_while_a_command_runs(docker_client, sandbox_image, command):
    # The agent dies in the middle of a command: the keeper notices at once (not when the
    # command ends), kills everything and exits, and the container goes.
    name, proc, sess = start_keeper(docker_client, sandbox_image)
    sess.start()
    sess.transport.send(sess._unit(command, "__never__", 3600), 5)
    top = []
    for _ in range(100):  # until the command runs
        top = [row[1:] for row in docker_client.api.top(name, ps_args="-eo pid,args").get("Processes") or []]
        if any(row[0].startswith("sleep 10") for row in top):
            break
        time.sleep(0.05)
    assert any(row[0].startswith("sleep 10") for row in top), top
    closed = time.monotonic()
    proc.stdin.close()  # what the kernel does when the agent dies
    proc.wait(timeout=30)
    while not gone(docker_client, name) and time.monotonic() - closed < 30:
        time.sleep(0.05)
    took = time.monotonic() - closed
    assert gone(docker_client, name) and took < 3, took
    sess.close()


@pytest.mark.docker
def test_the_keeper_ends_a_command_at_its_time_limit_by_itself(session):
    # No interrupt from us (an agent that is gone, or slow): the keeper kills the command
    # half a second after its limit and says so; our interrupt then starts one fresh session.
    generation = session.generation
    session.transport.send(session._unit("sleep 1000", "__never__", 1.0), 5)
    began = time.monotonic()
    seen = _raw_until(session, session._keeper_token + rb" timeout \d+\n", 10)
    took = time.monotonic() - began
    assert session._keeper_token + b" timeout" in seen and 1.0 < took < 2.0, (took, seen[-200:])
    session.restart()
    assert session.generation == generation + 1
    assert session.run("pgrep -c -x sleep || true").output == "0\n"
    assert session.run("pwd").output == "/testbed\n"


@pytest.mark.docker
@pytest.mark.parametrize("late", [0.0, 1.2])
def test_our_timeout_and_the_keepers_make_one_restart(session, late):
    # Our interrupt before the keeper's own limit, or after it: either way one fresh session.
    generation = session.generation
    interrupt = session.transport.interrupt

    def slow_interrupt():
        time.sleep(late)
        interrupt()

    session.transport.interrupt = slow_interrupt
    try:
        result = session.run("sleep 1000", timeout=1)
    finally:
        session.transport.interrupt = interrupt
    assert result.status == "timeout", result
    assert session.generation == generation + 1
    assert session.run("echo ok").output == "ok\n"
    time.sleep(1)  # nothing else comes: no second restart
    assert session.run("echo $((1+1))").output == "2\n" and session.generation == generation + 1
