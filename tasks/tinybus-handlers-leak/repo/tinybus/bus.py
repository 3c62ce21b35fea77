"""The event bus."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

Handler = Callable[..., Any]
WILDCARD = "*"


class HandlerErrors(Exception):
    """One or more handlers raised while an event was emitted."""

    def __init__(self, event: str, errors: List[BaseException]) -> None:
        super().__init__(f"{len(errors)} handler(s) failed for {event!r}: {errors[0]!r}")
        self.event = event
        self.errors = errors


class EventBus:
    """Maps event names to handlers; `emit` calls them in the order they were added."""

    def __init__(
        self,
        name: str = "default",
        handlers: Dict[str, List[Handler]] = {},
        strict: bool = False,
    ) -> None:
        self.name = name
        self.strict = strict
        self._handlers = handlers
        self._once: set = set()

    def on(self, event: str, handler: Handler) -> Handler:
        if not callable(handler):
            raise TypeError(f"handler for {event!r} is not callable: {handler!r}")
        self._handlers.setdefault(event, []).append(handler)
        return handler

    def once(self, event: str, handler: Handler) -> Handler:
        """Like `on`, but the handler is removed after its first call."""
        self.on(event, handler)
        self._once.add((event, id(handler)))
        return handler

    def off(self, event: str, handler: Optional[Handler] = None) -> None:
        """Remove one handler, or every handler of *event* when none is given."""
        if handler is None:
            self._handlers.pop(event, None)
            return
        handlers = self._handlers.get(event, [])
        if handler in handlers:
            handlers.remove(handler)
            self._once.discard((event, id(handler)))

    def handlers(self, event: str) -> List[Handler]:
        return list(self._handlers.get(event, []))

    def events(self) -> List[str]:
        return sorted(event for event, handlers in self._handlers.items() if handlers)

    def clear(self) -> None:
        self._handlers.clear()
        self._once.clear()

    def emit(self, event: str, *args: Any, **kwargs: Any) -> List[Any]:
        """Call the handlers of *event*, then wildcard handlers; return their results."""
        if event == WILDCARD:
            raise ValueError("cannot emit the wildcard event")
        calls = [(event, h, args) for h in self.handlers(event)]
        calls += [(WILDCARD, h, (event, *args)) for h in self.handlers(WILDCARD)]
        results: List[Any] = []
        errors: List[BaseException] = []
        for registered, handler, call_args in calls:
            if (registered, id(handler)) in self._once:
                self.off(registered, handler)
            try:
                results.append(handler(*call_args, **kwargs))
            except Exception as exc:
                if self.strict:
                    raise
                errors.append(exc)
        if errors:
            raise HandlerErrors(event, errors)
        return results

    def __repr__(self) -> str:
        return f"EventBus({self.name!r}, events={self.events()})"
