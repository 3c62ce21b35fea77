"""DockerSandbox against the real engine: the repository copy, the start-up scrub, the
container's limits and labels, diff(), clean-up, and the factory."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cwm_agent.sandbox.base import DockerUnavailable, Sandbox, SandboxError
from cwm_agent.sandbox.docker import (
    COPY_ENV,
    EXPIRES_LABEL,
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    cleanup_orphans,
    container_args,
    docker_client,
    engine_answers,
)
from cwm_agent.sandbox.factory import open_sandbox

pytestmark = pytest.mark.docker


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` (the .git included) with a hash of its bytes."""
    out = {}
    for file in sorted(path.rglob("*")):
        if file.is_symlink():
            out[str(file.relative_to(path))] = "link:" + os.readlink(file)
        elif file.is_file():
            out[str(file.relative_to(path))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


@pytest.fixture
def host_repo(tmp_path: Path) -> dict:
    """A repository with history, a branch and a tag the model must not see, a remote,
    and uncommitted work: a modification, a deletion, an untracked and an ignored file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / ".gitignore").write_text("*.env\nbuild/\n")
    (repo / "a.txt").write_text("one\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("X = 1\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    os.symlink("a.txt", repo / "link")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "checkout", "-q", "-b", "future")
    (repo / "future.txt").write_text("from the future\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "future commit")
    future = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "tag", "v9", future)
    git(repo, "checkout", "-q", "main")
    git(repo, "remote", "add", "origin", "https://example.com/repo.git")
    git(repo, "update-ref", "refs/remotes/origin/main", future)
    (repo / "a.txt").write_text("one\ntwo (uncommitted)\n")
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("untracked\n")
    (repo / "secret.env").write_text("TOKEN=hunter2\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("object\n")
    head = git(repo, "rev-parse", "HEAD").strip()
    return {"path": repo, "future": future, "head": head, "before": snapshot(repo)}


@pytest.fixture(params=["bind", "archive"])
def repo_sandbox(request, monkeypatch, docker_client, sandbox_image, host_repo):
    """Both ways a repository gets in: a bound staging copy, and a tar through the API."""
    monkeypatch.setenv(COPY_ENV, request.param)
    with DockerSandbox(sandbox_image, repo=host_repo["path"], command_timeout=20, client=docker_client) as sandbox:
        yield sandbox


def out(sandbox: DockerSandbox, command: str) -> str:
    result = sandbox.run(command)
    assert result.status == "ok", result
    return result.output


def test_the_copy_holds_the_work_tree_as_it_is(repo_sandbox):
    assert isinstance(repo_sandbox, Sandbox)
    assert out(repo_sandbox, "pwd") == "/testbed\n"
    assert out(repo_sandbox, "cat a.txt") == "one\ntwo (uncommitted)\n"
    assert out(repo_sandbox, "cat new.txt") == "untracked\n"
    assert out(repo_sandbox, "ls gone.txt secret.env build 2>&1 | wc -l").strip() == "3"
    assert "No such file" in out(repo_sandbox, "ls secret.env build gone.txt 2>&1")
    assert out(repo_sandbox, "./run.sh") == "run\n"
    assert out(repo_sandbox, "readlink link") == "a.txt\n"
    assert out(repo_sandbox, "sha256sum < blob.bin").split()[0] == hashlib.sha256(bytes(range(256)) * 4).hexdigest()


def test_the_starting_state_is_committed_as_the_base(repo_sandbox, host_repo):
    assert out(repo_sandbox, "git status --porcelain") == ""
    assert out(repo_sandbox, "git rev-parse HEAD").strip() == repo_sandbox.base_commit
    log = out(repo_sandbox, "git log --format='%H %s'").splitlines()
    assert log[0] == f"{repo_sandbox.base_commit} cwm-agent: starting state"
    assert log[1] == f"{host_repo['head']} first"
    assert out(repo_sandbox, "git show --stat --format= HEAD").count("|") == 3  # a.txt, gone.txt, new.txt
    assert out(repo_sandbox, "git log -1 --format='%an <%ae>'") == "cwm-agent <cwm-agent@localhost>\n"


def test_history_is_scrubbed(repo_sandbox, host_repo):
    assert out(repo_sandbox, "git remote") == ""
    assert out(repo_sandbox, "git for-each-ref --format='%(refname)'") == "refs/heads/main\n"
    assert out(repo_sandbox, "git reflog | wc -l").strip() == "0"
    missing = repo_sandbox.run(f"git cat-file -e {host_repo['future']}")
    assert missing.exit_code != 0  # the future commit's object is gone, not just unreferenced
    assert "future" not in out(repo_sandbox, "git log --all --format=%s")


def test_the_host_repository_is_untouched(repo_sandbox, host_repo):
    out(repo_sandbox, "echo changed > a.txt; git add -A; git commit -qm x; git gc -q")
    assert snapshot(host_repo["path"]) == host_repo["before"]


def test_diff_has_every_kind_of_change_and_applies(repo_sandbox, host_repo, tmp_path):
    assert repo_sandbox.diff() == ""
    out(repo_sandbox, "echo three >> a.txt; rm pkg/mod.py; echo fresh > pkg/new.py; "
                      "printf '\\000\\001\\002' > blob.bin; chmod +x new.txt")
    patch = repo_sandbox.diff()
    assert "diff --git a/a.txt b/a.txt" in patch
    assert "deleted file mode 100644" in patch and "new file mode 100644" in patch
    assert "GIT binary patch" in patch
    assert "old mode 100644\nnew mode 100755" in patch
    # The patch turns the starting state into the sandbox's work tree.
    copy = tmp_path / "copy"
    shutil.copytree(host_repo["path"], copy, symlinks=True)
    (copy / "patch.diff").write_text(patch)
    subprocess.run(["git", "-C", str(copy), "apply", "--binary", "patch.diff"], check=True)
    assert (copy / "a.txt").read_text() == "one\ntwo (uncommitted)\nthree\n"
    assert not (copy / "pkg" / "mod.py").exists()
    assert (copy / "blob.bin").read_bytes() == b"\0\1\2"
    assert os.access(copy / "new.txt", os.X_OK)


def test_diff_excludes_paths_and_leaves_the_index_alone(repo_sandbox):
    out(repo_sandbox, "echo staged >> a.txt; git add a.txt; echo loose > loose.txt; git diff > fix.patch")
    for exclude in (["/testbed/fix.patch"], ["fix.patch"]):
        patch = repo_sandbox.diff(exclude=exclude)
        assert "b/loose.txt" in patch and "b/a.txt" in patch
        assert "fix.patch" not in patch
    assert out(repo_sandbox, "git diff --cached --name-only") == "a.txt\n"
    assert out(repo_sandbox, "git status --porcelain") == "M  a.txt\n?? fix.patch\n?? loose.txt\n"


def test_container_limits_and_labels(docker_client, sandbox_image):
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    with DockerSandbox(sandbox_image, cpus=1.5, run_id=run_id, ttl_seconds=900, client=docker_client) as sandbox:
        attrs = docker_client.api.inspect_container(sandbox.container_id)
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["Init"] is True and host["AutoRemove"] is True
        assert host["Memory"] == 4 * 1024 ** 3 and host["PidsLimit"] == 1024
        assert host["NanoCpus"] == 1_500_000_000
        labels = attrs["Config"]["Labels"]
        assert labels[LABEL] == run_id
        assert labels[OWNER_LABEL].split(":")[1] == str(os.getpid())
        assert int(labels[EXPIRES_LABEL]) > 0
        assert out(sandbox, "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max") == "1024\n"
        container_id = sandbox.container_id
    assert not docker_client.containers.list(all=True, ignore_removed=True, filters={"id": container_id})
    with pytest.raises(SandboxError):
        sandbox.run("true")
    sandbox.close()  # twice is fine


class _Recording:
    """A docker-py client that keeps what the engine says of every container it creates."""

    def __init__(self, client):
        self._client, self.created = client, []

    def __getattr__(self, name):
        return getattr(self._client, name)

    @property
    def containers(self):
        recording = self

        class Containers:
            def __getattr__(self, name):
                return getattr(recording._client.containers, name)

            def create(self, *args, **kw):
                container = recording._client.containers.create(*args, **kw)
                recording.created.append(container.attrs)
                return container
        return Containers()


def test_the_sandbox_grader_and_suite_runner_start_containers_through_container_args(
        docker_client, sandbox_image, tmp_path, monkeypatch):
    """One place decides the safety arguments of every container: each of the three calls
    container_args, and the engine shows its choices (no network, docker-init, no new
    privileges, memory without swap, a pids cap, our labels) on each container."""
    import cwm_agent.bench.grade as grade_mod
    import cwm_agent.sandbox.docker as docker_mod
    from cwm_agent.bench.suites import ContainerRunner
    from cwm_agent.bench.tasks import load_tasks
    from cwm_agent.paths import TASKS_DIR

    calls = []

    def spy(run_id, ttl, **kw):
        calls.append(run_id)
        return container_args(run_id, ttl, **kw)

    monkeypatch.setattr(docker_mod, "container_args", spy)
    monkeypatch.setattr(grade_mod, "container_args", spy)
    seen = {}
    with DockerSandbox(sandbox_image, run_id="args-sandbox", client=docker_client) as sandbox:
        seen["sandbox"] = docker_client.api.inspect_container(sandbox.container_id)
    runner = ContainerRunner(docker_client, sandbox_image, tmp_path)
    try:
        runner.container.reload()
        seen["suites"] = runner.container.attrs
    finally:
        runner.close()
    task = next(t for t in load_tasks(TASKS_DIR) if t.instance_id == "demo-slugify-unicode")
    recording = _Recording(docker_client)
    assert grade_mod.grade_task(task, task.patch, client=recording).resolved
    seen["grader"], = recording.created
    calls = [c for c in calls if c != "stage-cleanup"]  # a copy's clean-up, where only the container's root can
    assert len(calls) == 3 and calls[0] == "args-sandbox" and calls[1].startswith("suites-") and calls[2] == "grade"
    for who, attrs in seen.items():
        host, labels = attrs["HostConfig"], attrs["Config"]["Labels"]
        assert host["NetworkMode"] == "none", who
        assert host["Init"] is True and host["SecurityOpt"] == ["no-new-privileges"], who
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"] and host["PidsLimit"] > 0, who
        assert labels[OWNER_LABEL].split(":")[1] == str(os.getpid()) and int(labels[EXPIRES_LABEL]) > time.time(), who
    assert [seen[w]["Config"]["Labels"][LABEL] for w in ("sandbox", "grader")] == ["args-sandbox", "grade"]
    assert seen["sandbox"]["HostConfig"]["AutoRemove"] is True and seen["sandbox"]["HostConfig"]["CapDrop"] == ["MKNOD"]
    assert seen["grader"]["Config"]["Labels"]["cwm-agent.instance"] == task.instance_id


@pytest.mark.parametrize("own", ["network_mode", "network", "privileged", "cap_add", "ports", "security_opt", "init"])
def test_container_args_keeps_every_container_off_the_network_and_unprivileged(own):
    with pytest.raises(ValueError, match="for every container"):
        container_args("r", 60, **{own: "host"})
    args = container_args("r", 60, memory="1g", pids=10, user="0")
    assert (args["network_mode"], args["init"], args["mem_limit"], args["memswap_limit"], args["user"]) == \
        ("none", True, "1g", "1g", "0")


def test_a_plain_directory_gets_a_fresh_repository(docker_client, sandbox_image, tmp_path):
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.txt").write_text("data\n")
    with DockerSandbox(sandbox_image, repo=tmp_path, client=docker_client) as sandbox:
        assert out(sandbox, "python3 main.py; cat sub/data.txt") == "hi\ndata\n"
        assert out(sandbox, "git log --format=%s") == "cwm-agent: starting state\n"
        assert out(sandbox, "git status --porcelain") == ""
        assert out(sandbox, "git config user.name") == "cwm-agent\n"  # the identity the model commits with
        out(sandbox, "echo more >> sub/data.txt")
        assert "+more" in sandbox.diff()


def test_a_repository_without_commits(docker_client, sandbox_image, tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "only.txt").write_text("first file\n")
    with DockerSandbox(sandbox_image, repo=tmp_path, client=docker_client) as sandbox:
        assert out(sandbox, "git ls-files") == "only.txt\n"
        assert out(sandbox, "git rev-parse HEAD").strip() == sandbox.base_commit


def test_a_linked_worktree_is_copied_with_its_own_head(docker_client, sandbox_image, host_repo, tmp_path):
    repo = host_repo["path"]
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "future")
    with DockerSandbox(sandbox_image, repo=tmp_path / "wt", client=docker_client) as sandbox:
        assert out(sandbox, "cat future.txt") == "from the future\n"
        assert out(sandbox, "git symbolic-ref HEAD") == "refs/heads/future\n"
        assert out(sandbox, "git status --porcelain") == ""


HOST_CHANGES = {
    "staged git rm": [["rm", "-q", "a.txt"]],
    "staged git mv": [["mv", "b.txt", "c.txt"]],
    "unstaged rm": [],  # d.txt deleted from the work tree only
    "git rm --cached": [["rm", "-q", "--cached", "keep.txt"]],  # still in the work tree
    "all at once": [["rm", "-q", "a.txt"], ["mv", "b.txt", "c.txt"], ["rm", "-q", "--cached", "keep.txt"]],
}


def repo_with_change(root: Path, change: str) -> tuple[Path, list[str]]:
    """A committed repository, then `change` made on the host. Returns it and what its
    work tree holds ("path:content" lines, as `grep -r ''` prints them)."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name in ("a.txt", "b.txt", "d.txt", "keep.txt"):
        (repo / name).write_text(name[0] + "\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "base")
    for args in HOST_CHANGES[change]:
        git(repo, *args)
    if change in ("unstaged rm", "all at once"):
        (repo / "d.txt").unlink()
    files = sorted(f"./{p.name}:{p.read_text().strip()}" for p in repo.iterdir() if p.is_file())
    return repo, files


@pytest.mark.parametrize("change", list(HOST_CHANGES))
def test_deletions_and_renames_on_the_host_are_the_starting_state(docker_client, sandbox_image, tmp_path, change):
    repo, files = repo_with_change(tmp_path, change)
    with DockerSandbox(sandbox_image, repo=repo, client=docker_client) as sandbox:
        assert out(sandbox, "grep -r '' --exclude-dir=.git . | sort").splitlines() == files
        tracked = sorted(line.split(":")[0][2:] for line in files)
        assert out(sandbox, "git ls-tree -r --name-only HEAD").splitlines() == tracked
        assert out(sandbox, "git status --porcelain") == ""
        assert sandbox.diff() == ""


@pytest.fixture
def swebench_like_image(docker_client, sandbox_image):
    """An image with the repository already at /testbed, checked out (detached) at an
    old commit while a newer one sits on a branch, as SWE-bench's images do."""
    script = """set -e
cd /testbed && git init -q -b main && git config user.email a@b && git config user.name a
echo base > f.txt && git add f.txt && git commit -qm base
echo future > f.txt && git commit -qam future && git tag v2
git remote add origin https://example.com/x.git
git checkout -q HEAD~1
echo dirty > untracked.txt"""
    container = docker_client.containers.run(sandbox_image, ["bash", "-c", script], detach=True,
                                              network_mode="none", labels={LABEL: "test-image-build"})
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0
        tag = f"cwm-agent-test-swe:{uuid.uuid4().hex[:8]}"
        container.commit(repository=tag.split(":")[0], tag=tag.split(":")[1])
    finally:
        container.remove(force=True)
    future = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "git", "-C", "/testbed",
                             "rev-parse", "main"], capture_output=True, text=True, check=True).stdout.strip()
    yield tag, future
    docker_client.images.remove(tag, force=True)


def test_an_image_with_the_repository_inside(docker_client, swebench_like_image):
    image, future = swebench_like_image
    with DockerSandbox(image, repo=None, client=docker_client) as sandbox:
        assert out(sandbox, "cat f.txt untracked.txt") == "base\ndirty\n"
        assert out(sandbox, "git log --format=%s") == "cwm-agent: starting state\nbase\n"
        assert out(sandbox, "git for-each-ref") == ""  # detached HEAD: no branch to keep
        assert sandbox.run(f"git cat-file -e {future}").exit_code != 0
        assert out(sandbox, "git remote") == ""
        out(sandbox, "echo fix > f.txt")
        assert "-base\n+fix" in sandbox.diff()


def test_a_dead_keeper_rebuilds_the_sandbox_from_the_starting_state(repo_sandbox):
    base, first = repo_sandbox.base_commit, repo_sandbox.container_id
    out(repo_sandbox, "echo work > work.txt")
    result = repo_sandbox.run("/bin/kill -9 -1")  # kills the keeper too: the container ends
    assert result.status == "died"
    assert repo_sandbox.container_id != first and repo_sandbox.rebuilds == 1
    assert repo_sandbox.base_commit == base  # same content, same fixed commit date
    assert out(repo_sandbox, "pwd; cat a.txt; ls work.txt 2>&1 | grep -c 'No such'") == \
        "/testbed\none\ntwo (uncommitted)\n1\n"


def test_cleanup_orphans_removes_only_orphans(docker_client, sandbox_image):
    orphan = docker_client.containers.run(
        sandbox_image, ["sleep", "300"], detach=True, network_mode="none", init=True,
        labels={LABEL: "test-orphan", OWNER_LABEL: f"{os.uname().nodename}:999999999:1"},
    )
    try:
        with DockerSandbox(sandbox_image, client=docker_client) as live:
            assert cleanup_orphans(docker_client)[0] >= 1
            assert not docker_client.containers.list(all=True, ignore_removed=True, filters={"id": orphan.id})
            assert docker_client.containers.list(ignore_removed=True, filters={"id": live.container_id})
            assert out(live, "echo alive") == "alive\n"
    finally:
        try:
            orphan.remove(force=True)
        except Exception:
            pass


def test_missing_image_says_how_to_build_it(docker_client):
    with pytest.raises(SandboxError, match="cwm-agent sandbox build"):
        DockerSandbox("cwm-agent-sandbox:does-not-exist", client=docker_client)


def test_a_dead_engine_is_reported_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(DockerUnavailable, match="scripts/install-docker.sh"):
        docker_client(timeout=5)
    assert engine_answers() is False
    with pytest.raises(DockerUnavailable):
        open_sandbox("docker")


def test_open_sandbox_picks_docker(docker_client, sandbox_image):
    with open_sandbox("auto", image=sandbox_image, command_timeout=5) as sandbox:
        assert isinstance(sandbox, DockerSandbox)
        assert out(sandbox, "echo hi") == "hi\n"
    with pytest.raises(SandboxError, match="unknown sandbox kind"):
        open_sandbox("vm")


def test_a_bound_copy_lives_in_a_private_staging_directory(docker_client, sandbox_image, host_repo, monkeypatch):
    monkeypatch.delenv(COPY_ENV, raising=False)
    with DockerSandbox(sandbox_image, repo=host_repo["path"], client=docker_client) as box:
        assert box.copy_mode() == "bind"  # the engine runs on this host
        stage = box._stage
        assert stage is not None and (stage.parent.stat().st_mode & 0o777) == 0o700
        assert out(box, "echo made-inside > inside.txt; ls -a | grep -c cwm-agent-copy") == "0\n"
        assert (stage / "testbed" / "inside.txt").read_text() == "made-inside\n"
        assert not (stage / "testbed" / "secret.env").exists()  # .gitignore'd: never copied
    assert not stage.exists()
    assert snapshot(host_repo["path"]) == host_repo["before"]


def test_an_engine_that_cannot_see_the_copy_falls_back_to_the_api(docker_client, sandbox_image, host_repo,
                                                                  monkeypatch, tmp_path):
    # What an engine in a VM (Docker Desktop, colima) does with a host path it cannot see:
    # it binds an empty directory of its own. The copy must then go through the API.
    monkeypatch.delenv(COPY_ENV, raising=False)
    empty = tmp_path / "what-the-vm-sees"
    empty.mkdir()
    spec = DockerSandbox._container_spec

    def vm_spec(self):
        made = spec(self)
        if self._stage is not None:
            made["host_config"]["Binds"] = [f"{empty}:{self.repo_root}:rw"]
        return made

    monkeypatch.setattr(DockerSandbox, "_container_spec", vm_spec)
    monkeypatch.setattr(DockerSandbox, "_bind_unusable", False)
    with DockerSandbox(sandbox_image, repo=host_repo["path"], client=docker_client) as box:
        assert DockerSandbox._bind_unusable and box.copy_mode() == "archive" and box._stage is None
        assert out(box, "cat a.txt new.txt") == "one\ntwo (uncommitted)\nuntracked\n"
    assert list(empty.iterdir()) == []


KILLED_AGENT = """
import sys, time
from cwm_agent.sandbox.docker import DockerSandbox
box = DockerSandbox(sys.argv[1], repo=sys.argv[2])
print(box.container_id, box._stage, flush=True)
time.sleep(3600)
"""


def test_the_copy_of_an_agent_killed_with_sigkill_is_swept(docker_client, sandbox_image, host_repo, monkeypatch):
    monkeypatch.delenv(COPY_ENV, raising=False)
    agent = subprocess.Popen([sys.executable, "-c", KILLED_AGENT, sandbox_image, str(host_repo["path"])],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        container_id, stage = agent.stdout.readline().split()
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        assert Path(stage, "testbed", "a.txt").is_file()  # nobody was left to delete it
        for _ in range(120):  # the keeper sees its stdin close and the container goes
            if not docker_client.containers.list(all=True, ignore_removed=True, filters={"id": container_id}):
                break
            time.sleep(0.25)
        with DockerSandbox(sandbox_image, repo=host_repo["path"], client=docker_client) as live:
            _, swept = cleanup_orphans(docker_client, image=sandbox_image)
            assert swept >= 1 and not Path(stage).exists()
            assert live._stage.is_dir()  # a live agent's copy stays
            assert out(live, "cat a.txt") == "one\ntwo (uncommitted)\n"
    finally:
        if agent.poll() is None:
            agent.kill()


def test_a_staging_parent_made_by_somebody_else_is_refused(monkeypatch, tmp_path):
    from cwm_agent.sandbox import docker as sandbox_docker

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # what another user could have planted in /tmp
    monkeypatch.setattr(sandbox_docker, "stage_parents", lambda: [tmp_path / "no-ram" / "x", shared])
    with pytest.raises(SandboxError, match="not a private directory"):
        sandbox_docker.make_stage("run", 10)
    shared.chmod(0o700)
    stage = sandbox_docker.make_stage("run", 10)
    assert stage.parent == shared and (stage / "owner").read_text().count(":") == 2
