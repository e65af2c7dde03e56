"""The fleet benchmark run end to end on a tiny fleet: its JSON document is whole (no figure is judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import require_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_fleet_json_on_twenty_servers(tmp_path: Path) -> None:
    """``bench.bench_fleet --json`` on 20 servers prints one document with the contract fields and goals."""
    require_mosquitto()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_fleet",
            "--servers",
            "20",
            "--workers",
            "1",
            "--sample",
            "2",
            "--dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    for field in ("servers", "steps", "wall_s", "cpu_s", "publishes_per_step", "overhead_ratio"):
        assert isinstance(doc[field], int | float), field
    assert doc["servers"] == 20
    assert doc["steps"] >= 20  # every server is a step or more below 8.0
    assert doc["kib_per_server"] > 0
    assert doc["essential_steps_sampled"] > 0
    each = doc["essential_work_ms_each"]  # one figure a fresh process, the median judged
    assert len(each) == 3
    assert round(doc["essential_work_ms"], 3) == sorted(each)[1]
    assert set(doc["goals"]) == {"messages", "overhead", "wall", "memory", "demo"}
    assert doc["goals"]["demo"] is None  # not asked for (--demo)
    assert "OK" in done.stderr or "MISS" in done.stderr  # the verdicts go to stderr beside the JSON
