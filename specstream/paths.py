"""Locations of the optional reference data (PFS noise tables, STELIB spectra)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "SPECSTREAM_DATA"


def shared_data_dir() -> Path | None:
    """Return the reference-data folder, or None when it is absent.

    Looks at $SPECSTREAM_DATA, then `../shared/data` beside the source checkout, then `../shared/data`
    relative to the working directory. When $SPECSTREAM_DATA is set, it alone decides, so setting it to a
    missing folder turns the reference data off.
    """
    if os.environ.get(DATA_ENV_VAR):
        path = Path(os.environ[DATA_ENV_VAR])
        return path if path.is_dir() else None
    candidates = []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def pfs_etc_dir() -> Path | None:
    """Return the folder of PFS exposure-time-calculator tables, or None when absent."""
    root = shared_data_dir()
    path = root / "pfs_etc" if root else None
    return path if path is not None and (path / "noise_mr.dat").is_file() else None


def stelib_dir() -> Path | None:
    """Return the STELIB folder, or None when absent."""
    root = shared_data_dir()
    path = root / "stelib" if root else None
    return path if path is not None and (path / "stelib_labels.csv").is_file() else None
