"""Shared fixtures: an isolated simulator home and one vendor keyring for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.keyring import HOME_VARIABLE, VendorKeyring


@pytest.fixture(scope="session", autouse=True)
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``ALLWORX_SIM_HOME`` at a session temp dir so tests never touch ``~``."""
    home = tmp_path_factory.mktemp("allworx-sim-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, str(home))
        yield home


@pytest.fixture(scope="session")
def keyring(sim_home: Path) -> VendorKeyring:
    """The vendor keyring in the session's simulator home (created once)."""
    return VendorKeyring.load_or_create()
