"""The CI templates under docs/ci/ work: their commands, run as written in a fresh environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".tox", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "build")


def _github(doc: dict[str, Any], work: Path) -> tuple[dict[str, str], list[str]]:
    env = {k: str(v) for k, v in doc.get("env", {}).items()}
    commands = []
    for step in doc["jobs"]["scenarios"]["steps"]:
        env.update(
            {
                k: str(v).replace("${{ runner.temp }}", str(work / "runner-temp"))
                for k, v in step.get("env", {}).items()
            }
        )
        if "run" in step:
            commands.append(step["run"])
    return env, commands


def _gitlab(doc: dict[str, Any], work: Path) -> tuple[dict[str, str], list[str]]:
    job = doc["upgrade-scenarios"]
    env = {k: str(v).replace("$CI_PROJECT_DIR", str(work)) for k, v in job.get("variables", {}).items()}
    return env, list(job["script"])


@pytest.mark.parametrize(("name", "read"), [("github-actions.yml", _github), ("gitlab-ci.yml", _gitlab)])
def test_template_commands_install_and_run_the_scenarios(tmp_path: Path, name: str, read: Any) -> None:
    """Installing from the repository as the template says, then its scenario run, passes and reports."""
    work = tmp_path / "project"
    shutil.copytree(ROOT, work, ignore=SKIP)
    doc = yaml.safe_load((ROOT / "docs" / "ci" / name).read_text())
    env_vars, commands = read(doc, work)
    assert any("pip install" in c for c in commands)
    assert any("scenario run scenarios/" in c for c in commands)
    # A fresh environment with its own pip: the project's dependencies come from this interpreter's
    # site-packages (no index needed), the project itself only from the repository copy.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    env = {**os.environ, **env_vars, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    installed = bin_dir / "allworx-sim"
    assert installed.exists()
    report = work / "reports" / "scenarios.xml"
    assert report.exists()
    assert 'failures="0"' in report.read_text()
