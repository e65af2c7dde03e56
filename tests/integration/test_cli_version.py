"""``--version`` on the three commands, as a user types it."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

import pytest

from releases.catalog import default_catalog

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", ["allworx-agent", "allworx-sim", "allworx-fleet"])
def test_version_names_package_and_newest_release(command: str) -> None:
    """Each command prints its name, the package version and the catalogue's newest release."""
    done = subprocess.run([command, "--version"], capture_output=True, text=True, check=False, timeout=60)
    newest = default_catalog().releases[-1]
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == [command, version("allworx-upgrade-agent")]
    assert f"release {newest.version}" in done.stdout
