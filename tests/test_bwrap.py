"""BwrapSandbox on a real root filesystem under the real bwrap: isolation, session, git."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from cwm_agent.protocol import Action
from cwm_agent.sandbox.base import SandboxError
from cwm_agent.tools import RESTART_FEEDBACK, command_feedback

from _ci import unavailable

TIMEOUT_FEEDBACK = RESTART_FEEDBACK["timeout"]


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The default root filesystem, built with mmdebstrap once (cached by recipe hash)."""
    from cwm_agent.sandbox import bwrap

    try:
        bwrap.find_bwrap()
        return bwrap.build_rootfs()
    except bwrap.BwrapUnavailable as exc:
        unavailable(str(exc))


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
                          cwd=repo, check=True, capture_output=True)
    return done.stdout.decode()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "old.txt").write_text("old\n")
    (path / "blob.bin").write_bytes(b"\x00\x01\x02")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "base")
    git(path, "branch", "future-work")  # a ref the scrub must remove
    git(path, "remote", "add", "origin", "https://example.invalid/repo.git")
    return path


@pytest.fixture
def sandbox(rootfs: Path, repo: Path):
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    with BwrapSandbox(rootfs=rootfs, repo=repo, command_timeout=30) as box:
        yield box


def snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def test_session_keeps_cwd_environment_and_exit_codes(sandbox) -> None:
    assert sandbox.run("pwd; id -u").output == "/testbed\n0\n"
    assert sandbox.run("cd /tmp && export ANSWER=42").exit_code == 0
    result = sandbox.run("echo $ANSWER; pwd; exit_code_please() { return 3; }; exit_code_please")
    assert (result.output, result.exit_code, result.status) == ("42\n/tmp\n", 3, "ok")
    assert sandbox.run("printf 'no newline'").output == "no newline"


def test_there_is_no_network(sandbox) -> None:
    script = (
        "import socket\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        "s = socket.socket(); s.settimeout(5)\n"
        "try:\n"
        "    s.connect(('1.1.1.1', 80)); print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    result = sandbox.run(f"python3 -c \"{script}\"")
    assert result.output.splitlines()[0] == "['lo']"
    assert result.output.splitlines()[1].startswith("refused")
    assert "connected" not in result.output


def test_only_the_repo_copy_and_temp_dirs_are_writable(sandbox) -> None:
    for path in ("/usr/bin/evil", "/etc/passwd", "/evil", "/var/lib/evil"):
        result = sandbox.run(f"echo x > {path}")
        assert result.exit_code != 0 and "Read-only file system" in result.output, path
    for path in ("/testbed/ok", "/tmp/ok", "/root/ok", "/var/tmp/ok"):
        assert sandbox.run(f"echo x > {path} && cat {path}").output == "x\n", path


def test_host_repository_is_never_touched(sandbox, repo: Path) -> None:
    before = snapshot(repo)
    head = git(repo, "rev-parse", "HEAD")
    result = sandbox.run("echo hacked > app.py && rm old.txt && echo new > new.txt && "
                         "git add -A && git commit -qm inside && git gc -q --prune=now && echo done")
    assert result.output == "done\n"
    assert snapshot(repo) == before
    assert git(repo, "rev-parse", "HEAD") == head
    assert "future-work" in git(repo, "branch")
    assert sandbox.testbed != repo and (sandbox.testbed / "new.txt").exists()


def test_git_history_is_scrubbed_and_base_commit_recorded(sandbox, repo: Path) -> None:
    assert sandbox.run("git remote").output == ""
    assert sandbox.run("git for-each-ref --format='%(refname)'").output == f"{git_branch_ref(repo)}\n"
    assert sandbox.run("git rev-parse HEAD").output.strip() == sandbox.base_commit
    assert sandbox.run("git reflog | wc -l").output.strip() == "0"


def git_branch_ref(repo: Path) -> str:
    return git(repo, "symbolic-ref", "HEAD").strip()


def test_uncommitted_host_changes_are_part_of_the_base(rootfs: Path, repo: Path) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    (repo / "app.py").write_text("work in progress\n")
    (repo / "untracked.txt").write_text("u\n")
    with BwrapSandbox(rootfs=rootfs, repo=repo) as box:
        assert box.run("cat app.py untracked.txt").output == "work in progress\nu\n"
        assert box.diff() == ""


@pytest.mark.parametrize("change", ["staged git rm", "staged git mv", "unstaged rm"])
def test_deletions_and_renames_on_the_host_are_the_starting_state(rootfs: Path, repo: Path, change: str) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    if change == "staged git rm":
        git(repo, "rm", "-q", "old.txt")
    elif change == "staged git mv":
        git(repo, "mv", "old.txt", "renamed.txt")
    else:
        (repo / "old.txt").unlink()
    files = sorted(p.name for p in repo.iterdir() if p.is_file())
    with BwrapSandbox(rootfs=rootfs, repo=repo) as box:
        assert box.run("ls -A | grep -v -x .git").output.splitlines() == files
        assert box.run("git ls-tree -r --name-only HEAD").output.splitlines() == files
        assert box.run("git status --porcelain").output == ""
        if change == "staged git mv":
            assert box.run("cat renamed.txt").output == "old\n"
        assert box.diff() == ""


def test_diff_is_shared_with_docker_and_keeps_git_warnings_out_of_the_patch(sandbox) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox
    from cwm_agent.sandbox.docker import DockerSandbox

    assert BwrapSandbox.diff is DockerSandbox.diff
    # `git add -A` warns about an embedded repository on stderr: not part of the patch.
    sandbox.run("git init -q sub && git -C sub commit -q --allow-empty -m x && echo more >> app.py")
    patch = sandbox.diff()
    assert patch.startswith("diff --git a/app.py b/app.py\n")
    assert "+more" in patch and "Subproject commit" in patch
    assert "warning" not in patch and "hint" not in patch


def test_diff_has_new_deleted_and_binary_files_and_applies(sandbox) -> None:
    from cwm_agent.sandbox.patch import check_applies, diffstat

    sandbox.run("sed -i 's/a + b/a - b/' app.py && rm old.txt && echo n > new.txt && "
                "printf '\\000\\377' > blob.bin && echo junk > scratch.log")
    patch = sandbox.diff(exclude=["scratch.log"])
    assert sorted(diffstat(patch)) == [("app.py", 1, 1), ("blob.bin", 0, 0), ("new.txt", 1, 0), ("old.txt", 0, 1)]
    assert "GIT binary patch" in patch
    assert check_applies(patch, sandbox).ok
    # The check is against the base commit: it still passes with the edits in the working tree,
    # and a patch for other content fails.
    assert sandbox.run("git status --porcelain | sort").output == (
        " D old.txt\n M app.py\n M blob.bin\n?? new.txt\n?? scratch.log\n")
    wrong = patch.replace("-    return a + b", "-    return a * b")
    assert not check_applies(wrong, sandbox).ok


def test_timeout_kills_everything_and_restarts_the_session(sandbox) -> None:
    mark = unique_seconds()  # a sleep no other test run on this host has
    sandbox.run("cd /tmp && export MARK=1")
    result = sandbox.run(f"(sleep {mark} &) ; sleep {mark}1", timeout=1)
    assert result.status == "timeout" and command_feedback(result) == TIMEOUT_FEEDBACK and result.output == ""
    after = sandbox.run(f"pwd; echo ${{MARK:-unset}}; ps -eo args | grep -c '^sleep {mark}' || true")
    # Exactly what the command prints: no job notice of the keeper's ahead of it.
    assert after.output == "/testbed\nunset\n0\n"
    assert not host_processes_with(mark)


def test_ten_timeouts_in_a_row_leave_nothing_in_the_next_output(sandbox) -> None:
    for _ in range(10):
        assert sandbox.run("sleep 30 & sleep 30", timeout=1).status == "timeout"
        assert sandbox.run("echo ok").output == "ok\n"
    assert sandbox.run("echo err >&2").output == "err\n"


def test_a_fork_storm_the_fresh_session_is_usable_at_once(sandbox) -> None:
    # No pids limit here (no cgroups), so not a real fork bomb: twenty loops that fork all
    # the time and print what a bomb prints. `echo ok` answers under it, on the first try;
    # the timeout's restart ends it, and the fresh session answers at once, untouched by it.
    mark = unique_seconds()
    storm = f"for i in $(seq 20); do (while :; do sleep 0.{mark}; echo 'bash: fork: retry: noise'; done) & done"
    for i in range(5):
        started = sandbox.run(f"{storm}; echo started")
        assert started.status == "ok" and "started" in started.output.splitlines(), (i, started)
        for _ in range(5):
            probe = sandbox.run("echo ok")
            assert probe.status == "ok" and "ok" in probe.output.splitlines(), (i, probe)
        stuck = sandbox.run(f"sleep {mark}", timeout=2)
        assert stuck.status == "timeout" and command_feedback(stuck) == TIMEOUT_FEEDBACK, (i, stuck)
        fresh = sandbox.run("echo ok")
        assert (fresh.status, fresh.output) == ("ok", "ok\n"), (i, fresh)
        assert sandbox.run(f"ps -eo args | grep -c '^sleep 0.{mark}' || true").output == "0\n"
    assert not host_processes_with(mark) and not host_processes_with(f"0.{mark}")


def test_close_kills_the_sandbox_and_its_background_processes(rootfs: Path, repo: Path) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    mark = unique_seconds()
    box = BwrapSandbox(rootfs=rootfs, repo=repo)
    box.run(f"nohup sleep {mark} >/dev/null 2>&1 &")
    deadline = time.monotonic() + 10
    while not host_processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)  # the background child may not have exec'd sleep yet
    assert host_processes_with(mark)
    keeper, work = box.keeper_pid, box.work_dir
    box.close()
    deadline = time.monotonic() + 10
    while (host_processes_with(mark) or pid_alive(keeper)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not host_processes_with(mark) and not pid_alive(keeper)
    assert not work.exists()


def test_memory_cap_applies_to_every_process(rootfs: Path, repo: Path) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    with BwrapSandbox(rootfs=rootfs, repo=repo, memory="512m") as box:
        result = box.run("python3 -c 'b = bytearray(1024 ** 3)' 2>&1 | tail -1")
        assert result.output == "MemoryError\n"
        assert box.run("python3 -c 'b = bytearray(64 * 1024 ** 2); print(len(b))'").output == "67108864\n"
        assert box.run("ulimit -v unlimited").exit_code != 0  # the model cannot lift it


def test_tools_work_in_bwrap(sandbox) -> None:
    from cwm_agent.tools import execute

    assert execute(Action("create", "made.txt\nhi\n"), sandbox).feedback == (
        "File created successfully at: made.txt (2 lines).\n")  # raw, print()'s newline kept
    edited = execute(Action("edit", "made.txt\n<<<<<<< SEARCH\nhi\n=======\nho\n>>>>>>> REPLACE"), sandbox)
    assert edited.feedback.startswith("File made.txt has been successfully updated at line 1")
    sandbox.run("git add -N made.txt && git diff > /tmp/p.diff && cd /tmp")
    submitted = execute(Action("submit", "p.diff"), sandbox)
    assert submitted.submitted_patch and "+ho" in submitted.submitted_patch


def test_a_foreign_image_name_is_refused_with_a_fix(rootfs: Path) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox

    with pytest.raises(SandboxError, match="root filesystem directory"):
        BwrapSandbox("swebench/sweb.eval.x86_64.some-task:latest")


@pytest.mark.docker
def test_rootfs_from_a_docker_image(docker_client, sandbox_image: str, tmp_path: Path, repo: Path) -> None:
    from cwm_agent.sandbox.bwrap import BwrapSandbox, rootfs_from_image

    exported = rootfs_from_image(sandbox_image, tmp_path / "exported")
    with BwrapSandbox(rootfs=exported, repo=repo) as box:
        assert box.run("cat /etc/debian_version | cut -d. -f1; cat app.py | head -1").output == (
            "12\ndef add(a, b):\n")


def unique_seconds() -> str:
    return f"{random.randrange(10**6, 10**7)}"


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"sleep") and marker.encode() in args[1:2]:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
