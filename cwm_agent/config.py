"""One settings object. Precedence: defaults < the command's own defaults (COMMAND_DEFAULTS)
< ~/.config/cwm-agent/config.toml < ./cwm-agent.toml < CWM_AGENT_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cwm_agent import protocol


class ConfigError(ValueError):
    """A configuration file or variable holds something unusable."""


@dataclass
class Settings:
    # model
    base_url: str | None = None  # None: the embedded CPU model
    model: str | None = None
    api_key: str | None = None
    format: str | None = None  # "cwm" | "chat"; None: from the model id
    retries: int = 4
    temperature: float = 1.0  # CWM's published evaluations sampled at 1.0 / 0.95
    top_p: float = 0.95
    # sandbox
    sandbox: str = "auto"  # "auto" | "docker" | "bwrap"
    image: str | None = None  # None: the base image of `cwm-agent sandbox build`
    memory: str = "4g"
    pids: int = 1024
    cpus: float | None = None
    command_timeout: float = float(protocol.SESSION_TIMEOUT_SECONDS)
    # episode limits (CWM's training defaults)
    max_turns: int = protocol.MAX_TURNS
    context_window: int = protocol.CONTEXT_WINDOW
    turn_tokens: int = protocol.TURN_TOKEN_LIMIT
    wall_time: float | None = None  # seconds; None: no limit
    max_format_errors: int = 5  # malformed replies in a row that end an episode; 0: never (eval's default)
    tools: str = "all"  # "all" | "bash-only"
    reasoning: bool = True
    # scoring: grade an episode that a limit ended (its last submitted patch), as harnesses that
    # submit on exit do; by default only finished episodes (submitted, then summarised) count
    grade_unfinished: bool = False

    def public(self) -> dict[str, Any]:
        """The settings as recorded in a trajectory: secrets masked."""
        data = dataclasses.asdict(self)
        if data.get("api_key"):
            data["api_key"] = "***"
        return data


_FIELDS = {f.name: f for f in fields(Settings)}
# Defaults of one command, under every user layer. CWM's evaluation never ends an episode on
# format errors (each costs a turn); `solve` stops a model that has lost the format after 5.
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {"eval": {"max_format_errors": 0}}
USER_CONFIG = Path("~/.config/cwm-agent/config.toml").expanduser()
PROJECT_CONFIG = Path("cwm-agent.toml")
ENV_PREFIX = "CWM_AGENT_"


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name not in _FIELDS:
        raise ConfigError(f"{origin}: unknown setting {name!r}; known: {', '.join(sorted(_FIELDS))}")
    kind = str(_FIELDS[name].type)
    if value is None or not isinstance(value, str) or kind.startswith("str"):
        return value
    try:
        if kind.startswith("bool"):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError:
        raise ConfigError(f"{origin}: {name} must be {kind.split(' ')[0]}, got {value!r}") from None
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}; fix or remove the file") from None
    return {key.replace("-", "_"): _coerce(key.replace("-", "_"), val, str(path)) for key, val in data.items()}


def _read_env(environ: dict[str, str]) -> dict[str, Any]:
    out = {}
    for key, val in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if name in _FIELDS:
                out[name] = _coerce(name, val, key)
    return out


def load_settings(flags: dict[str, Any] | None = None, *, command: str | None = None,
                  environ: dict[str, str] | None = None,
                  user_config: Path = USER_CONFIG, project_config: Path = PROJECT_CONFIG) -> Settings:
    """Merge every layer; flags left at None do not override lower layers. `command`
    ("eval", "solve", ...) picks that command's defaults from COMMAND_DEFAULTS."""
    merged: dict[str, Any] = dict(COMMAND_DEFAULTS.get(command or "", {}))
    merged.update(_read_toml(user_config))
    merged.update(_read_toml(project_config))
    merged.update(_read_env(dict(os.environ) if environ is None else environ))
    merged.update({k: _coerce(k, v, "flag") for k, v in (flags or {}).items() if v is not None})
    return Settings(**merged)
