"""The demo's own figure: ``allworx-sim demo`` (200 servers) timed from start to exit, build included.

    python -m bench.demo [--servers 200]

It runs the command as a user would, in a fresh temporary folder with a fresh simulator home (so
the vendor keyring, the release repository and the fleet are all built inside the timed run), and
prints the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure_demo(servers: int = 200) -> float:
    """Seconds of wall time ``allworx-sim demo --servers N`` took, build included.

    Raises:
        RuntimeError: the demo exited with an error.
    """
    work = Path(tempfile.mkdtemp(prefix="allworx-bench-demo-"))
    env = dict(os.environ, ALLWORX_SIM_HOME=str(work / "home"))
    try:
        began = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulator.cli",
                "demo",
                "--servers",
                str(servers),
                "--report",
                str(work / "report"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.monotonic() - began
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"the demo exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return wall


def main() -> None:
    """Time the demo and print the figure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, default=200)
    args = parser.parse_args()
    print(f"demo: allworx-sim demo --servers {args.servers} took {measure_demo(args.servers):.1f} s wall")


if __name__ == "__main__":
    main()
