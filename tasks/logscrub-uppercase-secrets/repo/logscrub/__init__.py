"""logscrub: mask secrets in log lines."""

from .logfilter import ScrubFilter
from .scrubber import Scrubber

__all__ = ["ScrubFilter", "Scrubber"]
__version__ = "2.1.0"
