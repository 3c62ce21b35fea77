"""The package as a user gets it: built into a wheel and an sdist, installed into a fresh
virtual environment without extras, run from a directory that is not the checkout.

Docker tier: `sandbox build` and a whole `solve --task demo` episode (edit, create, submit
against the scripted server) run from the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from cwm_agent.paths import PROJECT_ROOT
from cwm_agent.testing.scripted_server import ScriptedServer, think

pytestmark = pytest.mark.docker

DATA = ("sandbox", "tasks", "scripts")  # top-level folders shipped as cwm_agent/_data/<name>
CACHES = ("__pycache__", ".pytest_cache")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _checked(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = _run(cmd, **kwargs)
    assert result.returncode == 0, f"{cmd} exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _checkout_data() -> set[str]:
    """Data files of the checkout, as the package holds them ("_data/tasks/...")."""
    found = set()
    for name in DATA:
        for path in (PROJECT_ROOT / name).rglob("*"):
            rel = path.relative_to(PROJECT_ROOT)
            if path.is_file() and not path.name.endswith(".pyc") and not set(rel.parts) & set(CACHES):
                found.add(f"_data/{rel.as_posix()}")
    return found


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """`python -m build` (an sdist, then a wheel built from that sdist) and `--wheel` (a wheel straight
    from the tree, as `pip install .` makes)."""
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy (links kept as links), so the checkout's build/ folder, which other
    # builds share and which can hold stale files, never reaches these dists.
    source = out / "source"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "cwm-runs", *CACHES, "*.pyc", ".hypothesis"))
    _checked([sys.executable, "-m", "build", "--outdir", str(out / "via-sdist"), str(source)])
    _checked([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "direct"), str(source)])
    (sdist,) = (out / "via-sdist").glob("*.tar.gz")
    (wheel,) = (out / "via-sdist").glob("*.whl")
    (direct,) = (out / "direct").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "direct": direct}


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory) -> dict[str, str]:
    """The environment for installed commands: no PYTHONPATH, no virtualenv, no user or project config."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CWM_AGENT_", "PYTHON")) and k not in ("VIRTUAL_ENV", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def venv(dists, clean_env, tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) holding the wheel and its core dependencies, no extras."""
    root = tmp_path_factory.mktemp("venv") / "wheel-venv"
    _checked([sys.executable, "-m", "venv", "--without-pip", str(root)])
    # this environment's pip installs into the new one: no ensurepip run, same package index
    _checked([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q",
              "--disable-pip-version-check", str(dists["wheel"])])
    return root


@pytest.fixture
def cwd(tmp_path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def cli(venv: Path, env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run([str(venv / "bin" / "cwm-agent"), *args], cwd=cwd, env=env, timeout=timeout)


def test_sdist_holds_the_data_and_no_links(dists):
    with tarfile.open(dists["sdist"]) as tar:
        members = tar.getmembers()
    top = members[0].name.split("/")[0]
    names = {m.name.removeprefix(top + "/") for m in members if m.isfile()}
    assert not [m.name for m in members if m.issym() or m.islnk()]
    packaged = {n.removeprefix("cwm_agent/") for n in names if n.startswith("cwm_agent/_data/")}
    assert packaged == _checkout_data()
    assert {"pyproject.toml", "README.md", "tests/conftest.py", "cwm_agent/cli/main.py"} <= names


def test_wheels_from_the_sdist_and_from_the_tree_hold_the_same_files(dists):
    def listing(path: Path) -> set[str]:
        with zipfile.ZipFile(path) as whl:
            return {n for n in whl.namelist() if ".dist-info/" not in n}

    direct, via_sdist = listing(dists["direct"]), listing(dists["wheel"])
    assert direct == via_sdist
    assert {n.removeprefix("cwm_agent/") for n in direct if n.startswith("cwm_agent/_data/")} == _checkout_data()
    # every package of the checkout is in the wheel (packages.find takes new ones without edits)
    packages = {p.parent.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "cwm_agent").rglob("__init__.py")
                if "_data" not in p.parts}
    assert {p + "/__init__.py" for p in packages} <= direct


def test_installed_package_lives_in_the_venv(venv, clean_env, cwd):
    probe = ("import json, sys, cwm_agent, cwm_agent.paths as p; print(json.dumps({'file': cwm_agent.__file__, "
             "'sandbox': str(p.SANDBOX_DIR), 'tasks': str(p.TASKS_DIR), 'scripts': str(p.SCRIPTS_DIR), "
             "'path': sys.path}))")
    seen = json.loads(_checked([str(venv / "bin" / "python"), "-c", probe], cwd=cwd, env=clean_env).stdout)
    site = Path(seen["file"]).parent.parent
    assert Path(seen["file"]).is_relative_to(venv), seen["file"]
    assert not [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(PROJECT_ROOT)], seen["path"]
    for name in DATA:
        folder = Path(seen[name])
        assert folder == site / "cwm_agent" / "_data" / name and folder.is_dir() and not folder.is_symlink()
    assert (Path(seen["sandbox"]) / "edit.py").read_bytes() == (PROJECT_ROOT / "sandbox" / "edit.py").read_bytes()
    assert (Path(seen["tasks"]) / "demo-slugify-unicode" / "repo" / ".gitignore").is_file()
    assert (Path(seen["scripts"]) / "vllm-cpu.sh").is_file()  # `serve` on a CPU builds vLLM with it
    # no .pth or editable finder points back into the checkout
    for pth in site.glob("*.pth"):
        assert str(PROJECT_ROOT) not in pth.read_text(), pth


def test_help_and_doctor_from_the_wheel(venv, clean_env, cwd):
    helped = cli(venv, clean_env, cwd, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "solve" in helped.stdout and "doctor" in helped.stdout
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    doctor = cli(venv, clean_env, cwd, "doctor", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert doctor.returncode != 0
    assert "Traceback" not in doctor.stdout + doctor.stderr
    assert "model endpoint" in doctor.stdout and "FAIL" in doctor.stdout


def test_solve_without_the_local_extra_says_how_to_install_it(venv, clean_env, cwd, docker_client):
    result = cli(venv, clean_env, cwd, "solve", "--task", "demo", "--out", str(cwd / "run"))
    assert result.returncode == 2
    out = result.stdout + result.stderr
    assert "Traceback" not in out and "ImportError" not in out and "ModuleNotFoundError" not in out
    assert "pip install 'cwm-agent[local]'" in " ".join(out.split()), out


def test_sandbox_build_finds_its_recipe(venv, clean_env, cwd, docker_client):
    from cwm_agent.sandbox import image

    result = cli(venv, clean_env, cwd, "sandbox", "build", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    # the same recipe, so the same tag as the checkout's
    assert image.default_image() in result.stdout


EPISODE = [
    think("Fold accents before splitting.", "edit",
           "slugkit/core.py\n<<<<<<< SEARCH\nimport re\n=======\nimport re\nimport unicodedata\n>>>>>>> REPLACE"),
    think("A regression test.", "create",
           "tests/test_accents.py\nfrom slugkit import slugify\n\n\ndef test_accents():\n"
           "    assert slugify(\"Crème Brûlée\")\n"),
    think("Write the patch, new file included.", "bash", "git add -A && git diff --cached > /tmp/fix.patch"),
    think("Submit it.", "submit", "/tmp/fix.patch"),
    "Done.\n</think>\n## Issue Summary\n\nAccents.\n\n## Solution and Code Changes\n\nAn import and a test.",
]


def test_solve_demo_from_the_wheel(venv, clean_env, cwd, docker_client):
    with ScriptedServer(EPISODE) as server:
        result = cli(venv, clean_env, cwd, "solve", "--task", "demo", "--base-url", server.base_url,
                     "--out", str(cwd / "run"), "--json", "--command-timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["exit"] == "submitted"
    steps = json.loads((cwd / "run" / "trajectory.json").read_text())["steps"]
    assert [s["action"]["tool"] for s in steps[:4]] == ["edit", "create", "bash", "submit"]
    patch = (cwd / "run" / "patch.diff").read_text()
    assert "+import unicodedata" in patch
    assert "b/tests/test_accents.py" in patch and "new file mode" in patch
