"""``allworx-sim fleet`` and ``allworx-sim demo`` stop cleanly: no process they started outlives them.

And the demo without ``--dir`` removes its temporary working folder, keeping only the report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIM = [sys.executable, "-c", "from simulator.cli import main; main()"]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """A process's state, parent pid and start time from /proc (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every living process whose ancestry includes ``root``, with its start time."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = (stat[1], stat[2])
    found: dict[int, int] = {}
    for pid, (_, started) in parents.items():
        ancestor = pid
        while ancestor in parents and ancestor > 1:
            ancestor = parents[ancestor][0]
            if ancestor == root:
                found[pid] = started
                break
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` still running (a zombie or a reused pid counts as ended)."""
    living = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == started:
            living.append(pid)
    return living


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """The commands a test starts, each in its own process group, killed with it should the test fail."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        with_group = process.pid
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        with contextlib.suppress(ProcessLookupError):  # whatever of the group survived its leader
            os.killpg(with_group, signal.SIGKILL)


def launch(started: list[subprocess.Popen[str]], tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``allworx-sim ARGS`` in its own process group, temporary folders under ``tmp_path``."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "ALLWORX_SIM_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [*SIM, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    started.append(process)
    return process


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float = 150.0) -> str:
    """Read the command's output until a line holding ``marker``; return what was read."""
    assert process.stdout is not None
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if marker in line:
            return "".join(seen)
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {marker!r} in {''.join(seen)!r}")


def wait_until_gone(processes: dict[int, int], timeout: float = 15.0) -> list[int]:
    """Poll until none of ``processes`` runs or ``timeout`` passes; return those still running."""
    deadline = time.monotonic() + timeout
    while (living := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return living


def stop_and_check(process: subprocess.Popen[str], sig: signal.Signals, workers: int) -> int | None:
    """Send ``sig`` to the command only; assert all it started ends within 15 s; return its exit code."""
    family = descendants(process.pid)
    assert len(family) >= workers, family  # the workers (and multiprocessing's resource tracker)
    family[process.pid] = _stat(process.pid)[2]  # type: ignore[index]  # reason: it is running
    os.kill(process.pid, sig)
    assert wait_until_gone(family) == []
    return process.wait(5)


def test_fleet_sigterm_stops_its_workers(tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    """SIGTERM to ``allworx-sim fleet`` alone ends it (exit 143) and every process it started within 15 s."""
    fleet = launch(started, tmp_path, "fleet", "--dir", str(tmp_path / "fleet"), "--servers", "6",
                   "--workers", "2")  # fmt: skip
    wait_for_line(fleet, "agents connected")
    assert stop_and_check(fleet, signal.SIGTERM, workers=2) == 143


def test_fleet_sigkill_still_ends_its_workers(tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    """Workers of an ``allworx-sim fleet`` killed by SIGKILL end by themselves within 15 s."""
    fleet = launch(started, tmp_path, "fleet", "--dir", str(tmp_path / "fleet"), "--servers", "6",
                   "--workers", "2")  # fmt: skip
    wait_for_line(fleet, "agents connected")
    assert stop_and_check(fleet, signal.SIGKILL, workers=2) == -signal.SIGKILL


def test_demo_sigterm_stops_its_workers_and_removes_its_folder(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """SIGTERM to ``allworx-sim demo`` ends its workers within 15 s and removes its temporary folder."""
    demo = launch(started, tmp_path, "demo", "--servers", "8", "--workers", "2", "--speed", "60")
    wait_for_line(demo, "agents starting")
    assert len(list(tmp_path.glob("allworx-demo-*"))) == 1
    assert stop_and_check(demo, signal.SIGTERM, workers=2) == 143
    assert list(tmp_path.glob("allworx-demo-*")) == []


def test_demo_removes_its_temporary_folder_and_keeps_the_report(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """Without ``--dir`` the demo removes its working folder and prints where the report it kept is."""
    demo = launch(started, tmp_path, "demo", "--servers", "10", "--workers", "0", "--speed", "3000")
    output = demo.communicate(timeout=150)[0]
    assert demo.returncode == 0, output
    (folder,) = tmp_path.glob("allworx-demo-*")
    assert folder.name.startswith("allworx-demo-report-")
    assert f"Report: {folder / 'report.html'}" in output
    assert (folder / "report.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]


def test_demo_keep_keeps_its_working_folder(tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    """With ``--keep`` the demo's temporary working folder stays, the fleet and the report in it."""
    demo = launch(started, tmp_path, "demo", "--servers", "10", "--workers", "0", "--speed", "3000", "--keep")
    output = demo.communicate(timeout=150)[0]
    assert demo.returncode == 0, output
    (folder,) = tmp_path.glob("allworx-demo-*")
    assert (folder / "fleet" / "servers").is_dir()
    assert (folder / "report" / "report.json").is_file()
    assert str(folder / "report" / "report.html") in output
