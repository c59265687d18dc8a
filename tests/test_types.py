"""The type check of ``online/``: mypy with the configuration in pyproject.toml must pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_errors_in_online() -> None:
    # the files, the cache dir (.mypy_cache) and the per-module rules come from pyproject.toml
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"mypy found type errors:\n{run.stdout}{run.stderr}"
