"""The test and simulation Mosquitto leaves nothing behind but what it was given."""

from __future__ import annotations

from pathlib import Path

from simulator.broker import Mosquitto
from tests.integration.conftest import require_mosquitto


def test_close_removes_the_folder_it_made_and_keeps_one_it_was_given(tmp_path: Path) -> None:
    """Each test session's broker made a temp folder that stayed behind; close removes it."""
    require_mosquitto()
    own = Mosquitto()
    own.start()
    assert own.running and own.config.exists()
    own.close()
    assert not own.running and not own.workdir.exists()
    given = Mosquitto(workdir=tmp_path)
    given.start()
    given.close()
    assert not given.running and (tmp_path / "mosquitto.conf").exists()
