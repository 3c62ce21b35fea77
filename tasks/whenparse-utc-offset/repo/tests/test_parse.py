from datetime import date, datetime, timedelta, timezone

import pytest

from whenparse import TimestampError, parse_timestamp, to_epoch

UTC = timezone.utc


def test_zulu():
    assert parse_timestamp("2024-03-01T12:00:00Z") == datetime(2024, 3, 1, 12, tzinfo=UTC)


def test_naive_text_is_utc():
    assert parse_timestamp("2024-03-01 12:00:00") == datetime(2024, 3, 1, 12, tzinfo=UTC)


def test_date_only():
    assert parse_timestamp("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)


def test_minutes_only():
    assert parse_timestamp("2024-03-01T12:30") == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)


def test_fractional_seconds():
    parsed = parse_timestamp("2024-03-01T12:00:00.25Z")
    assert parsed.microsecond == 250000


def test_result_is_always_utc():
    assert parse_timestamp("2024-03-01T12:00:00Z").tzinfo is UTC


def test_unix_seconds():
    assert parse_timestamp(1709294400) == datetime(2024, 3, 1, 12, tzinfo=UTC)


def test_datetime_objects():
    eastern = timezone(timedelta(hours=-5))
    assert parse_timestamp(datetime(2024, 3, 1, 7, tzinfo=eastern)) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert parse_timestamp(datetime(2024, 3, 1, 7)) == datetime(2024, 3, 1, 7, tzinfo=UTC)
    assert parse_timestamp(date(2024, 3, 1)) == datetime(2024, 3, 1, tzinfo=UTC)


def test_to_epoch():
    assert to_epoch("2024-03-01") == 1709251200
    assert to_epoch("2024-03-01T12:00:00Z") == 1709294400


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "2024-03-01T25:00:00", "01/03/2024"])
def test_not_timestamps(text):
    with pytest.raises(TimestampError):
        parse_timestamp(text)


def test_wrong_type():
    with pytest.raises(TypeError):
        parse_timestamp([2024, 3, 1])
