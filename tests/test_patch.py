"""Patch parsing, diffstat, and git's apply checks, on real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cwm_agent.sandbox.patch import (
    APPLY_COMMANDS,
    ApplyCheck,
    FileStat,
    PatchError,
    apply_to_repo,
    changed_files,
    check_applies,
    dataless_binary_files,
    diffstat,
    diffstat_summary,
    git_unquote,
    parse_patch,
    patched_files,
    path_in_repo,
    split_dataless_binaries,
    summarize,
)

FUZZ = "patch --batch --forward --fuzz=5 -p1 -i"

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


# --- the official chain, and binary files with no data ------------------------------------

def pyc_noise_patch(repo: Path, *, tracked_pyc: bool = False) -> str:
    """What CWM writes in a repository without a .gitignore after running pytest:
    `git add -A && git diff --cached`, whose .pyc files are "Binary files ... differ", no data."""
    if tracked_pyc:  # a .pyc committed at the base, which the patch then changes and deletes
        (repo / "__pycache__").mkdir()
        (repo / "__pycache__" / "old.cpython-311.pyc").write_bytes(BINARY_OLD)
        (repo / "__pycache__" / "gone.cpython-311.pyc").write_bytes(BINARY_OLD)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "pyc at the base")
        (repo / "__pycache__" / "old.cpython-311.pyc").write_bytes(BINARY_NEW)
        (repo / "__pycache__" / "gone.cpython-311.pyc").unlink()
    (repo / "a.txt").write_text("one\n2\nthree\n")
    (repo / "__pycache__").mkdir(exist_ok=True)
    (repo / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00pyc")
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached")  # no --binary: what the model writes
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-qfdx")
    return patch


def test_binary_files_without_data_are_named_and_split_off(tmp_path: Path, patch: str) -> None:
    noisy = pyc_noise_patch(make_repo(tmp_path / "noisy"), tracked_pyc=True)
    assert "Binary files /dev/null and b/__pycache__/a.cpython-311.pyc differ" in noisy
    kept, skipped = split_dataless_binaries(noisy)
    assert skipped == ["__pycache__/a.cpython-311.pyc", "__pycache__/gone.cpython-311.pyc",
                       "__pycache__/old.cpython-311.pyc"]
    assert dataless_binary_files(noisy) == skipped
    assert [f.path for f in parse_patch(kept)] == ["a.txt"] and "Binary files" not in kept
    # binary files that carry their data (git diff --binary) are kept
    assert split_dataless_binaries(patch) == (patch, [])


def test_check_runs_the_official_chain_and_names_what_it_skips(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    noisy = pyc_noise_patch(repo)
    result = check_applies(noisy, repo)
    # git apply refuses binary hunks without data; the chain's last command passes over them
    assert result.ok and result.applied_with == FUZZ == APPLY_COMMANDS[-1], result.output
    assert "cannot apply binary patch" in result.output
    assert result.skipped == ("__pycache__/a.cpython-311.pyc",)
    assert git(repo, "status", "--porcelain") == ""


def test_check_fails_where_the_grader_fails_on_binary_files_without_data(tmp_path: Path) -> None:
    # A committed .pyc deleted without data: GNU patch refuses it too, so the whole chain
    # fails, as it does in the grader and the official harness.
    repo = make_repo(tmp_path / "repo")
    noisy = pyc_noise_patch(repo, tracked_pyc=True)
    result = check_applies(noisy, repo)
    assert not result.ok and result.applied_with is None
    for command in APPLY_COMMANDS:
        assert f"$ {command} " in result.output


def test_apply_skips_binary_files_without_data(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    noisy = pyc_noise_patch(repo)
    result = apply_to_repo(noisy, repo)
    assert result.ok and result.skipped == ("__pycache__/a.cpython-311.pyc",)
    assert result.applied_with == "git apply --verbose"  # what is left applies cleanly
    assert (repo / "a.txt").read_text() == "one\n2\nthree\n"
    assert not (repo / "__pycache__").exists()  # no empty .pyc files
    assert git(repo, "status", "--porcelain") == " M a.txt\n"


def drifted(repo: Path, elsewhere: Path) -> str:
    """A patch made elsewhere, before a.txt's first line changed: git (--3way without the
    patch's blobs) refuses it, only `patch --fuzz` takes it."""
    source = make_repo(elsewhere)
    (source / "a.txt").write_text("zero\none\ntwo\nthree\n")
    git(source, "commit", "-qam", "more")
    (source / "a.txt").write_text("zero\none\nTWO\nthree\n")
    (repo / "a.txt").write_text("ZERO\none\ntwo\nthree\n")
    git(repo, "commit", "-qam", "upstream moved")
    return git(source, "diff")


def test_apply_uses_the_official_chain_fuzz_included(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    patch = drifted(repo, tmp_path / "source")
    assert check_applies(patch, repo).applied_with == FUZZ
    result = apply_to_repo(patch, repo)
    assert result.ok and result.applied_with == FUZZ
    assert (repo / "a.txt").read_text() == "ZERO\none\nTWO\nthree\n"
    assert git(repo, "status", "--porcelain") == " M a.txt\n"  # no .orig or .rej debris
    assert git(repo, "diff", "--cached") == ""


def test_apply_keeps_local_changes_and_refuses_untracked_files_in_the_way(repo: Path, patch: str) -> None:
    (repo / "blob.bin").write_bytes(b"local binary work")  # a file the patch changes
    with pytest.raises(PatchError, match="does not apply"):
        apply_to_repo(patch, repo)
    git(repo, "checkout", "--", "blob.bin")
    (repo / "new.txt").write_text("mine\n")  # untracked, where the patch creates a file
    with pytest.raises(PatchError, match="new.txt"):
        apply_to_repo(patch, repo)
    assert (repo / "new.txt").read_text() == "mine\n" and (repo / "gone.txt").exists()
    (repo / "new.txt").unlink()
    (repo / "unrelated.txt").write_text("local\n")  # local changes elsewhere are kept
    with (repo / "gone.txt").open("a"):
        pass
    assert apply_to_repo(patch, repo).applied_with == "git apply --verbose"
    assert (repo / "unrelated.txt").read_text() == "local\n"
    assert (repo / "a.txt").read_text() == "one\n2\nthree\nfour\n"
    # applied again: the chain refuses it, and nothing changes
    status = git(repo, "status", "--porcelain")
    with pytest.raises(PatchError, match="does not apply"):
        apply_to_repo(patch, repo)
    assert git(repo, "status", "--porcelain") == status


@pytest.mark.docker
def test_check_in_a_docker_sandbox_runs_the_chain_on_a_clone_of_the_base(docker_client, sandbox_image: str,
                                                                        tmp_path: Path) -> None:
    from cwm_agent.sandbox.docker import DockerSandbox

    repo = make_repo(tmp_path / "repo")
    noisy = pyc_noise_patch(repo)
    with DockerSandbox(sandbox_image, repo=repo, client=docker_client) as box:
        box.run("echo 'model was here' > /testbed/a.txt && git add a.txt && cd /tmp")
        before = box.run("ls /tmp | sort").output
        result = check_applies(noisy, box)
        assert result.ok and result.applied_with == FUZZ, result.output
        assert result.skipped == ("__pycache__/a.cpython-311.pyc",)
        assert not check_applies(noisy.replace("-two", "-TWO"), box).ok
        # the model's tree, index and cwd are as they were; the clone is gone
        assert box.run("pwd; cd /testbed && git status --porcelain && ls -a").output == (
            "/tmp\nM  a.txt\n.\n..\n.git\na.txt\nblob.bin\ngone.txt\n")
        assert box.run("ls /tmp | sort").output == before


# --- file names as git writes them: spaced (as they are) and quoted (C escapes) --------------

CAFE = "caf\u00e9.txt"  # git's default core.quotePath writes it "a/caf\303\251.txt"
ODD_BASE = {"my dir/my file.txt": "one\ntwo\n", CAFE: "x\n", 'say "hi".txt': "q\n",
            "tab\there.txt": "t\n", "gone file.txt": "bye\n", "old name.txt": "moved\n"}


def odd_names_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    git(path, "config", "core.quotePath", "true")  # git's default, whatever the host's config says
    for name, text in ODD_BASE.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    (path / "pic ture.bin").write_bytes(BINARY_OLD)
    (path / "caf\u00e9.bin").write_bytes(BINARY_OLD)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "base")
    return path


def odd_names_patch(repo: Path, *, binary: bool = True) -> str:
    """A real `git diff` over names with spaces, a quote, a tab and non-ASCII letters: a
    modified, a new, a deleted, a renamed and two binary files (data-less unless `binary`)."""
    (repo / "my dir" / "my file.txt").write_text("one\n2\n")
    (repo / CAFE).write_text("x\ny\n")
    (repo / 'say "hi".txt').write_text("q\nr\n")
    (repo / "tab\there.txt").write_text("t\nu\n")
    (repo / "new file.txt").write_text("fresh\n")
    (repo / "gone file.txt").unlink()
    git(repo, "mv", "old name.txt", "new name.txt")
    (repo / "pic ture.bin").write_bytes(BINARY_NEW)
    (repo / "caf\u00e9.bin").write_bytes(BINARY_NEW)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "-M", *(["--binary"] if binary else []))
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-qfd")
    return patch


ODD_PATHS = ["caf\u00e9.bin", CAFE, "gone file.txt", "my dir/my file.txt", "new file.txt", "new name.txt",
             "pic ture.bin", 'say "hi".txt', "tab\there.txt"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "no-binary-data"])
def test_paths_of_a_real_git_diff_with_spaced_and_quoted_names(tmp_path: Path, binary: bool) -> None:
    patch = odd_names_patch(odd_names_repo(tmp_path / "repo"), binary=binary)
    # what git wrote: spaced names as they are, the others quoted with C escapes
    assert "diff --git a/my dir/my file.txt b/my dir/my file.txt\n" in patch
    assert 'diff --git "a/caf\\303\\251.txt" "b/caf\\303\\251.txt"\n' in patch
    assert 'diff --git "a/say \\"hi\\".txt" "b/say \\"hi\\".txt"\n' in patch
    assert 'diff --git "a/tab\\there.txt" "b/tab\\there.txt"\n' in patch
    assert sorted(patched_files(patch)) == ODD_PATHS
    assert sorted(diffstat(patch)) == [
        ("caf\u00e9.bin", 0, 0), (CAFE, 1, 0), ("gone file.txt", 0, 1), ("my dir/my file.txt", 1, 1),
        ("new file.txt", 1, 0), ("new name.txt", 0, 0), ("pic ture.bin", 0, 0), ('say "hi".txt', 1, 0),
        ("tab\there.txt", 1, 0),
    ]
    files = {path_in_repo(f.path): f for f in changed_files(patch)}
    assert files["new file.txt"].is_added_file and files["gone file.txt"].is_removed_file
    assert files["new name.txt"].is_rename and path_in_repo(files["new name.txt"].source_file) == "old name.txt"
    assert files["pic ture.bin"].is_binary_file and files["caf\u00e9.bin"].is_binary_file
    dataless = [] if binary else ["caf\u00e9.bin", "pic ture.bin"]
    assert sorted(dataless_binary_files(patch)) == dataless
    kept, skipped = split_dataless_binaries(patch)
    assert sorted(skipped) == dataless and sorted(patched_files(kept)) == sorted(set(ODD_PATHS) - set(dataless))


def test_apply_to_repo_with_spaced_and_quoted_names(tmp_path: Path) -> None:
    patch = odd_names_patch(odd_names_repo(tmp_path / "source"))
    repo = odd_names_repo(tmp_path / "repo")
    result = apply_to_repo(patch, repo)
    assert result.ok and result.skipped == ()
    assert (repo / CAFE).read_text() == "x\ny\n" and (repo / "tab\there.txt").read_text() == "t\nu\n"
    assert (repo / 'say "hi".txt').read_text() == "q\nr\n"
    assert (repo / "my dir" / "my file.txt").read_text() == "one\n2\n"
    assert (repo / "new file.txt").read_text() == "fresh\n" and not (repo / "gone file.txt").exists()
    assert (repo / "new name.txt").read_text() == "moved\n" and not (repo / "old name.txt").exists()
    assert (repo / "caf\u00e9.bin").read_bytes() == BINARY_NEW == (repo / "pic ture.bin").read_bytes()


@pytest.mark.parametrize("quoted, name", [
    ('"a/caf\\303\\251.txt"', "a/caf\u00e9.txt"),
    ('"tab\\there"', "tab\there"),
    ('"say \\"hi\\" \\\\ back"', 'say "hi" \\ back'),
    ('"\\a\\b\\f\\n\\r\\v"', "\a\b\f\n\r\v"),
    ('"bad\\377byte"', "bad\udcffbyte"),  # not UTF-8: surrogate-escaped, as patch text holds it
    ("my file.txt", "my file.txt"),  # not quoted: as it is
    ('"', '"'),
])
def test_git_unquote_reads_git_c_quoting(quoted: str, name: str) -> None:
    assert git_unquote(quoted) == name


def test_patched_files_names_the_files_of_a_patch_with_broken_hunks() -> None:
    broken = "diff --git a/my file.txt b/my file.txt\n--- a/my file.txt\n+++ b/my file.txt\n@@ -1,3 +1,3 @@\n-a\n"
    assert patched_files(broken) == ["my file.txt"]
    assert patched_files("no patch at all\n") == []
