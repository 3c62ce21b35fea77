import pytest

from sizefmt import SizeError, format_size, parse_size


@pytest.mark.parametrize(
    "text, size",
    [
        ("42", 42),
        ("42 B", 42),
        ("1 kB", 1000),
        ("1KB", 1000),
        ("1.5 MB", 1_500_000),
        ("200k", 200_000),
        ("2 gb", 2 * 10**9),
        (" 3 TB ", 3 * 10**12),
        ("1_000", 1000),
        (".5 kB", 500),
    ],
    ids=["bare", "bytes", "kB", "KB", "MB", "k", "gb", "padded", "underscore", "leading-dot"],
)
def test_parse(text, size):
    assert parse_size(text) == size


def test_rounds_down_to_whole_bytes():
    assert parse_size("1.0005 kB") == 1000


def test_negative():
    assert parse_size("-2 kB") == -2000


@pytest.mark.parametrize("size", [0, 512, 1000, 1500, 2_000_000, 7 * 10**12])
def test_round_trip(size):
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    "text", ["", "abc", "1.2.3 MB", "MB", "1 M B"], ids=["empty", "word", "two-dots", "no-number", "split-unit"]
)
def test_not_a_size(text):
    with pytest.raises(SizeError):
        parse_size(text)


def test_unknown_unit():
    with pytest.raises(SizeError, match="unknown unit 'parsecs'"):
        parse_size("12 parsecs")


def test_size_error_is_a_value_error():
    assert issubclass(SizeError, ValueError)
