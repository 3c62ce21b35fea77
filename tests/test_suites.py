"""Running a project's suite on the host and in a container: same verdicts, and the
container keeps unreviewed code (a mutant) away from the host and the network."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from cwm_agent.bench.suites import ContainerRunner, HostRunner

SUITE = textwrap.dedent("""
    import os, socket, sys, time

    def test_passes():
        assert 1 + 1 == 2

    def test_fails():
        assert 1 + 1 == 3

    def test_where_am_i():
        print(f"HOST={socket.gethostname()}")

    def test_network_is_unreachable():
        try:
            socket.create_connection(("10.255.255.1", 9), timeout=2)
        except OSError:
            return
        raise AssertionError("reached the network")

    def test_host_files_are_out_of_reach():
        assert not os.path.exists(os.environ.get("HOST_SECRET", "/nonexistent-secret"))
""")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "scratch" / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_x.py").write_text(SUITE)
    return root


@pytest.mark.docker
def test_a_container_run_reads_like_a_host_run_and_is_isolated(docker_client, sandbox_image, project, tmp_path):
    secret = tmp_path / "secret.txt"  # beside the scratch folder, not in it
    secret.write_text("hunter2")
    (project / "tests" / "test_x.py").write_text(SUITE.replace('"/nonexistent-secret"', repr(str(secret))))
    runner = ContainerRunner(docker_client, sandbox_image, tmp_path / "scratch")
    try:
        inside = runner.run(project, ["tests/test_x.py"], timeout=60, extra=("-s",))
        assert inside.statuses == {
            "tests/test_x.py::test_passes": "PASSED",
            "tests/test_x.py::test_fails": "FAILED",
            "tests/test_x.py::test_where_am_i": "PASSED",
            "tests/test_x.py::test_network_is_unreachable": "PASSED",
            "tests/test_x.py::test_host_files_are_out_of_reach": "PASSED",
        }
        assert inside.exit_code == 1 and f"HOST={runner.container.id[:12]}" in inside.output
        outside = HostRunner(sys.executable).run(project, ["tests/test_x.py"], timeout=60, extra=("-s",))
        assert outside.statuses["tests/test_x.py::test_fails"] == "FAILED"
        assert f"HOST={runner.container.id[:12]}" not in outside.output
        assert outside.statuses["tests/test_x.py::test_host_files_are_out_of_reach"] == "FAILED"

        (project / "tests" / "test_x.py").write_text("import time\n\ndef test_slow():\n    time.sleep(600)\n")
        slow = runner.run(project, ["tests/test_x.py"], timeout=3)
        assert slow.exit_code is None and slow.seconds < 60  # `timeout` inside ended it
    finally:
        runner.close()
    assert not docker_client.containers.list(all=True, ignore_removed=True, filters={"id": runner.container.id})
