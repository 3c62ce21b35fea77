"""Shared fixtures. Docker tests never skip under CI=true: a missing engine fails them."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
        message = f"Docker engine unavailable ({exc}); run scripts/install-docker.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client):
    """The base sandbox image, built (once, cached by recipe hash) when missing."""
    from cwm_agent.sandbox import image

    return image.ensure_image(docker_client)
