"""Patch parsing, diffstat, and git's apply checks, on real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cwm_agent.sandbox.patch import (
    ApplyCheck,
    FileStat,
    PatchError,
    apply_to_repo,
    check_applies,
    diffstat,
    diffstat_summary,
    parse_patch,
    summarize,
)

BINARY_OLD = b"bin\x00\x01\x02"
BINARY_NEW = b"bin\x00\x03\x04\xff"


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True, check=True)
    return done.stdout.decode()


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    (path / "a.txt").write_text("one\ntwo\nthree\n")
    (path / "gone.txt").write_text("bye\n")
    (path / "blob.bin").write_bytes(BINARY_OLD)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "base")
    return path


def diff_of_changes(repo: Path) -> str:
    """A patch with a modified, a new, a deleted text file and a changed and new binary file."""
    (repo / "a.txt").write_text("one\n2\nthree\nfour\n")
    (repo / "new.txt").write_text("fresh\n")
    (repo / "gone.txt").unlink()
    (repo / "blob.bin").write_bytes(BINARY_NEW)
    (repo / "new.bin").write_bytes(b"\x00\x00new")
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "--binary")
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-qfd")
    return patch


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def patch(tmp_path: Path) -> str:
    return diff_of_changes(make_repo(tmp_path / "source"))


def test_diffstat_counts_text_new_deleted_and_binary_files(patch: str) -> None:
    stats = sorted(diffstat(patch))
    assert stats == [
        ("a.txt", 2, 1),
        ("blob.bin", 0, 0),
        ("gone.txt", 0, 1),
        ("new.bin", 0, 0),
        ("new.txt", 1, 0),
    ]
    assert all(isinstance(s, FileStat) for s in stats)
    assert diffstat_summary(patch) == "5 files changed, 3 insertions(+), 2 deletions(-)"


def test_parse_patch_flags_binary_new_and_deleted_files(patch: str) -> None:
    files = {f.path: f for f in parse_patch(patch)}
    assert files["blob.bin"].is_binary_file and files["new.bin"].is_binary_file
    assert files["new.txt"].is_added_file and files["new.bin"].is_added_file
    assert files["gone.txt"].is_removed_file
    assert not files["a.txt"].is_binary_file


@pytest.mark.parametrize("stats, line", [
    ([FileStat("a", 1, 0)], "1 file changed, 1 insertion(+)"),
    ([FileStat("a", 0, 1)], "1 file changed, 1 deletion(-)"),
    ([FileStat("a", 0, 0)], "1 file changed, 0 insertions(+), 0 deletions(-)"),
    ([FileStat("a", 2, 0), FileStat("b", 0, 3)], "2 files changed, 2 insertions(+), 3 deletions(-)"),
])
def test_summary_speaks_like_git_shortstat(stats: list[FileStat], line: str) -> None:
    assert summarize(stats) == line


@pytest.mark.parametrize("garbage", ["", "   \n", "hello world\nthis is no patch\n",
                                     "I fixed it by editing foo.py"])
def test_garbage_is_rejected_not_parsed_as_empty(garbage: str) -> None:
    with pytest.raises(PatchError, match="no file changes found"):
        parse_patch(garbage)
    with pytest.raises(PatchError):
        diffstat(garbage)


def test_truncated_hunk_is_rejected() -> None:
    broken = "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-a\n"
    with pytest.raises(PatchError, match="malformed"):
        parse_patch(broken)


def test_check_applies_on_host_against_base_not_working_tree(repo: Path, patch: str) -> None:
    # Dirty the working tree in a way that conflicts with the patch: the check
    # is against HEAD, so it still passes, and nothing is touched.
    (repo / "a.txt").write_text("something else entirely\n")
    status_before = git(repo, "status", "--porcelain")
    result = check_applies(patch, repo)
    assert isinstance(result, ApplyCheck) and result.ok and bool(result)
    assert git(repo, "status", "--porcelain") == status_before
    assert (repo / "a.txt").read_text() == "something else entirely\n"


def test_check_applies_on_host_fails_when_base_differs(repo: Path, patch: str) -> None:
    (repo / "a.txt").write_text("changed upstream\n")
    git(repo, "commit", "-qam", "moved on")
    result = check_applies(patch, repo)
    assert not result.ok and not result
    assert "a.txt" in result.output


def test_check_applies_on_empty_patch_is_false(repo: Path) -> None:
    assert not check_applies("", repo)


def test_apply_to_repo_applies_text_and_binary_changes(repo: Path, patch: str) -> None:
    result = apply_to_repo(patch, repo)
    assert result.ok
    assert (repo / "a.txt").read_text() == "one\n2\nthree\nfour\n"
    assert (repo / "new.txt").read_text() == "fresh\n"
    assert not (repo / "gone.txt").exists()
    assert (repo / "blob.bin").read_bytes() == BINARY_NEW
    assert (repo / "new.bin").read_bytes() == b"\x00\x00new"
    # Unstaged: the user reviews and commits.
    assert git(repo, "diff", "--cached") == ""


def test_apply_to_repo_check_only_changes_nothing(repo: Path, patch: str) -> None:
    assert apply_to_repo(patch, repo, check_only=True).ok
    assert git(repo, "status", "--porcelain") == ""


def test_apply_to_repo_refuses_conflicting_local_changes_atomically(repo: Path, patch: str) -> None:
    (repo / "a.txt").write_text("local work\n")
    with pytest.raises(PatchError, match="(?s)does not apply.*stash"):
        apply_to_repo(patch, repo)
    assert (repo / "a.txt").read_text() == "local work\n"
    assert (repo / "gone.txt").exists()  # nothing half-applied
    assert not (repo / "new.txt").exists()


def test_apply_to_repo_rejects_garbage(repo: Path) -> None:
    with pytest.raises(PatchError):
        apply_to_repo("not a patch\n", repo)
    assert git(repo, "status", "--porcelain") == ""


def test_apply_to_plain_directory_without_git(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f.txt").write_text("x\n")
    patch = "diff --git a/f.txt b/f.txt\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-x\n+y\n"
    apply_to_repo(patch, plain)
    assert (plain / "f.txt").read_text() == "y\n"


@pytest.mark.docker
def test_check_applies_in_a_docker_sandbox_against_its_base(docker_client, sandbox_image: str,
                                                            repo: Path, patch: str) -> None:
    from cwm_agent.sandbox.docker import DockerSandbox

    with DockerSandbox(sandbox_image, repo=repo, client=docker_client) as box:
        box.run("cd /tmp && export KEEP=1")
        box.run("echo 'model was here' > /testbed/a.txt")  # the working tree does not matter
        assert check_applies(patch, box).ok
        wrong = patch.replace("-two", "-TWO")
        result = check_applies(wrong, box)
        assert not result.ok and "a.txt" in result.output
        assert not check_applies("garbage\n", box).ok
        # Nothing changed for the model: cwd, environment, index, working tree.
        assert box.run("echo $KEEP; pwd; cd /testbed && git status --porcelain").output == (
            "1\n/tmp\n M a.txt\n")
