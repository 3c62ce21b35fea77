"""The base sandbox image: name it by recipe hash, build it once, from a Dockerfile or offline."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Literal

from cwm_agent import __version__
from cwm_agent.paths import SANDBOX_DIR

REPOSITORY = "cwm-agent-sandbox"
RECIPE_FILES = ("Dockerfile", "packages.txt")
Method = Literal["auto", "dockerfile", "offline"]
Progress = Callable[[str], None]


def packages() -> list[str]:
    lines = (SANDBOX_DIR / "packages.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for name in RECIPE_FILES:
        digest.update(name.encode() + b"\0" + (SANDBOX_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def default_image() -> str:
    """`cwm-agent-sandbox:VERSION-HASH`: a new recipe is a new tag, so stale images are never used."""
    return f"{REPOSITORY}:{__version__}-{recipe_hash()}"


def image_exists(client, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def choose_method(method: Method) -> Literal["dockerfile", "offline"]:
    # No network probe to find out whether a registry answers: hosts that have
    # mmdebstrap build offline, the rest use the Dockerfile.
    if method != "auto":
        return method
    return "offline" if shutil.which("mmdebstrap") else "dockerfile"


def build_offline(name: str, progress: Progress) -> None:
    if not shutil.which("mmdebstrap"):
        raise RuntimeError("mmdebstrap is missing; install it with: apt-get install -y mmdebstrap")
    debstrap = [
        "mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages()),
        "--customize-hook=chroot $1 mkdir -p /testbed",
        "bookworm", "-",
    ]
    importer = [
        "docker", "import",
        "--change", "ENV LANG=C.UTF-8",
        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "WORKDIR /testbed",
        "--change", 'CMD ["/bin/bash"]',
        "-", name,
    ]
    progress("running mmdebstrap (Debian bookworm, minbase) and docker import")
    strap = subprocess.Popen(debstrap, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    imported = subprocess.run(importer, stdin=strap.stdout, capture_output=True, text=True)
    strap.stdout.close()
    strap_err = strap.stderr.read().decode(errors="replace")
    if strap.wait() != 0:
        raise RuntimeError(f"mmdebstrap failed:\n{strap_err[-2000:]}")
    if imported.returncode != 0:
        raise RuntimeError(f"docker import failed: {imported.stderr.strip()}")


def build_dockerfile(client, name: str, progress: Progress) -> None:
    for chunk in client.api.build(path=str(SANDBOX_DIR), tag=name, rm=True, decode=True):
        if "stream" in chunk and chunk["stream"].strip():
            progress(chunk["stream"].strip())
        if "error" in chunk:
            raise RuntimeError(f"docker build failed: {chunk['error']}")


def build_image(client, *, method: Method = "auto", force: bool = False,
                progress: Progress = lambda _msg: None) -> str:
    """Build the base image unless an image of this recipe exists; return its name."""
    name = default_image()
    if image_exists(client, name) and not force:
        progress(f"{name} is up to date")
        return name
    chosen = choose_method(method)
    if chosen == "offline":
        build_offline(name, progress)
    else:
        build_dockerfile(client, name, progress)
    client.images.get(name).tag(REPOSITORY, "latest")
    return name


def ensure_image(client, progress: Progress = lambda _msg: None) -> str:
    return build_image(client, progress=progress)


def image_size_mb(client, name: str) -> float:
    return client.images.get(name).attrs["Size"] / 1e6
