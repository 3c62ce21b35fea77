"""Which of our containers a test left behind: the one check of the eval, grader and
agreement tests.

Our containers carry the labels `container_labels` gives them (`cwm-agent=<run id>`, the
owner process, the expiry); they have no names to go by. A check notes the containers this
process owns when it is made, and `left()` lists those that appeared since and are still
there: exactly what the test's own runs created, whatever other processes run meanwhile.
"""

from __future__ import annotations

from typing import Any

from cwm_agent.sandbox.docker import LABEL, our_containers


class Leftovers:
    """``everyone``: containers other processes started count too (a CLI in a subprocess, Ray
    workers); only for tests that run alone."""

    def __init__(self, client: Any, run_id: str | None = None, *, labels: dict[str, str] | None = None,
                 everyone: bool = False):
        self.client, self.run_id, self.labels, self.everyone = client, run_id, labels, everyone
        self.before = {c.id for c in self._ours()}

    def _ours(self) -> list[Any]:
        return our_containers(self.client, self.run_id, mine=not self.everyone, labels=self.labels)

    def left(self) -> list[Any]:
        """The containers of ours that appeared since this check was made and are still there."""
        return [c for c in self._ours() if c.id not in self.before]

    def describe(self) -> list[str]:
        return [f"{c.short_id} ({LABEL}={(c.labels or {}).get(LABEL)}, {c.status})" for c in self.left()]
