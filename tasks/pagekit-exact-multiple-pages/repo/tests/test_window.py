import pytest

from pagekit import page_window


def test_small_ranges_show_everything():
    assert page_window(2, 3) == [1, 2, 3]


def test_window_is_centred():
    assert page_window(5, 10) == [3, 4, 5, 6, 7]


def test_window_slides_at_the_ends():
    assert page_window(1, 10) == [1, 2, 3, 4, 5]
    assert page_window(10, 10) == [6, 7, 8, 9, 10]


def test_even_size():
    assert page_window(5, 10, size=4) == [4, 5, 6, 7]


def test_current_outside_range():
    with pytest.raises(ValueError):
        page_window(11, 10)
