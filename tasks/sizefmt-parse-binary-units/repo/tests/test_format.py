import pytest

from sizefmt import format_size


@pytest.mark.parametrize(
    "size, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1 kB"), (1500, "1.5 kB"), (1_500_000, "1.5 MB"), (2 * 10**9, "2 GB")],
    ids=["0B", "999B", "1kB", "1.5kB", "1.5MB", "2GB"],
)
def test_si(size, text):
    assert format_size(size) == text


@pytest.mark.parametrize(
    "size, text",
    [(1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (5 * 2**20, "5 MiB"), (3 * 2**30 // 2, "1.5 GiB")],
    ids=["1023B", "1KiB", "1.5KiB", "5MiB", "1.5GiB"],
)
def test_binary(size, text):
    assert format_size(size, binary=True) == text


def test_rounding_moves_up_a_unit():
    assert format_size(999_999) == "1 MB"


def test_precision():
    assert format_size(1_234_567, precision=2) == "1.23 MB"
    assert format_size(1_234_567, precision=0) == "1 MB"


def test_negative():
    assert format_size(-1500) == "-1.5 kB"


def test_huge_sizes_stay_in_the_last_unit():
    assert format_size(5 * 10**18) == "5000 PB"


def test_rejects_floats():
    with pytest.raises(TypeError):
        format_size(1.5)
