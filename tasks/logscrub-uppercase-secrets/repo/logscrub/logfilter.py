"""A logging.Filter that scrubs records before any handler formats them."""

from __future__ import annotations

import logging
from typing import Optional

from .scrubber import Scrubber


class ScrubFilter(logging.Filter):
    def __init__(self, scrubber: Optional[Scrubber] = None, name: str = "") -> None:
        super().__init__(name)
        self.scrubber = scrubber or Scrubber()

    def filter(self, record: logging.LogRecord) -> bool:
        # Render the message once, scrub it, and drop the args so handlers
        # cannot re-render the original.
        record.msg = self.scrubber.scrub(record.getMessage())
        record.args = None
        return True
