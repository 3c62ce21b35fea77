import pytest

from envconf import MissingSetting, Settings


@pytest.fixture
def settings():
    return Settings.from_env(
        prefix="APP_",
        environ={"APP_DATABASE_URL": "sqlite://", "APP_WORKERS": "8", "APP_DEBUG": "yes", "OTHER": "x"},
    )


def test_prefix_is_stripped_and_others_ignored(settings):
    assert sorted(settings) == ["DATABASE_URL", "DEBUG", "WORKERS"]


def test_attribute_and_item_access(settings):
    assert settings.database_url == "sqlite://"
    assert settings["DATABASE_URL"] == "sqlite://"
    assert settings.get("Database_Url") == "sqlite://"


def test_typed_getters(settings):
    assert settings.get_int("workers") == 8
    assert settings.get_bool("debug") is True
    assert settings.get_int("timeout", 30) == 30


def test_missing_item_raises_missing_setting(settings):
    with pytest.raises(MissingSetting) as info:
        settings["SECRET_KEY"]
    assert str(info.value) == "setting APP_SECRET_KEY is not set"


def test_missing_item_is_a_key_error(settings):
    assert settings.get("secret_key") is None
    assert "secret_key" not in settings


def test_bad_value_names_the_variable(settings):
    with pytest.raises(ValueError, match="APP_DEBUG"):
        Settings({"DEBUG": "maybe"}, prefix="APP_").get_bool("debug")


def test_dotenv_is_overridden_by_environment(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_WORKERS=2\nAPP_NAME='demo'\n")
    settings = Settings.from_env(prefix="APP_", dotenv=str(dotenv), environ={"APP_WORKERS": "4"})
    assert settings.get_int("workers") == 4
    assert settings.name == "demo"


def test_missing_dotenv_is_fine():
    settings = Settings.from_env(dotenv="/nonexistent/.env", environ={"A": "1"})
    assert settings.a == "1"
