"""Experiment results: one CSV row per experiment, a JSON-lines log per run, and run-header facts.

Several runs may append to one results CSV at once. `append_result` serializes them with an
exclusive `fcntl.flock` on a lock file beside the CSV, and replaces the CSV atomically, so a
reader never sees a half-written row.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import math
import numbers
import os
import platform
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from specstream.atomic import atomic_write, make_folder, write_text_atomically

logger = logging.getLogger(__name__)

REFERENCE_COLUMNS = (
    "experiment_id",
    "model",
    "input",
    "target",
    "test_r2",
    "test_mae",
    "train_size",
    "train_time",
)
"""Columns of the reference study, first in every results CSV. train_time is in seconds."""

KNOWN_COLUMNS = REFERENCE_COLUMNS + (
    "test_rmse",
    "test_bias",
    "epochs_run",
    "best_epoch",
    "params",
    "world_size",
    "device",
    "spectra_per_s",
    "seed",
    "code_revision",
)
"""Columns every results CSV starts with, in this order. Other keys of a row follow them."""


@contextmanager
def _exclusive_lock(csv_path: Path):
    lock_path = csv_path.with_name(csv_path.name + ".lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _format_value(key: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()  # so NumPy scalars print as plain Python values
    if isinstance(value, (str, bool, numbers.Number)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValueError(
        f"results column {key!r} has a value of type {type(value).__name__}; "
        "expected str, int, float, bool, None or a path"
    )


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return [], []
    with open(csv_path, newline="") as stream:
        reader = csv.DictReader(stream)
        header = list(reader.fieldnames or [])
        if "experiment_id" not in header:
            raise ValueError(
                f"{csv_path} has no experiment_id column (header {header}); it is not a specstream "
                "results file. Choose another results path."
            )
        rows = []
        for row in reader:
            if None in row:
                raise ValueError(
                    f"{csv_path} line {reader.line_num} has more fields than its header "
                    f"({len(header)} columns); repair or move the file"
                )
            rows.append(row)
    return header, rows


def _merged_header(existing: list[str], row_keys) -> list[str]:
    header = list(KNOWN_COLUMNS)
    for key in list(existing) + list(row_keys):
        if key not in header:
            header.append(key)
    return header


def _write_atomically(csv_path: Path, header: list[str], rows: list[Mapping[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(csv_path, buffer.getvalue(), fsync=True)


def append_result(csv_path: str | os.PathLike, row: Mapping[str, object]) -> None:
    """Append one experiment's row to the results CSV, creating the file if needed.

    The header is KNOWN_COLUMNS followed by every other column that the file or the row has,
    in order of first appearance. Missing values are empty cells. Each call rewrites the file
    under a temporary name and renames it over the old one, so an interrupted call leaves the
    previous file intact. The cost grows with the number of rows, which is small for one row
    per experiment.
    """
    csv_path = Path(csv_path)
    for key in row:
        if not isinstance(key, str) or not key:
            raise ValueError(f"results column names must be non-empty strings, got {key!r}")
    formatted = {key: _format_value(key, value) for key, value in row.items()}
    if not formatted.get("experiment_id"):
        raise ValueError(f"the row for {csv_path} has no experiment_id; set row['experiment_id']")
    make_folder(csv_path.parent)

    # Limitation: flock does not exclude writers on other hosts on some network file systems.
    with _exclusive_lock(csv_path):
        existing_header, rows = _read_rows(csv_path)
        header = _merged_header(existing_header, formatted)
        rows.append(formatted)
        _write_atomically(csv_path, header, rows)
    logger.info("appended experiment %s to %s", formatted["experiment_id"], csv_path)


def read_results(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read a results CSV into a DataFrame, one row per experiment."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"results file {csv_path} not found; run an experiment first")
    try:
        return pd.read_csv(csv_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"results file {csv_path} is not a results CSV ({exc}); pass the results.csv that "
                         "`specstream run` or `specstream baseline` wrote") from exc


def _json_default(value):
    if hasattr(value, "item"):  # NumPy scalars and one-element tensors
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serializable")


def _replace_non_finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_non_finite(item) for item in value]
    return value


class JsonlLog:
    """Append-only JSON-lines log: one JSON object per line, flushed after each line.

    NaN and infinite floats are written as null, so every line is standard JSON.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        make_folder(self.path.parent)
        self._stream = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, object]) -> None:
        """Append `record` as one line and flush it to the operating system."""
        plain = json.loads(json.dumps(record, default=_json_default))  # NumPy scalars -> Python
        line = json.dumps(_replace_non_finite(plain), allow_nan=False)
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines log. A torn last line (the writer was killed mid-line) is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log file {path} not found")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            is_torn_last_line = number == len(lines) and not text.endswith("\n")
            if is_torn_last_line:
                logger.warning("%s: skipped the incomplete last line %d", path, number)
                continue
            raise ValueError(
                f"{path} line {number} is not valid JSON ({error}); repair or delete the line"
            ) from error
    return records


def code_revision(repo_dir: str | os.PathLike | None = None) -> str:
    """Return the git short hash of the repository at `repo_dir` (default: this package's checkout).

    The hash gets a "-dirty" suffix when tracked files have uncommitted changes. Returns
    "unknown" when git is missing, the directory is not a checkout, or it has no commit yet.
    """
    directory = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=directory, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory, capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{revision}-dirty" if status.strip() else revision


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_summary() -> dict[str, object]:
    """Collect versions and hardware facts for a run header or a benchmark report."""
    import torch

    cuda = torch.cuda.is_available()
    usable_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": _package_version("numpy"),
        "numba": _package_version("numba"),
        "cuda": torch.version.cuda if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_count": usable_cpus,
        "executable": sys.executable,
    }


PREDICTION_COLUMNS = ("sample_id", "y_true", "y_pred")
"""Columns every predictions file has; extra per-sample columns (e.g. mag, snr) follow them."""


def save_predictions(path: str | os.PathLike, sample_ids, y_true, y_pred, extra: Mapping | None = None) -> Path:
    """Write per-sample predictions of one target to an uncompressed .npz file, atomically.

    sample_ids (n,) int64 global ids, y_true and y_pred (n,) in the label's units, and each `extra` value
    (n,) (e.g. "mag", "snr") are stored as arrays under their names. `load_predictions` reads the file back.
    """
    path = Path(path)
    columns = {"sample_id": np.asarray(sample_ids, dtype=np.int64),
               "y_true": np.asarray(y_true, dtype=np.float64), "y_pred": np.asarray(y_pred, dtype=np.float64)}
    for name, values in (extra or {}).items():
        if name in PREDICTION_COLUMNS or not isinstance(name, str) or not name:
            raise ValueError(f"invalid extra prediction column {name!r}; use a label name such as 'mag' or 'snr'")
        columns[name] = np.asarray(values, dtype=np.float64)
    n = len(columns["sample_id"])
    for name, values in columns.items():
        if values.shape != (n,):
            raise ValueError(f"prediction column {name!r} has shape {values.shape}; expected ({n},), one value "
                             "per sample")
    with atomic_write(path, "wb") as stream:
        np.savez(stream, **columns)
    return path


def load_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a file written by `save_predictions` into a DataFrame: sample_id, y_true, y_pred, then extras."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file {path} not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"predictions file {path} is not an .npz archive; rerun the experiment to rewrite it")
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [name for name in PREDICTION_COLUMNS if name not in stored.files]
            if missing:
                raise ValueError(f"{path} has no {', '.join(missing)} array (found {', '.join(stored.files)}); "
                                 "it was not written by save_predictions")
            names = list(PREDICTION_COLUMNS) + [name for name in stored.files if name not in PREDICTION_COLUMNS]
            return pd.DataFrame({name: stored[name] for name in names})
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"predictions file {path} is unreadable ({error}); rerun the experiment to rewrite it"
        ) from error
