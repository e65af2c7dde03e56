"""A lab box upgrades from ``allworx-sim releases serve`` over HTTP: real CLIs, a real HTTP server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from releases.catalog import default_catalog
from simulator.keyring import VendorKeyring
from simulator.publish import image_path, publish
from simulator.serve import Faults, serving
from tests.integration.conftest import run_tool as run

pytestmark = pytest.mark.integration
CUT = 100_000  # bytes of the image served before the connection drops, once


def lab_box(tmp_path: Path, url: str, env: dict[str, str]) -> Path:
    """A 6x on 7.0 whose agent downloads releases from ``url``."""
    box = tmp_path / "box"
    made = run("allworx-sim", "server", "create", str(box), "--model", "6x", "--release", "7.0",
               "--shipped", "2009-06-01", "--repository", url, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return box


def upgrade(box: Path, env: dict[str, str]) -> Any:
    """``allworx-agent upgrade --to 7.1`` as a user types it; its JSON document."""
    done = run("allworx-agent", "upgrade", "--server-dir", str(box), "--to", "7.1", "--now", "2016-01-01",
               "--json", env=env)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_a_lab_agent_upgrades_over_http_and_resumes_a_cut_download(
    tmp_path: Path, keyring: VendorKeyring, env: dict[str, str]
) -> None:
    """The image download cut after 100,000 bytes resumes with a ranged request, and 7.1 commits."""
    repo = publish(default_catalog(), keyring, tmp_path / "served")
    faults = Faults(cut_once_after=CUT)
    with serving(repo, faults=faults) as server:
        box = lab_box(tmp_path, server.url, env)
        report = upgrade(box, env)
    assert report["outcome"] == "succeeded", report
    assert report["final_release"] == "7.1"
    image = f"/targets/images/{default_catalog().release('7.1').build}.img"
    fetched = [r for r in faults.requests if r.startswith(f"GET {image}")]
    assert fetched == [f"GET {image}", f"GET {image} bytes={CUT}-"]
    build = default_catalog().release("7.1").build
    assert (box / "slots" / "b" / "image.img").read_bytes() == image_path(repo, build).read_bytes()


def test_an_unreachable_repository_is_a_transport_failure(
    tmp_path: Path, keyring: VendorKeyring, env: dict[str, str]
) -> None:
    """With nothing listening, the upgrade fails with RELEASE_METADATA_UNAVAILABLE and changes nothing."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = lab_box(tmp_path, f"http://127.0.0.1:{port}", env)
    report = upgrade(box, env)
    assert report["final_release"] == "7.0"
    assert report["steps"][-1]["reason"] == "RELEASE_METADATA_UNAVAILABLE"


def test_releases_serve_serves_the_folder_with_ranges(tmp_path: Path, keyring: VendorKeyring) -> None:
    """`allworx-sim releases serve --dir DIR --port P` answers a ranged GET and 404s a path outside DIR."""
    repo = publish(default_catalog(), keyring, tmp_path / "served", image_size=4096)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = "import sys; from simulator.cli import main; sys.argv[0] = 'allworx-sim'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "releases", "serve", "--dir", str(repo),
                             "--port", str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metadata/root.json"
        for _ in range(100):
            try:
                request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    status, body = response.status, response.read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server never answered")
        assert status == 206
        assert body == (repo / "metadata" / "root.json").read_bytes()[10:20]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/../../etc/passwd", timeout=5)
        missing.value.close()
        assert missing.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
