"""Task images on demand (sandbox/pull.py through eval): a missing image with --pull never, a pull
that fails, one pull per image however many workers want it, and --remove-images. Real Docker;
every image name points at a registry on 127.0.0.1 where nothing listens, so a pull fails at
once and no traffic leaves this machine.
"""

from __future__ import annotations

import json
import threading

import pytest

from cwm_agent.bench import runner as evaluate
from cwm_agent.bench.tasks import load_tasks
from cwm_agent.config import Settings
from cwm_agent.models.connect import connect
from cwm_agent.sandbox.pull import ImageUnavailable, Puller
from cwm_agent.testing.scripted_server import ScriptedServer

pytestmark = pytest.mark.docker
MISSING = "127.0.0.1:5999/cwm-agent-test/missing:1"


def row(instance_id: str, image: str) -> dict:
    return {"instance_id": instance_id, "repo": "cwm-agent/none", "base_commit": "0" * 40,
            "problem_statement": "Nothing to fix.", "image": image, "eval_script": "echo graded"}


def run(tmp_path, rows: list[dict], script: list, **opts):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedServer(script, model_id="facebook/cwm") as server:
        settings = Settings(base_url=server.base_url, max_turns=3, max_format_errors=1, command_timeout=30)
        options = evaluate.EvalOptions(out=tmp_path / "eval", grade=False, **opts)
        evaluate.run_eval(load_tasks(path), options, settings, model=connect(base_url=server.base_url))
    return [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]


def test_a_missing_image_with_pull_never_is_a_named_infrastructure_error(tmp_path):
    (result,) = run(tmp_path, [row("t-never", MISSING)], [], pull="never")
    assert result["infrastructure"] and result["exit"] == "sandbox_error"
    assert f"docker pull {MISSING}" in result["detail"] and "--pull never" in result["detail"]


def test_a_pull_that_fails_is_an_infrastructure_error_and_each_image_is_pulled_once(tmp_path, docker_client):
    results = run(tmp_path, [row("t-a", MISSING), row("t-b", MISSING)], [], pull="missing", workers=2, attempts=2)
    assert len(results) == 4 and all(r["infrastructure"] for r in results)
    assert all(f"pulling {MISSING} failed" in r["detail"] and f"docker pull {MISSING}" in r["detail"] for r in results)
    # Four attempts at once, one image: the pulls queue behind one lock, never two at a time.
    puller, calls, active, most = Puller(docker_client, "missing"), [], [0], [0]
    real = puller._pull

    def counting(image):
        active[0] += 1
        most[0] = max(most[0], active[0])
        calls.append(image)
        try:
            real(image)
        finally:
            active[0] -= 1

    puller._pull = counting
    errors = []

    def ensure():
        try:
            puller.ensure(MISSING)
        except ImageUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and len(errors) == 4  # a failed pull is tried again by the next attempt, one at a time


def test_remove_images_removes_each_task_image_after_its_last_attempt(tmp_path, docker_client, sandbox_image):
    tag = "127.0.0.1:5999/cwm-agent-test/present:1"
    docker_client.images.get(sandbox_image).tag(tag)
    try:
        puller = Puller(docker_client, "never")
        puller.ensure(tag)  # present: nothing to pull, even under `never`
        results = run(tmp_path, [row("t-present", tag)], ["no tool call"] * 4, pull="never", attempts=2,
                      remove_images=True)
        assert len(results) == 2 and not any("docker pull" in r["detail"] for r in results)
        with pytest.raises(Exception):
            docker_client.images.get(tag)  # removed after the last attempt
        docker_client.images.get(sandbox_image)  # the image under the tag stays
    finally:
        try:
            docker_client.images.remove(tag)
        except Exception:
            pass
