"""Task sets as the official SWE-bench harness takes them (its `--dataset_name`): a Hugging Face
dataset name (through the `datasets` library), a .parquet file, a `save_to_disk` folder, a
.json/.jsonl of rows, or cwm-agent's task folders (tasks.load_tasks); then `--split` and
`--instance-ids`.

A row cwm-agent cannot run is named with what it lacks before anything runs: a SWE-bench row in
the older format has neither its prebuilt `image` nor its `eval_script` (SWE-bench 5 rows carry
both), and no local `source` either.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cwm_agent.bench.tasks import Task, TaskError, _from_row, load_tasks

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
V5_HINT = ("SWE-bench 5 rows carry both (make them with swebench's make_test_spec, as "
           "evals/swebench-verified-cwm.toml shows, and pass that .jsonl)")


def load_task_set(source: str | Path, *, split: str | None = None) -> list[Task]:
    """Tasks from any of the forms above; ``split`` picks a split of a Hub dataset or of a
    saved DatasetDict (default "test", the harness's)."""
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".parquet":
            return _tasks(_parquet_rows(path), path)
        if path.is_dir() and _saved_dataset(path):
            return _tasks(_disk_rows(path, split), path)
        return load_tasks(path)
    text = str(source)
    if HUB_NAME.match(text) and not text.endswith((".json", ".jsonl", ".parquet")):
        return _tasks(_hub_rows(text, split), Path.cwd() / text.replace("/", "__"))
    raise TaskError(f"{source}: no such file or folder, and not a Hugging Face dataset name (OWNER/NAME); "
                    "pass a task folder, a .json/.jsonl/.parquet file, a save_to_disk folder or a dataset name")


def only(tasks: Sequence[Task], instance_ids: Iterable[str] | None) -> list[Task]:
    """The tasks named (``--instance-ids``), in the set's order; an id the set lacks is an error."""
    if not instance_ids:
        return list(tasks)
    wanted = [i for i in instance_ids if i]
    known = {t.instance_id for t in tasks}
    missing = [i for i in wanted if i not in known]
    if missing:
        raise TaskError(f"no task {', '.join(map(repr, missing[:5]))}{' ...' if len(missing) > 5 else ''} in the "
                        f"task set ({len(known)} tasks); check --instance-ids")
    keep = set(wanted)
    return [t for t in tasks if t.instance_id in keep]


def unrunnable(task: Task) -> str | None:
    """Why cwm-agent cannot run this row, or None: it needs a local source, or an image and the
    script that grades inside it."""
    if task.source is not None:
        return None
    lacks = [name for name, value in (("image", task.image), ("eval_script", task.eval_script)) if not value]
    if not lacks:
        return None
    return (f"{task.instance_id}: the row has no {' and no '.join(f'`{n}`' for n in lacks)} (nor a local `source`), "
            f"so there is nothing to run it in{' or to grade it with' if 'eval_script' in lacks else ''}; {V5_HINT}")


# --- reading ------------------------------------------------------------------------------

def _datasets():
    try:
        import datasets
    except ImportError:
        raise TaskError("reading a .parquet, a save_to_disk folder or a Hub dataset needs the `datasets` library: "
                        "pip install 'cwm-agent[datasets]'") from None
    return datasets


def _saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return list(_datasets().Dataset.from_parquet(str(path)))
    except TaskError:
        raise
    except Exception as exc:
        raise TaskError(f"{path}: cannot read it as parquet: {exc}") from None


def _disk_rows(path: Path, split: str | None) -> list[dict[str, Any]]:
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise TaskError(f"{path}: cannot read it as a save_to_disk dataset: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        name = split or "test"
        if name not in loaded:
            raise TaskError(f"{path} has no split {name!r} (it has {', '.join(loaded)}); pass --split")
        loaded = loaded[name]
    return list(loaded)


def _hub_rows(name: str, split: str | None) -> list[dict[str, Any]]:
    datasets = _datasets()
    try:
        return list(datasets.load_dataset(name, split=split or "test"))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskError(f"cannot load the dataset {name} (split {split or 'test'}) from the Hugging Face Hub: "
                        f"{first[:300]}; where the Hub is unreachable, save it with "
                        "datasets' save_to_disk elsewhere and pass the folder") from None


def _tasks(rows: list[dict[str, Any]], origin: Path) -> list[Task]:
    if not rows:
        raise TaskError(f"{origin}: no rows")
    tasks, seen = [], set()
    for number, row in enumerate(rows, 1):
        task = _from_row(_plain(row), origin, f"{origin}: row {number}")
        if task.instance_id in seen:
            raise TaskError(f"{origin}: instance_id {task.instance_id!r} appears twice")
        seen.add(task.instance_id)
        tasks.append(task)
    return tasks


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset row as the JSON rows are: timestamps as ISO text."""
    return {key: value.isoformat() if isinstance(value, (_dt.datetime, _dt.date)) else value
            for key, value in row.items()}
