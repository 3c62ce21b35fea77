"""Shared fixtures. Docker tests never skip under CI=true: a missing engine fails them."""

from __future__ import annotations

import pytest

from _ci import unavailable  # IN_CI and what it decides: tests/_ci.py


def _docker_client():
    import docker

    client = docker.from_env(timeout=30)
    client.ping()
    return client


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = _docker_client()
    except Exception as exc:  # the engine is absent or not running
        unavailable(f"Docker engine unavailable ({exc}); run scripts/install-docker.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client):
    """The base sandbox image, built (once, cached by recipe hash) when missing."""
    from cwm_agent.sandbox import image

    return image.ensure_image(docker_client)
