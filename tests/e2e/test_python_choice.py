"""scripts/lib/setup.sh picks an interpreter Simwire supports (3.11–3.13, as pyproject.toml
says) and, when there is none, says which versions work."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_python(directory: Path, name: str, version: str) -> Path:
    """An executable that answers the version probe like that Python would."""
    path = directory / name
    major, minor = version.split(".")
    path.write_text(f"#!/bin/sh\necho {major}.{minor}\n")
    path.chmod(0o755)
    return path


def pick(path_dir: Path, python: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path_dir), "HOME": os.environ.get("HOME", "/root")}
    if python:
        env["PYTHON"] = python
    return subprocess.run(
        ["/bin/bash", "-c", f"source {ROOT}/scripts/lib/setup.sh && pick_python"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_newest_supported_interpreter_is_chosen_over_older_and_newer_ones(tmp_path):
    fake_python(tmp_path, "python3", "3.10")
    fake_python(tmp_path, "python3.11", "3.11")
    wanted = fake_python(tmp_path, "python3.12", "3.12")
    fake_python(tmp_path, "python3.14", "3.14")
    chosen = pick(tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == str(wanted)


def test_plain_python3_is_used_when_its_version_fits(tmp_path):
    wanted = fake_python(tmp_path, "python3", "3.13")
    assert pick(tmp_path).stdout.strip() == str(wanted)


def test_no_supported_interpreter_says_which_versions_work(tmp_path):
    fake_python(tmp_path, "python3", "3.10")
    fake_python(tmp_path, "python3.14", "3.14")  # not a name the picker tries
    refused = pick(tmp_path)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "Simwire needs Python 3.11, 3.12 or 3.13" in refused.stderr
    assert f"{tmp_path}/python3 (3.10)" in refused.stderr and "PYTHON=" in refused.stderr


def test_an_unsupported_python_named_in_PYTHON_is_refused_not_replaced(tmp_path):
    fake_python(tmp_path, "python3.12", "3.12")
    old = fake_python(tmp_path, "old-python", "3.9")
    refused = pick(tmp_path, str(old))
    assert refused.returncode != 0
    assert f"PYTHON={old} is Python 3.9; Simwire needs Python 3.11, 3.12 or 3.13" in (
        refused.stderr
    )


def test_the_supported_versions_agree_with_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.14"
    setup = (ROOT / "scripts" / "lib" / "setup.sh").read_text()
    assert 'SUPPORTED_PYTHONS="3.11, 3.12 or 3.13"' in setup
    assert "3.11 | 3.12 | 3.13)" in setup
