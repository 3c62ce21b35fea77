import pytest

from tinybus import EventBus, HandlerErrors


def test_emit_calls_handlers_in_order():
    bus = EventBus("orders")
    calls = []
    bus.on("order.created", lambda order: calls.append(("first", order)))
    bus.on("order.created", lambda order: calls.append(("second", order)))
    bus.emit("order.created", 7)
    assert calls == [("first", 7), ("second", 7)]


def test_emit_returns_results():
    bus = EventBus("prices")
    bus.on("price.quote", lambda amount: amount * 2)
    bus.on("price.quote", lambda amount: amount + 1)
    assert bus.emit("price.quote", 10) == [20, 11]


def test_keyword_arguments_are_passed():
    bus = EventBus("users")
    seen = {}
    bus.on("user.renamed", lambda **kw: seen.update(kw))
    bus.emit("user.renamed", old="ann", new="anne")
    assert seen == {"old": "ann", "new": "anne"}


def test_unknown_event_calls_nothing():
    assert EventBus("quiet").emit("nobody.listens") == []


def test_once_handler_runs_once():
    bus = EventBus("signup")
    calls = []
    bus.once("user.signed_up", calls.append)
    bus.emit("user.signed_up", "a")
    bus.emit("user.signed_up", "b")
    assert calls == ["a"]


def test_off_removes_one_handler():
    bus = EventBus("cache")
    calls = []
    keep = bus.on("cache.flushed", lambda: calls.append("keep"))
    drop = bus.on("cache.flushed", lambda: calls.append("drop"))
    bus.off("cache.flushed", drop)
    bus.emit("cache.flushed")
    assert calls == ["keep"]
    assert bus.handlers("cache.flushed") == [keep]


def test_wildcard_handlers_get_the_event_name():
    bus = EventBus("audit")
    seen = []
    bus.on("*", lambda event, *args: seen.append((event, args)))
    bus.emit("invoice.sent", 1, 2)
    assert seen == [("invoice.sent", (1, 2))]


def test_errors_are_collected():
    bus = EventBus("payments")
    calls = []

    def boom(_):
        raise RuntimeError("boom")

    bus.on("payment.failed", boom)
    bus.on("payment.failed", calls.append)
    with pytest.raises(HandlerErrors) as info:
        bus.emit("payment.failed", 3)
    assert calls == [3]
    assert isinstance(info.value.errors[0], RuntimeError)


def test_strict_bus_raises_at_once():
    bus = EventBus("strict", strict=True)

    def boom():
        raise KeyError("x")

    bus.on("job.done", boom)
    with pytest.raises(KeyError):
        bus.emit("job.done")


def test_handler_must_be_callable():
    with pytest.raises(TypeError):
        EventBus().on("job.started", "not a function")
