"""Per-step snapshots (cwm_agent/sandbox/snapshot.py) in real Docker sandboxes: take and
restore every kind of change, several steps back, the model's git state left alone, an
unchanged step costing no commit, the snapshot's diff against SessionSandbox.diff, and the
diff applied in a fresh sandbox (big, binary and Latin-1 files), and the errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cwm_agent.sandbox import snapshot
from cwm_agent.sandbox.docker import DockerSandbox
from cwm_agent.sandbox.snapshot import Snapshot, SnapshotError

pytestmark = pytest.mark.docker

# Every file and folder under the repo root but .git: "path<TAB>mode sha256" (folders without a hash).
LISTING = r"""
import hashlib, os
for top, dirs, names in os.walk("."):
    if top == ".":
        dirs.remove(".git")
    dirs.sort()
    for name in dirs:
        print(os.path.join(top, name)[2:] + "/", oct(os.lstat(os.path.join(top, name)).st_mode), sep="\t")
    for name in sorted(names):
        path = os.path.join(top, name)
        with open(path, "rb") as f:
            print(path[2:], oct(os.lstat(path).st_mode) + " " + hashlib.sha256(f.read()).hexdigest(), sep="\t")
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "a.txt").write_text("one\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    (repo / "pkg" / "mod.py").write_text("X = 1\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "first")
    return repo


@pytest.fixture
def box(docker_client, sandbox_image, repo):
    with DockerSandbox(sandbox_image, repo=repo, command_timeout=60, client=docker_client) as sandbox:
        yield sandbox


def sh(sandbox: DockerSandbox, command: str) -> str:
    """A command in the model's session; it must succeed."""
    result = sandbox.run(command)
    assert result.status == "ok" and result.exit_code == 0, result
    return result.output


def listing(sandbox: DockerSandbox) -> dict[str, str]:
    code, out, err = sandbox.exec(["python3", "-c", LISTING], timeout=120)
    assert code == 0, err
    return dict(line.split("\t", 1) for line in out.decode().splitlines())


def without_logs(files: dict[str, str]) -> dict[str, str]:
    return {path: what for path, what in files.items() if not path.endswith(".log")}


CHANGES = ("echo changed >> a.txt; rm gone.txt; echo new > new.txt; mkdir -p deep/er; echo x > deep/er/f.txt; "
           "chmod +x run.sh; echo ignored > debug.log")


def counting_execs(sandbox: DockerSandbox) -> list[list[str]]:
    """The argv of each exec the sandbox runs from now on."""
    execs: list[list[str]] = []
    real = sandbox.exec
    sandbox.exec = lambda argv, **kw: (execs.append(argv), real(argv, **kw))[1]
    return execs


def test_restore_undoes_every_kind_of_change(box):
    before = listing(box)
    execs = counting_execs(box)
    first = snapshot.take(box, "step-0")
    assert len(execs) == 1  # one exec per take
    sh(box, CHANGES)
    changed = listing(box)
    assert changed != before and "deep/er/" in changed and changed["run.sh"].startswith("0o100755")
    execs.clear()
    assert snapshot.restore(box, first) == sorted(["a.txt", "deep/er/f.txt", "gone.txt", "new.txt", "run.sh"])
    assert len(execs) == 1  # and per restore
    after = listing(box)
    assert without_logs(after) == before  # contents, modes; new.txt, deep/ and deep/er/ gone
    assert "deep/" not in after and after["run.sh"].startswith("0o100644")
    assert "debug.log" in after  # ignored: neither saved nor deleted
    assert sh(box, "cat a.txt gone.txt") == "one\nto be deleted\n"
    assert snapshot.restore(box, first) == []  # already there: nothing to write


def test_restore_goes_back_several_steps_and_forward_again(box):
    states, snaps = [], []
    parent = None
    for step, command in enumerate(["echo 1 >> a.txt", "rm pkg/mod.py; echo 2 > pkg/two.py",
                                    "echo 3 >> a.txt; chmod +x pkg/two.py"]):
        states.append(listing(box))
        parent = snapshot.take(box, f"step-{step}", parent)
        snaps.append(parent)
        sh(box, command)
    states.append(listing(box))
    snaps.append(snapshot.take(box, "step-3", parent))
    assert len(set(snaps)) == 4 and len({s.tree for s in snaps}) == 4
    # The commits chain, and the private refs hold them.
    assert sh(box, f"git rev-parse {snaps[3].commit}^ {snaps[3].commit}^^").split() == \
        [snaps[2].commit, snaps[1].commit]
    assert sh(box, "git rev-parse refs/cwm-agent/snapshots/step-1").strip() == snaps[1].commit
    snapshot.restore(box, snaps[1])  # two steps back
    assert listing(box) == states[1]
    snapshot.restore(box, snaps[0])
    assert listing(box) == states[0]
    snapshot.restore(box, snaps[3])  # and forward again (redo)
    assert listing(box) == states[3]
    assert sh(box, "cat a.txt; test -x pkg/two.py && echo exec") == "one\n1\n3\nexec\n"


def test_the_models_git_state_is_left_alone(box):
    sh(box, "echo staged >> a.txt; git add a.txt; echo later >> a.txt; echo loose > loose.txt; "
            "git checkout -q -b work")

    def state() -> tuple[str, ...]:
        code, out, _ = box.exec(["bash", "-c", "sha256sum .git/index; git rev-parse HEAD; git symbolic-ref HEAD; "
                                 "git for-each-ref refs/heads refs/tags; git stash list"], timeout=60)
        assert code == 0
        return (out.decode(),)

    status = sh(box, "git status --porcelain --untracked-files=all")
    assert status == "MM a.txt\n?? loose.txt\n"
    git_before = state()
    first = snapshot.take(box, "step-0")
    assert state() == git_before  # the index file's bytes too: not even its stat data was refreshed
    assert sh(box, "git status --porcelain --untracked-files=all") == status  # no trace of the snapshot
    git_before = state()  # (git status may have refreshed the index)
    sh(box, "echo more > more.txt")
    second = snapshot.take(box, "step-1", first)
    assert sh(box, "git status --porcelain --untracked-files=all") == status + "?? more.txt\n"
    assert state() == git_before
    snapshot.restore(box, first)
    assert state() == git_before
    assert sh(box, "git status --porcelain --untracked-files=all") == status
    assert sh(box, "git diff --cached a.txt | grep '^+[a-z]'") == "+staged\n"  # the staged part still staged
    assert sh(box, "cat a.txt") == "one\nstaged\nlater\n"
    assert second != first


def test_an_unchanged_step_returns_its_parent(box):
    first = snapshot.take(box, "step-0")
    assert snapshot.take(box, "step-1", first) is first
    sh(box, "echo ignored > build.log")  # ignored files are not the snapshot's business
    assert snapshot.take(box, "step-2", first) is first
    assert box.run("git rev-parse -q --verify refs/cwm-agent/snapshots/step-1").exit_code != 0  # no commit made
    sh(box, "echo changed >> a.txt")
    changed = snapshot.take(box, "step-3", first)
    assert changed != first and changed.tree != first.tree
    assert sh(box, f"git rev-parse {changed.commit}^").strip() == first.commit
    # Without a parent a commit is always made, with the same tree for the same files.
    again = snapshot.take(box, "step-4")
    assert again.tree == changed.tree and again.commit != changed.commit


def test_the_snapshot_diff_is_the_sandbox_diff(box):
    assert snapshot.diff(box, snapshot.take(box, "start")) == "" == box.diff()
    sh(box, "echo three >> a.txt; rm pkg/mod.py; mkdir -p pkg/sub; echo fresh > pkg/sub/new.py; "
            "(printf '\\000\\377'; head -c 3000 /dev/urandom) > blob.bin; chmod +x run.sh; echo x > 'naïve name.txt'")
    taken = snapshot.take(box, "step")
    patch = snapshot.diff(box, taken)
    assert patch == box.diff()
    for part in ("diff --git a/a.txt b/a.txt", "deleted file mode 100644", "b/pkg/sub/new.py", "GIT binary patch",
                 "old mode 100644\nnew mode 100755", "b/naïve name.txt"):
        assert part in patch
    sh(box, "echo after >> a.txt")  # the snapshot's diff stays what it was
    assert snapshot.diff(box, taken) == patch != box.diff()


def test_apply_rebuilds_the_state_in_a_fresh_sandbox(box, docker_client, sandbox_image, repo, monkeypatch):
    sh(box, "python3 -c \"open('big.txt', 'w').write(''.join(f'line {i} of a big text file\\n' for i in range(9000)))\"; "
            "(printf '\\000\\377'; head -c 5000 /dev/urandom) > blob.bin; printf 'caf\\351 cr\\350me\\n' > latin1.txt; "
            "echo changed >> a.txt; rm gone.txt; mkdir -p new/dir; echo n > new/dir/n.txt; chmod +x run.sh")
    taken = snapshot.take(box, "last")
    patch = snapshot.diff(box, taken)
    raw = patch.encode("utf-8", "surrogateescape")
    assert len(raw) > 200 * 1024 and b"caf\xe9 cr\xe8me" in raw and "GIT binary patch" in patch
    assert raw.decode("utf-8", "replace") == box.diff()  # diff() decodes lossily, ours exactly
    monkeypatch.setattr(snapshot, "PIECES_PER_EXEC", 1)  # one 96 KiB piece per exec: several execs
    with DockerSandbox(sandbox_image, repo=repo, command_timeout=60, client=docker_client) as fresh:
        assert fresh.base_commit == box.base_commit and listing(fresh) != listing(box)
        execs = counting_execs(fresh)
        snapshot.apply(fresh, patch)
        encoded = 4 * -(-len(raw) // 3)  # base64's length
        assert len(execs) == -(-encoded // snapshot.PIECE) >= 4
        del fresh.exec
        assert listing(fresh) == listing(box)
        assert fresh.diff() == box.diff()
        assert sh(fresh, "git status --porcelain | grep -c .").strip() == "7"  # applied to the work tree only
        assert sh(fresh, "git diff --cached --name-only") == ""
        assert sh(fresh, "ls /tmp | grep -c cwm-agent-patch || true").strip() == "0"  # the temp files are gone
        # Applied twice, it no longer applies: nothing changes and the error says so.
        with pytest.raises(SnapshotError, match="do not apply"):
            snapshot.apply(fresh, patch)
        assert listing(fresh) == listing(box)
    snapshot.apply(box, "")  # nothing to apply: no error, nothing run


def test_a_pruned_private_index_is_rebuilt(box):
    first = snapshot.take(box, "step-0")
    sh(box, "echo only-in-the-snapshot >> a.txt")
    snapshot.take(box, "step-1", first)
    # The model deletes our refs and prunes: a.txt's new blob is gone, though the private
    # index still names it (its stat data says the file did not change since).
    sh(box, "git for-each-ref --format='delete %(refname)' refs/cwm-agent | git update-ref --stdin; "
            "git gc -q --prune=now")
    assert box.run("git rev-parse -q --verify refs/cwm-agent/snapshots/step-1").exit_code != 0
    again = snapshot.take(box, "step-2")
    assert "+only-in-the-snapshot" in snapshot.diff(box, again)
    with pytest.raises(SnapshotError, match="not in this sandbox's repository"):
        snapshot.restore(box, Snapshot("1" * 40, "2" * 40))
    assert sh(box, "tail -1 a.txt") == "only-in-the-snapshot\n"


def test_a_deleted_git_directory_is_a_clear_error(box):
    first = snapshot.take(box, "step-0")
    sh(box, "echo changed >> a.txt; rm -rf .git")
    for call in (lambda: snapshot.take(box, "step-1", first), lambda: snapshot.restore(box, first),
                 lambda: snapshot.diff(box, first)):
        with pytest.raises(SnapshotError, match=r"\.git in /testbed is gone.*/undo is unavailable") as caught:
            call()
        assert "files and the model's session are unaffected" in str(caught.value)
    with pytest.raises(SnapshotError, match=r"\.git in /testbed is gone"):
        snapshot.apply(box, "diff --git a/a.txt b/a.txt\n")
    assert sh(box, "cat a.txt") == "one\nchanged\n"  # nothing was touched
    with pytest.raises(ValueError, match="label"):
        snapshot.take(box, "../escape")
