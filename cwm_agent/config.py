"""One settings object. Precedence: defaults < the command's own defaults (COMMAND_DEFAULTS)
< ~/.config/cwm-agent/config.toml < ./cwm-agent.toml < a command's config file (`eval --config
evals/NAME.toml`) < CWM_AGENT_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import hashlib
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
    temperature: float = protocol.TEMPERATURE  # CWM's published sampling
    top_p: float = protocol.TOP_P
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


# Settings whose value is one of a few words (None: unset is allowed too).
_CHOICES: dict[str, tuple[Any, ...]] = {"format": (None, "cwm", "chat"), "tools": ("all", "bash-only"),
                                        "sandbox": ("auto", "docker", "bwrap")}


def _coerce(name: str, value: Any, origin: str, kinds: dict[str, str] | None = None) -> Any:
    """`value` as the type of setting `name` (or of `kinds[name]`, a command's own keys): text from
    the environment is parsed, a file's typed value is checked; a mismatch names `origin`."""
    kind = kinds[name] if kinds and name in kinds else None
    if kind is None:
        if name not in _FIELDS:
            raise ConfigError(f"{origin}: unknown setting {name!r}; known: {', '.join(sorted(_FIELDS))}")
        kind = str(_FIELDS[name].type)
    base = kind.split(" ")[0]  # "float | None" -> "float"
    value = _typed(name, value, base, origin)
    if name in _CHOICES and not (kinds and name in kinds) and value not in _CHOICES[name]:
        words = ", ".join(str(c) for c in _CHOICES[name] if c is not None)
        words = " or ".join(words.rsplit(", ", 1))
        raise ConfigError(f"{origin}: {name} must be {words}, got {value!r}")
    return value


def _typed(name: str, value: Any, base: str, origin: str) -> Any:
    if value is None:
        return value
    try:
        if isinstance(value, str) and base != "str":  # environment variables are text
            if base == "bool":
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            if base == "int":
                return int(value)
            if base == "float":
                return float(value)
        elif base == "bool" and isinstance(value, bool) or base == "str" and isinstance(value, str):
            return value
        elif base == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(value)
    except ValueError:
        shown = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(base, base)
        raise ConfigError(f"{origin}: {name} must be {shown}, got {value!r}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}; fix or remove the file") from None
    return {key.replace("-", "_"): _coerce(key.replace("-", "_"), val, str(path)) for key, val in data.items()}


@dataclass(frozen=True)
class ConfigFile:
    """A command's configuration file (`cwm-agent eval --config evals/NAME.toml`): flat keys, each a
    Settings field or one of the command's own keys. load_settings layers `settings` above
    ./cwm-agent.toml and below the environment; the command reads `options` itself."""

    path: Path
    sha256: str  # of the file's bytes, as read
    settings: dict[str, Any]
    options: dict[str, Any]


def read_config_file(path: Path, own_keys: dict[str, str]) -> ConfigFile:
    """Read and check a config file. `own_keys`: the command's keys and their types ("int",
    "str", "bool", "float"); any other key must be a Settings field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}; pass an existing "
                          "file, e.g. --config evals/bundled.toml") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    settings, options = {}, {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELDS and name not in own_keys:
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(sorted(own_keys))} "
                              f"and the settings {', '.join(sorted(_FIELDS))}")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {key} must be a single value, not a "
                              f"{'table' if isinstance(value, dict) else 'list'} (the keys are flat)")
        if name in own_keys:
            options[name] = _coerce(name, value, str(path), own_keys)
        else:
            settings[name] = _coerce(name, value, str(path))
    return ConfigFile(path, hashlib.sha256(raw).hexdigest(), settings, options)


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
                  user_config: Path = USER_CONFIG, project_config: Path = PROJECT_CONFIG,
                  config_file: ConfigFile | None = None) -> Settings:
    """Merge every layer; flags left at None do not override lower layers. `command`
    ("eval", "solve", ...) picks that command's defaults from COMMAND_DEFAULTS; `config_file`
    (read_config_file) lies above ./cwm-agent.toml and below the environment."""
    merged: dict[str, Any] = dict(COMMAND_DEFAULTS.get(command or "", {}))
    merged.update(_read_toml(user_config))
    merged.update(_read_toml(project_config))
    if config_file is not None:
        merged.update(config_file.settings)
    merged.update(_read_env(dict(os.environ) if environ is None else environ))
    merged.update({k: _coerce(k, v, f"--{k.replace('_', '-')}") for k, v in (flags or {}).items() if v is not None})
    return Settings(**merged)
