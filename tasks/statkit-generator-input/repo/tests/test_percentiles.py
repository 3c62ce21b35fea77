import pytest

from statkit import EmptyDataError, median, percentile


def test_median_odd_and_even():
    assert median([3, 1, 2]) == 2.0
    assert median([1, 2, 3, 4]) == 2.5


def test_interpolation():
    assert percentile([10, 20, 30, 40], 25) == 17.5


def test_extremes():
    assert percentile([5, 1, 9], 0) == 1
    assert percentile([5, 1, 9], 100) == 9


def test_generator_input():
    assert percentile((x * 10 for x in range(11)), 90) == 90.0


def test_bad_q():
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_empty():
    with pytest.raises(EmptyDataError):
        median([])
