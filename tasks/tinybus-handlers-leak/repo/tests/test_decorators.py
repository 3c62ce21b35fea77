import pytest

from tinybus import EventBus, subscribe


def test_subscribe_registers_for_each_event():
    bus = EventBus("mail")
    seen = []

    @subscribe(bus, "mail.sent", "mail.bounced")
    def record(message):
        seen.append(message)

    bus.emit("mail.sent", "hi")
    bus.emit("mail.bounced", "oops")
    assert seen == ["hi", "oops"]
    assert record.__name__ == "record"


def test_subscribe_once():
    bus = EventBus("boot")
    seen = []
    subscribe(bus, "app.ready", once=True)(seen.append)
    bus.emit("app.ready", 1)
    bus.emit("app.ready", 2)
    assert seen == [1]


def test_subscribe_needs_an_event():
    with pytest.raises(TypeError):
        subscribe(EventBus())
