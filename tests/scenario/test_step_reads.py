"""What one upgrade step reads and builds: the layout's paths once per server directory, and the
bootloader environment once per decision (each state that changes it still reads it again)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.bootloader import BootEnv, Bootloader
from agent.clock import SimClock
from agent.store import ServerDir
from agent.upgrader import Upgrader
from releases.catalog import default_catalog
from simulator.keyring import VendorKeyring
from tests.helpers import keyed_server

NOW = datetime(2016, 1, 1, tzinfo=UTC)
SOURCE, TARGET = "7.2", "7.3"


class CountingBootloader(Bootloader):
    """The server's own bootloader, counting the reads of its environment."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def env(self) -> BootEnv:
        self.reads += 1
        return super().env()


@pytest.fixture
def server(tmp_path: Path, keyring: VendorKeyring) -> ServerDir:
    """A 6x on 7.2 with a maintenance key valid on NOW."""
    return ServerDir(keyed_server(tmp_path / "box", keyring, SOURCE, NOW.date()))


def _upgrader(server: ServerDir) -> Upgrader:
    return Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")))


def test_the_slot_paths_are_built_once_per_directory(server: ServerDir) -> None:
    """Each slot's folder and database path is the same object on every call."""
    assert server.slot_dir("b") is server.slot_dir("b")
    assert server.db_path("b") is server.db_path("b")
    assert server.db_path("b") == server.root / "slots" / "b" / "pbx.db"


def test_the_update_area_is_built_once_per_directory(server: ServerDir) -> None:
    """The Update Area's path is the same object on every call."""
    assert server.update_area is server.update_area


def test_a_staged_image_path_is_built_once_per_request(server: ServerDir) -> None:
    """The upgrader names a build's staged image with the same object on every call."""
    upgrader = _upgrader(server)
    assert upgrader._staged_path("7.3.1.1") is upgrader._staged_path("7.3.1.1")
    assert upgrader._staged_path("7.3.1.1") == server.update_area / "7.3.1.1.img"


async def test_a_step_reads_the_bootloader_environment_once_before_it_starts(server: ServerDir) -> None:
    """One committed step reads the environment three times before the walk is planned (the state
    check, the orphan trial check, the facts), once for its judgement and the job it starts, and once
    in each state that changes it (switch, trial boot, commit)."""
    counting = CountingBootloader(server.bootloader.path)
    server.bootloader = counting
    result = await _upgrader(server).upgrade(TARGET)
    assert [step.outcome for step in result.steps] == ["committed"]
    assert counting.reads == 7
