"""What fuzzing the parsers found, each with the exact input: refused in one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.service.config import ConfigError, load_config
from tests.fuzz.targets import config


def test_a_config_value_holding_a_nul_is_refused_naming_the_key(tmp_path: Path) -> None:
    """``ca = "\\u0000"`` is a ConfigError on ``ca`` (it was a bare ValueError from os.stat in click)."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b'ca = "\\u0000"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "ca"
    assert "NUL" in caught.value.problem


@pytest.mark.parametrize("data", [b'ca = "\\u0000"\n', b'server_dir = "/srv/\\u0000"\n'])
def test_the_config_target_passes_the_nul_inputs(data: bytes) -> None:
    """The fuzz target's whole path (load, run's options, their checks) takes the found inputs."""
    config.check(data)
