from whenparse import ago

NOW = "2024-03-01T12:00:00Z"


def test_minutes_ago():
    assert ago("2024-03-01T11:57:00Z", now=NOW) == "3 minutes ago"


def test_singular():
    assert ago("2024-02-29T12:00:00Z", now=NOW) == "1 day ago"


def test_future():
    assert ago("2024-03-01T14:00:00Z", now=NOW) == "in 2 hours"


def test_just_now():
    assert ago("2024-03-01T11:59:55Z", now=NOW) == "just now"


def test_default_now_is_the_current_time():
    assert ago("2000-01-01").endswith("years ago")
