from pathlib import Path

import pytest

from cwm_agent.config import ConfigError, load_settings


def test_layers_override_in_order(tmp_path: Path):
    user = tmp_path / "user.toml"
    project = tmp_path / "project.toml"
    user.write_text('base_url = "http://user:1/v1"\nmax_turns = 10\nmemory = "1g"\n')
    project.write_text('max_turns = 20\ncommand-timeout = 30\n')
    env = {"CWM_AGENT_MAX_TURNS": "30", "CWM_AGENT_REASONING": "false", "OTHER": "x"}
    s = load_settings({"memory": "2g", "model": None}, environ=env, user_config=user, project_config=project)
    assert s.base_url == "http://user:1/v1"  # only the user file sets it
    assert s.max_turns == 30  # env beats both files
    assert s.command_timeout == 30.0  # dashes accepted in files
    assert s.memory == "2g"  # flags beat everything
    assert s.reasoning is False
    assert s.model is None  # a flag left at None does not override


def test_defaults_are_cwm_training_values(tmp_path: Path):
    s = load_settings(environ={}, user_config=tmp_path / "no", project_config=tmp_path / "no")
    assert (s.max_turns, s.context_window, s.turn_tokens, s.command_timeout) == (128, 131072, 65536, 120.0)
    assert (s.memory, s.pids, s.max_format_errors, s.sandbox) == ("4g", 1024, 5, "auto")


def test_bad_values_name_their_origin(tmp_path: Path):
    bad = tmp_path / "c.toml"
    bad.write_text("max_turns = [\n")
    with pytest.raises(ConfigError, match="c.toml"):
        load_settings(environ={}, user_config=bad, project_config=tmp_path / "no")
    with pytest.raises(ConfigError, match="CWM_AGENT_MAX_TURNS"):
        load_settings(environ={"CWM_AGENT_MAX_TURNS": "many"}, user_config=bad.with_name("x"),
                      project_config=tmp_path / "no")
    unknown = tmp_path / "u.toml"
    unknown.write_text("turbo = true\n")
    with pytest.raises(ConfigError, match="unknown setting 'turbo'"):
        load_settings(environ={}, user_config=unknown, project_config=tmp_path / "no")


def test_public_masks_the_api_key(tmp_path: Path):
    s = load_settings({"api_key": "sk-secret"}, environ={}, user_config=tmp_path / "n", project_config=tmp_path / "n")
    assert s.public()["api_key"] == "***"
    assert "sk-secret" not in repr(s.public())


def test_format_error_limit_defaults_per_command_and_a_user_value_wins(tmp_path: Path):
    none = {"user_config": tmp_path / "no", "project_config": tmp_path / "no"}
    # CWM's evaluation never ends an episode on format errors; solve stops a lost model after 5.
    assert load_settings(environ={}, command="eval", **none).max_format_errors == 0
    assert load_settings(environ={}, command="solve", **none).max_format_errors == 5
    assert load_settings(environ={}, **none).max_format_errors == 5
    # every user layer overrides both commands' defaults
    user = tmp_path / "user.toml"
    user.write_text("max-format-errors = 3\n")
    for command in ("eval", "solve"):
        assert load_settings(environ={}, command=command, user_config=user,
                             project_config=tmp_path / "no").max_format_errors == 3
    env = {"CWM_AGENT_MAX_FORMAT_ERRORS": "7"}
    assert load_settings(environ=env, command="eval", **none).max_format_errors == 7
    assert load_settings({"max_format_errors": 0}, environ=env, command="solve", **none).max_format_errors == 0
    assert load_settings({"max_format_errors": None}, environ={}, command="eval", **none).max_format_errors == 0


def test_grade_unfinished_is_off_by_default_and_layered(tmp_path: Path):
    none = {"user_config": tmp_path / "no", "project_config": tmp_path / "no"}
    assert load_settings(environ={}, command="eval", **none).grade_unfinished is False
    project = tmp_path / "cwm-agent.toml"
    project.write_text("grade_unfinished = true\n")
    s = load_settings(environ={}, command="eval", user_config=tmp_path / "no", project_config=project)
    assert s.grade_unfinished is True and s.public()["grade_unfinished"] is True
    assert load_settings(environ={"CWM_AGENT_GRADE_UNFINISHED": "yes"}, **none).grade_unfinished is True
    assert load_settings({"grade_unfinished": False}, environ={"CWM_AGENT_GRADE_UNFINISHED": "1"},
                         **none).grade_unfinished is False
