"""Decorator sugar for registering handlers."""

from __future__ import annotations

from typing import Callable

from .bus import EventBus, Handler


def subscribe(bus: EventBus, *events: str, once: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated function for each of *events* on *bus*."""
    if not events:
        raise TypeError("subscribe() needs at least one event name")

    def register(handler: Handler) -> Handler:
        for event in events:
            if once:
                bus.once(event, handler)
            else:
                bus.on(event, handler)
        return handler

    return register
