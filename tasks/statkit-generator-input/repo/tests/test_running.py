import math

import pytest

from statkit import EmptyDataError, RunningStats, summarize


def test_matches_summarize():
    data = [2, 4, 4, 4, 5, 5, 7, 9]
    stats = RunningStats(data)
    expected = summarize(data)
    assert stats.count == expected.count
    assert math.isclose(stats.mean, expected.mean)
    assert math.isclose(stats.stdev, expected.stdev)
    assert (stats.minimum, stats.maximum) == (2, 9)


def test_push_one_by_one():
    stats = RunningStats()
    for value in (1.0, 2.0, 3.0):
        stats.push(value)
    assert stats.summary().mean == 2.0


def test_empty():
    with pytest.raises(EmptyDataError):
        RunningStats().mean
