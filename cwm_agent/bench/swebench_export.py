"""Export tasks as a SWE-bench 5 dataset that the official harness grades offline.

`swebench.harness.run_evaluation --dataset_name FILE.json` (swebench 5.0.2) reads
rows with prebuilt images: each row needs `image`, `eval_script`, `log_parser`
and `eval_type` beside the usual columns, and the harness applies the
prediction in a container of `image` at /testbed, then runs `eval_script`.

A local task gets a per-task image built here, with no network: the base
sandbox image plus the task's source committed at its base commit, copied to
/testbed by a Dockerfile of one COPY (docker-py's legacy builder, no RUN step).
It is tagged `cwm-agent-task-<id>:<hash>`, the hash covering the base image's
id, the base commit and the recipe, so an existing tag is reused and a changed
input makes a new one. The image's STOPSIGNAL is SIGKILL: the harness starts
`tail -f /dev/null` as PID 1, which ignores SIGTERM, so without it every
`docker stop --time=15` waits the whole 15 s. The container is thrown away
either way.

The row's `eval_script` is `cwm_agent.bench.grade.eval_script(task)`, the script our
grader runs, so both harnesses run the same commands.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cwm_agent.bench.grade import EVAL_TYPE, LOG_PARSER, checkout_archive, eval_script
from cwm_agent.bench.tasks import Task

IMAGE_REPOSITORY = "cwm-agent-task"
IMAGE_LABEL = "cwm-agent"  # value "task-image"; `remove_task_images` finds them by it
DATASET_FILE = "swebench-dataset.json"
# SWE-bench's columns, in its order; the local extension (source, test_command,
# test_files) stays behind because `source` is relative to the row's own file.
SWEBENCH_COLUMNS = (
    "repo", "instance_id", "base_commit", "patch", "test_patch", "problem_statement",
    "hints_text", "created_at", "version", "FAIL_TO_PASS", "PASS_TO_PASS",
    "environment_setup_commit",
)
_DOCKERFILE = """\
FROM {base}
COPY testbed /testbed
WORKDIR /testbed
STOPSIGNAL SIGKILL
"""


class ExportError(Exception):
    """A task cannot be exported; the message says what to fix."""


def task_image_name(task: Task, base_image_id: str) -> str:
    """`cwm-agent-task-<id>:<hash of base image id, base commit and recipe>`."""
    digest = hashlib.sha256("\0".join([base_image_id, task.base_commit, _DOCKERFILE]).encode())
    safe_id = re.sub(r"[^a-z0-9_.-]", "-", task.instance_id.lower()).strip("-._")[:100]
    return f"{IMAGE_REPOSITORY}-{safe_id}:{digest.hexdigest()[:12]}"


def build_task_image(client, task: Task, base_image: str | None = None, *, force: bool = False) -> str:
    """The task's image (built unless its tag exists): base image + source at /testbed."""
    import docker.errors

    if task.source is None:
        raise ExportError(f"task {task.instance_id} has no local source to build an image from")
    if base_image is None:
        from cwm_agent.sandbox.image import ensure_image

        base_image = ensure_image(client)
    try:
        base = client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise ExportError(f"the base image {base_image} is missing; build it with: "
                          "cwm-agent sandbox build") from None
    name = task_image_name(task, base.id)
    if not force:
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            pass
    context = io.BytesIO()
    dockerfile = _DOCKERFILE.format(base=base.id).encode()  # by id: no registry lookup
    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
        with tarfile.open(fileobj=io.BytesIO(checkout_archive(task))) as repo:
            for member in repo.getmembers():
                archive.addfile(member, repo.extractfile(member) if member.isfile() else None)
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=name, rm=True, forcerm=True,
                            network_mode="none", pull=False,
                            labels={IMAGE_LABEL: "task-image", f"{IMAGE_LABEL}.instance": task.instance_id})
    except docker.errors.BuildError as exc:
        raise ExportError(f"building {name} failed: {exc}") from None
    return name


def remove_task_images(client, instance_ids: Sequence[str] | None = None) -> int:
    """Remove the per-task images built here (all, or those of `instance_ids`); returns how many."""
    removed = 0
    for image in client.images.list(filters={"label": f"{IMAGE_LABEL}=task-image"}):
        if instance_ids is not None and image.labels.get(f"{IMAGE_LABEL}.instance") not in instance_ids:
            continue
        for tag in image.tags or [image.id]:
            client.images.remove(tag, force=True)
        removed += 1
    return removed


def swebench_row(task: Task, image: str) -> dict[str, Any]:
    """The task as a SWE-bench 5 row graded in `image` by our eval script."""
    row: dict[str, Any] = {column: getattr(task, column) for column in SWEBENCH_COLUMNS}
    row.update(
        image=image,
        eval_script=task.eval_script or eval_script(task),
        log_parser=task.extra.get("log_parser") or LOG_PARSER,
        eval_type=task.extra.get("eval_type") or EVAL_TYPE,
    )
    return row


def export_swebench(tasks: Sequence[Task], dest_dir: str | Path, *, client=None,
                    base_image: str | None = None,
                    progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Write `dest_dir/swebench-dataset.json` (a JSON list of rows); return its path.

    Local tasks get their per-task image (built when missing); a task that
    already names an image keeps it.
    """
    if not tasks:
        raise ExportError("no tasks to export")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        if task.image:
            image = task.image
        else:
            if client is None:
                from cwm_agent.bench.grade import _docker_client

                client = _docker_client()
            image = build_task_image(client, task, base_image)
            progress(f"{task.instance_id}: {image}")
        rows.append(swebench_row(task, image))
    path = dest / DATASET_FILE
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
