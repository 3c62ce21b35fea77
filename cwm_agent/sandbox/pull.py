"""Task images on demand: SWE-bench rows name a prebuilt image per task; it is pulled before the
task's first attempt when the engine lacks it (`--pull missing`, the default), every run (`always`)
or never (`never`: a missing image is an error that says how to get it). At most one pull per
image at a time, however many workers want it; a failed pull is an infrastructure error naming
the image and the `docker pull` command, never a task failure. `remove` frees the disk after a
task's last attempt (`eval --remove-images`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cwm_agent.sandbox.base import SandboxError

POLICIES = ("never", "missing", "always")


class ImageUnavailable(SandboxError):
    """The task's image is not on the engine and could not (or may not) be pulled."""


def _present(client: Any, image: str) -> bool:
    import docker.errors

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


class Puller:
    """Makes sure task images are on the engine, one pull per image at a time.
    ``on_progress(image, text)`` hears the pull's progress (text None: finished)."""

    def __init__(self, client: Any, policy: str = "missing",
                 on_progress: Callable[[str, str | None], None] = lambda _image, _text: None):
        if policy not in POLICIES:
            raise ValueError(f"--pull is one of {', '.join(POLICIES)}, not {policy!r}")
        self.client, self.policy, self.on_progress = client, policy, on_progress
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._ready: set[str] = set()
        self.pulls: list[tuple[str, float]] = []  # (image, seconds) of every pull made

    def ensure(self, image: str) -> None:
        with self._guard:
            lock = self._locks.setdefault(image, threading.Lock())
        with lock:  # a second worker waits for the first one's pull instead of starting its own
            if image in self._ready:
                return
            present = _present(self.client, image)
            if self.policy == "never" and not present:
                raise ImageUnavailable(f"the image {image} is not on this Docker engine and --pull never forbids "
                                       f"pulling it: run `docker pull {image}` first (or use --pull missing)")
            if self.policy == "always" or not present:
                self._pull(image)
            self._ready.add(image)

    def _pull(self, image: str) -> None:
        import time

        import docker.errors
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(image)
        started = time.monotonic()
        layers: dict[str, tuple[int, int]] = {}
        try:
            for event in self.client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise ImageUnavailable(f"pulling {image} failed: {event['error']}; pull it by hand: "
                                           f"docker pull {image}")
                detail = event.get("progressDetail") or {}
                if event.get("id") and detail.get("total"):
                    layers[event["id"]] = (detail.get("current", 0), detail["total"])
                    done, total = sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())
                    self.on_progress(image, f"{done / total:.0%} of {total / 1e6:,.0f} MB")
        except docker.errors.DockerException as exc:
            reason = str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0][:300]
            raise ImageUnavailable(f"pulling {image} failed: {reason}; pull it by hand: docker pull {image}") from None
        finally:
            self.on_progress(image, None)
        if not _present(self.client, image):
            raise ImageUnavailable(f"pulling {image} ended without the image; pull it by hand: docker pull {image}")
        self.pulls.append((image, time.monotonic() - started))

    def remove(self, image: str) -> bool:
        """Remove the image (its tag) to free the disk; False when it is in use or gone already."""
        import docker.errors

        try:
            self.client.images.remove(image)
        except docker.errors.DockerException:
            return False
        with self._guard:
            self._ready.discard(image)
        return True
