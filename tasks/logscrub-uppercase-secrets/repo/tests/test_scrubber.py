import re

import pytest

from logscrub import Scrubber


@pytest.fixture
def scrubber():
    return Scrubber()


def test_query_string_password(scrubber):
    assert scrubber.scrub("GET /login?user=bob&password=hunter2") == "GET /login?user=bob&password=***"


def test_colon_form(scrubber):
    assert scrubber.scrub("token: abc123 sent") == "token: *** sent"


def test_json_form(scrubber):
    assert scrubber.scrub('{"api_key": "k-123", "n": 1}') == '{"api_key": "***", "n": 1}'


def test_two_secrets(scrubber):
    assert scrubber.scrub("password=a token=b") == "password=*** token=***"


def test_longest_key_wins(scrubber):
    assert scrubber.scrub("access_token=xyz") == "access_token=***"


def test_non_secret_keys_untouched(scrubber):
    line = "user=bob retries=3 passwords_changed=yes"
    assert scrubber.scrub(line) == line


def test_bearer_header(scrubber):
    assert scrubber.scrub("Authorization: Bearer eyJhbGciOi.J9") == "Authorization: Bearer ***"


def test_emails(scrubber):
    assert scrubber.scrub("mail sent to ann.lee+x@example.co.uk") == "mail sent to ***"


def test_emails_can_be_kept():
    assert Scrubber(emails=False).scrub("to ann@example.com") == "to ann@example.com"


def test_custom_mask_and_keys():
    scrubber = Scrubber(keys=["pin"], mask="[hidden]")
    assert scrubber.scrub("pin=1234 password=x") == "pin=[hidden] password=x"


def test_extra_patterns():
    scrubber = Scrubber(patterns=[r"\b\d{4}-\d{4}-\d{4}-\d{4}\b", re.compile("sk_live_\\w+")])
    assert scrubber.scrub("card 1234-5678-9012-3456 key sk_live_abc") == "card *** key ***"


def test_scrub_mapping(scrubber):
    data = {"password": "x", "user": "bob", "nested": {"token": "t"}, "note": "secret=s", "n": 1}
    assert scrubber.scrub_mapping(data) == {
        "password": "***",
        "user": "bob",
        "nested": {"token": "***"},
        "note": "secret=***",
        "n": 1,
    }


def test_needs_keys():
    with pytest.raises(ValueError):
        Scrubber(keys=[])
