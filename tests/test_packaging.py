"""Packaging: every subpackage is installed, and kernels/ installs only as specstream.kernels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def declared_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["packages"]


def test_every_subpackage_declared():
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "specstream").rglob("__init__.py")}
    found.add("specstream.kernels")
    assert set(declared_packages()) == found


def test_kernels_map_to_specstream_kernels():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["package-dir"]["specstream.kernels"] == "kernels"
    assert "kernels" not in declared_packages()


def test_kernels_importable_as_subpackage():
    import specstream.kernels

    assert Path(specstream.kernels.__file__).resolve().parent == ROOT / "kernels"


def test_kernels_reject_top_level_import(tmp_path: Path):
    """Check that `import kernels` fails before Numba caches code that specstream.kernels could not load."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import kernels"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "imported as 'kernels'; import them as specstream.kernels" in result.stderr
    assert not any(tmp_path.rglob("*.nbi"))
