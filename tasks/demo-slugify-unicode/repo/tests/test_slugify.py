import pytest

from slugkit import slugify


def test_simple_title():
    assert slugify("Hello World") == "hello-world"


def test_punctuation_collapses_to_one_separator():
    assert slugify("Hello,   World!!! -- again") == "hello-world-again"


def test_leading_and_trailing_junk_is_dropped():
    assert slugify("  ...Release notes (v2)...  ") == "release-notes-v2"


def test_apostrophes_do_not_split_words():
    assert slugify("Don't stop") == "dont-stop"
    assert slugify("It\u2019s here") == "its-here"


def test_custom_separator():
    assert slugify("Hello World", separator="_") == "hello_world"


def test_stopwords_are_removed():
    assert slugify("The Lord of the Rings", stopwords=["the", "of"]) == "lord-rings"


def test_stopwords_never_leave_an_empty_slug():
    assert slugify("The The", stopwords=["the"]) == "the-the"


def test_max_length_cuts_at_word_boundary():
    assert slugify("The quick brown fox", max_length=13) == "the-quick"


def test_max_length_cuts_long_single_word():
    assert slugify("Supercalifragilistic", max_length=5) == "super"


def test_empty_input():
    assert slugify("") == ""
    assert slugify("!!!") == ""


def test_rejects_non_strings():
    with pytest.raises(TypeError):
        slugify(42)


def test_rejects_non_positive_max_length():
    with pytest.raises(ValueError):
        slugify("abc", max_length=0)
