"""tinybus: a small in-process event bus."""

from .bus import EventBus, HandlerErrors
from .decorators import subscribe

__all__ = ["EventBus", "HandlerErrors", "subscribe"]
__version__ = "0.4.0"
