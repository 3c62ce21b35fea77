"""The repository copy on its own (no engine): one selection, two writers that agree."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cwm_agent.sandbox.base import SandboxError
from cwm_agent.sandbox.repo_copy import RepoCopy


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    (path / "pkg").mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    (path / ".gitignore").write_text("*.env\n")
    (path / "pkg" / "mod.py").write_text("X = 1\n")
    (path / "run.sh").write_text("#!/bin/sh\n")
    (path / "run.sh").chmod(0o755)
    os.symlink("/etc/passwd", path / "outside")  # a link goes in as a link, never followed
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    (path / "new.txt").write_text("untracked\n")
    (path / "secret.env").write_text("TOKEN=hunter2\n")
    (path / "pkg" / "mod.py").write_text("X = 2\n")
    return path


def tree(top: Path) -> dict[str, str]:
    out = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes().decode("latin-1")
    return out


def test_a_git_copy_leaves_ignored_files_out_and_keeps_links_and_modes(repo, tmp_path):
    copy = RepoCopy(repo)
    copy.copy_to(tmp_path / "copy")
    files = tree(tmp_path / "copy")
    assert "secret.env" not in files
    assert files["outside"] == "link:/etc/passwd"
    assert files["pkg/mod.py"] == "X = 2\n" and files["new.txt"] == "untracked\n"
    assert any(name.startswith(".git/objects/") for name in files)
    assert os.access(tmp_path / "copy" / "run.sh", os.X_OK)
    assert copy.is_git and copy.dirty == ["new.txt", "pkg/mod.py"]


def test_the_tar_and_the_directory_hold_the_same_files(repo, tmp_path):
    copy = RepoCopy(repo, "/testbed")
    copy.copy_to(tmp_path / "copy")
    with tarfile.open(fileobj=io.BytesIO(copy.bytes())) as tar:
        tar.extractall(tmp_path / "untarred", filter="fully_trusted")
        assert all(member.uid == 0 for member in tar.getmembers())  # git refuses other owners
    assert tree(tmp_path / "untarred" / "testbed") == tree(tmp_path / "copy")


def test_a_plain_directory_goes_in_whole(tmp_path):
    plain = tmp_path / "plain"
    (plain / "deep" / "er").mkdir(parents=True)
    (plain / "deep" / "er" / "f.txt").write_text("f\n")
    (plain / "x.env").write_text("no .gitignore here\n")
    copy = RepoCopy(plain)
    copy.copy_to(tmp_path / "copy")
    assert tree(tmp_path / "copy") == {"deep/er/f.txt": "f\n", "x.env": "no .gitignore here\n"}
    assert not copy.is_git and copy.dirty is None


def test_a_git_directory_is_refused_rather_than_copied_whole(repo):
    # Copied as a plain directory it would take ignored files along: refuse instead.
    with pytest.raises(SandboxError, match="rev-parse failed"):
        RepoCopy(repo / ".git").listed()


def test_a_missing_directory_says_what_to_pass(tmp_path):
    with pytest.raises(SandboxError, match="--repo"):
        RepoCopy(tmp_path / "nope")
