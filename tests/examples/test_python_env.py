"""examples/python_env.sh: which interpreter the example scripts run, and the one-line failure.

Each case runs the real examples/data/preprocess_data.sh from a copy of the repository layout
(so that whether ``.venv`` exists is the test's choice), with a PATH whose python3/python is a
bare virtualenv without the project's dependencies. The chosen interpreter announces itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _announcing_python(path: Path, name: str) -> Path:
    """A python that says it was chosen, then is the test's interpreter (which has the deps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "chosen: {name}" >&2\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory) -> str:
    """PATH whose python3 and python lack every dependency (a --without-pip virtualenv)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return f"{venv / 'bin'}:/usr/bin:/bin"


@pytest.fixture
def repo(tmp_path) -> Path:
    """The scripts' layout, without .venv; cli/preprocess_data.py is the real one (linked)."""
    fake = tmp_path / "repo"
    (fake / "examples" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "python_env.sh", fake / "examples")
    shutil.copy(ROOT / "examples" / "data" / "preprocess_data.sh", fake / "examples" / "data")
    (fake / "cli").mkdir()
    (fake / "cli" / "preprocess_data.py").symlink_to(ROOT / "cli" / "preprocess_data.py")
    return fake


def _run(repo: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    return subprocess.run(
        ["bash", str(repo / "examples" / "data" / "preprocess_data.sh"), "no_such_dataset"],
        env={**base, "PATH": path, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _ran_the_project(proc: subprocess.CompletedProcess) -> bool:
    # the project's own one-line error about the unknown dataset, not a ModuleNotFoundError
    return proc.returncode == 2 and "preprocess_data: error:" in proc.stderr


def test_repository_venv_is_used_when_nothing_is_activated(repo, bare_path):
    _announcing_python(repo / ".venv" / "bin" / "python", ".venv")
    proc = _run(repo, bare_path)
    assert "chosen: .venv" in proc.stderr and _ran_the_project(proc), proc.stderr


def test_python_then_virtualenv_come_before_venv(repo, bare_path, tmp_path):
    _announcing_python(repo / ".venv" / "bin" / "python", ".venv")
    active = tmp_path / "active"
    _announcing_python(active / "bin" / "python", "virtualenv")
    proc = _run(repo, bare_path, VIRTUAL_ENV=str(active))
    assert "chosen: virtualenv" in proc.stderr and _ran_the_project(proc), proc.stderr
    chosen = _announcing_python(tmp_path / "mine" / "python", "PYTHON")
    proc = _run(repo, bare_path, VIRTUAL_ENV=str(active), PYTHON=str(chosen))
    assert "chosen: PYTHON" in proc.stderr and _ran_the_project(proc), proc.stderr


def test_path_python_with_the_dependencies_is_used(repo, tmp_path):
    _announcing_python(tmp_path / "bin" / "python3", "python3")
    proc = _run(repo, f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert "chosen: python3" in proc.stderr and _ran_the_project(proc), proc.stderr


def test_no_usable_python_is_one_line_saying_what_to_do(repo, bare_path):
    proc = _run(repo, bare_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "make venv" in proc.stderr and "PYTHON=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_python_without_the_dependencies_is_named(repo, bare_path):
    bare = bare_path.split(":")[0] + "/python"
    proc = _run(repo, bare_path, PYTHON=bare)
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert f"PYTHON={bare} has no module 'torch'" in proc.stderr


def test_every_example_script_uses_the_helper_and_parses():
    scripts = sorted((ROOT / "examples").rglob("*.sh"))
    assert len(scripts) >= 10
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        if script.name == "python_env.sh":  # the one place that names the candidates
            continue
        # no interpreter from PATH: every python runs as "$PYTHON" (python_env.sh sets it)
        bare = [
            line
            for line in text.splitlines()
            if re.search(r'(^|[\s"(])python3?\s', line) and not line.lstrip().startswith("#")
        ]
        assert not bare, (script, bare)
        if (
            script.name not in ("python_env.sh", "launch_common.sh")
            and "dapo_trainer" not in script.name
        ):
            assert "examples/python_env.sh" in text, script
