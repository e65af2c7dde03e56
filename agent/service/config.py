"""The agent's configuration file (TOML), layered under environment variables and flags.

Every option of ``allworx-agent run`` can be set in the file under its long name with ``_`` for
``-`` (``server_dir``, ``broker``, ``keepalive``, ``log_level``, ...). Precedence, lowest first:
the option's default, the file, the environment variable ``ALLWORX_<OPTION>``, the command line.
A secret may be named by a file path (``password_file``) so it stays out of the unit file and the
process list; ``allworx-agent config show`` masks secrets.

Invariant: a file that does not load is refused whole with a :class:`ConfigError` naming the file,
the key and the problem; nothing of it is applied.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import AllworxError
from common.reasons import Reason

DEFAULT_PATH = Path("/etc/allworx-agent/agent.toml")
ENV_PREFIX = "ALLWORX_"
MAX_CONFIG_BYTES = 64 * 1024  # a configuration file is a few hundred bytes
SECRETS = frozenset({"password"})  # masked by `allworx-agent config show`


class ConfigError(AllworxError):
    """The configuration file (or a secret file it names) is unusable."""

    reason = Reason.CONFIG_INVALID

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = str(path), key, problem


class AgentConfig(BaseModel):
    """What the file may hold: the long names of ``run``'s options."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    server_dir: str | None = None
    broker: str | None = None
    site: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    keepalive: int | None = Field(default=None, ge=1, le=3600)
    mqtt_version: Literal["auto", "5", "3.1.1"] | None = None
    now: str | None = None
    speed: float | None = Field(default=None, gt=0)
    event_batch_interval: float | None = Field(default=None, ge=0, le=60)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    log_format: Literal["auto", "json", "console"] | None = None
    health: str | None = None
    health_down_after: float | None = Field(default=None, gt=0)
    ha_discovery: bool | None = None
    ha_prefix: str | None = None

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """Refuse a NUL character in a text value: no path, address or name holds one."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("holds a NUL character")
        return value


def load_config(path: Path) -> dict[str, object]:
    """Read ``path`` and return the options it sets (names as in ``run``'s parameters).

    Raises:
        ConfigError: the file is missing, too large, not TOML, or a key is unknown or mistyped.
    """
    text = _read_small(path, MAX_CONFIG_BYTES, "(file)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(file)", f"not TOML: {exc}") from None
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(file)"
        raise ConfigError(path, key, first["msg"]) from None
    return config.model_dump(exclude_none=True)


def env_name(option: str) -> str:
    """The environment variable that sets ``option`` (``log_level`` -> ``ALLWORX_LOG_LEVEL``)."""
    return ENV_PREFIX + option.upper()


def _read_small(path: Path, limit: int, key: str) -> str:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(path, key, "not a regular file")
        if info.st_size > limit:
            raise ConfigError(path, key, f"larger than {limit} bytes")
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(path, key, "no such file") from None
    except OSError as exc:
        raise ConfigError(path, key, exc.strerror or str(exc)) from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(path, key, "not UTF-8 text") from None
