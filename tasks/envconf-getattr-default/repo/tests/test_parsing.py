import pytest

from envconf import parse_bool, parse_list, read_dotenv


@pytest.mark.parametrize("text", ["1", "true", "Yes", " ON "])
def test_true_values(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off", ""])
def test_false_values(text):
    assert parse_bool(text) is False


def test_not_a_bool():
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_parse_list():
    assert parse_list("a, b,,c ") == ["a", "b", "c"]
    assert parse_list("a:b", separator=":") == ["a", "b"]


def test_read_dotenv(tmp_path):
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n"
        "\n"
        "export TOKEN=abc\n"
        "NAME = \"hello # world\"\n"
        "PORT=8000 # inline comment\n"
    )
    assert read_dotenv(path) == {"TOKEN": "abc", "NAME": "hello # world", "PORT": "8000"}


def test_read_dotenv_rejects_garbage(tmp_path):
    path = tmp_path / ".env"
    path.write_text("OK=1\nthis is not a setting\n")
    with pytest.raises(ValueError, match=":2:"):
        read_dotenv(path)
