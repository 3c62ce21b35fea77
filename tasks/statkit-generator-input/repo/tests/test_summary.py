import math

import pytest

from statkit import EmptyDataError, Summary, summarize


def test_summary_of_a_list():
    summary = summarize([2, 4, 4, 4, 5, 5, 7, 9])
    assert summary.count == 8
    assert summary.mean == 5.0
    assert (summary.minimum, summary.maximum) == (2, 9)
    assert math.isclose(summary.stdev, 2.138089935299395)
    assert summary.range == 7


def test_single_value():
    assert summarize([3.5]) == Summary(1, 3.5, 3.5, 3.5, 0.0)


def test_tuple_and_range():
    assert summarize((1, 2, 3)) == summarize(range(1, 4))


def test_floats():
    summary = summarize([0.1, 0.2, 0.3])
    assert math.isclose(summary.mean, 0.2)
    assert math.isclose(summary.stdev, 0.1)


def test_negative_numbers():
    summary = summarize([-3, -1, -2])
    assert (summary.minimum, summary.maximum, summary.mean) == (-3, -1, -2.0)


def test_empty():
    with pytest.raises(EmptyDataError):
        summarize([])


def test_rejects_non_numbers():
    with pytest.raises(TypeError):
        summarize([1, "2"])
