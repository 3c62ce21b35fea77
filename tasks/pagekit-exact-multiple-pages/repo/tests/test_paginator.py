import pytest

from pagekit import PageOutOfRange, Paginator


def test_num_pages_with_partial_last_page():
    assert Paginator(total=45, per_page=20).num_pages == 3


def test_empty_list_has_one_empty_page():
    paginator = Paginator(total=0, per_page=20)
    assert paginator.num_pages == 1
    page = paginator.page(1)
    assert len(page) == 0
    assert page.start_index == 0
    assert page.end_index == 0


def test_fewer_items_than_a_page():
    assert Paginator(total=5, per_page=20).num_pages == 1


def test_page_indexes():
    page = Paginator(total=45, per_page=20).page(2)
    assert (page.offset, page.limit) == (20, 20)
    assert (page.start_index, page.end_index) == (21, 40)


def test_last_page_is_short():
    page = Paginator(total=45, per_page=20).page(3)
    assert page.is_last
    assert not page.has_next
    assert len(page) == 5
    assert page.slice(list(range(45))) == [40, 41, 42, 43, 44]


def test_next_and_previous():
    paginator = Paginator(total=45, per_page=20)
    assert paginator.page(1).next_number == 2
    assert paginator.page(2).previous_number == 1
    with pytest.raises(PageOutOfRange):
        paginator.page(1).previous_number


def test_out_of_range():
    paginator = Paginator(total=45, per_page=20)
    with pytest.raises(PageOutOfRange):
        paginator.page(0)
    with pytest.raises(PageOutOfRange):
        paginator.page(4)


def test_page_number_must_be_int():
    with pytest.raises(TypeError):
        Paginator(total=45).page("2")


def test_orphans_are_folded_into_the_previous_page():
    paginator = Paginator(total=22, per_page=10, orphans=3)
    assert paginator.num_pages == 2
    assert len(paginator.page(2)) == 12


def test_iterating_gives_every_page():
    numbers = [page.number for page in Paginator(total=45, per_page=20)]
    assert numbers == [1, 2, 3]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        Paginator(total=10, per_page=0)
    with pytest.raises(ValueError):
        Paginator(total=-1)
