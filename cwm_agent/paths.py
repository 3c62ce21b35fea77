"""Where the project's data lives: the sandbox image recipe, the in-sandbox helper scripts, the bundled
tasks, and the set-up scripts (install-docker.sh, vllm-cpu.sh) that fixes and `serve` point at.

The data is package data, found with importlib.resources, so an installed wheel needs no
checkout. In the repository it has one copy, in the top-level folders `sandbox/`, `tasks/` and
`scripts/`; `cwm_agent/_data/NAME` are symbolic links to them,
which an editable install (scripts/setup.sh) reads through and which the wheel and the
sdist hold as real files. Either way the names below are real directories on disk (wheels
install unzipped): docker-py builds from SANDBOX_DIR, tasks are copied out of TASKS_DIR.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The checkout's root when the package runs from one (editable install); in an installed
# wheel it is site-packages and holds nothing of ours. Only the tests use it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The package-data folder `name` as a real path (links resolved: in a checkout, the top-level folder)."""
    folder = resources.files("cwm_agent").joinpath("_data", name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"cwm-agent's data folder {name!r} is missing from {folder}; reinstall the package "
            "(pip install --force-reinstall cwm-agent), or in a checkout restore the link "
            f"cwm_agent/_data/{name} -> ../../{name}"
        )
    return Path(str(folder)).resolve()


SANDBOX_DIR = data_dir("sandbox")
TASKS_DIR = data_dir("tasks")
SCRIPTS_DIR = data_dir("scripts")
