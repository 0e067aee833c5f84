"""Row-level checks of spectra and labels, with reports that name the file, key, rows and count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Labels that every spectrum must carry as finite numbers. Other columns may hold NaN (unset).
REQUIRED_LABELS = ("T_eff", "log_g", "M_H")
ON_BAD_CHOICES = ("raise", "drop")
MAX_ROWS_SHOWN = 5


@dataclass
class Problem:
    """One kind of bad row found in one file: which key, what is wrong, which rows."""

    path: Path
    key: str
    what: str  # e.g. "non-finite flux"
    rows: list = field(default_factory=list)  # first offending row indices inside the file
    count: int = 0
    example: str = ""  # the first offending value, e.g. "row 5, pixel 12: -1.0"; empty for label problems

    def message(self) -> str:
        shown = ", ".join(str(r) for r in self.rows[:MAX_ROWS_SHOWN])
        more = " ..." if self.count > MAX_ROWS_SHOWN else ""
        example = f"; first at {self.example}" if self.example else ""
        noun = "row" if self.count == 1 else "rows"
        return f"{self.path}: key {self.key}: {self.count} {noun} with {self.what} (rows {shown}{more}{example})"

    @classmethod
    def from_record(cls, record: dict) -> "Problem":
        """Rebuild a Problem from its JSON record (as the shard manifest stores them under dropped_rows)."""
        return cls(Path(record["path"]), record["key"], record["what"], list(record["rows"]), int(record["count"]),
                   record.get("example", ""))

    def record(self) -> dict:
        """Return the Problem as a JSON-ready record."""
        return {"path": str(self.path), "key": self.key, "what": self.what, "rows": list(self.rows),
                "count": self.count, "example": self.example}

    def merge(self, rows: np.ndarray) -> None:
        """Count `rows` as offending and keep the first few for the message."""
        self.count += int(len(rows))
        self.rows.extend(int(r) for r in rows[: max(0, MAX_ROWS_SHOWN - len(self.rows))])

    def absorb(self, other: "Problem") -> None:
        """Add the rows of another Problem of the same kind."""
        self.count += other.count
        self.rows.extend(other.rows[: max(0, MAX_ROWS_SHOWN - len(self.rows))])
        self.example = self.example or other.example


def check_rows(
    path: Path, keys: dict, first_row: int, flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None,
    labels: pd.DataFrame, required_labels: tuple = REQUIRED_LABELS,
) -> tuple[np.ndarray, list[Problem]]:
    """Return a bool (n,) of good rows and one Problem per kind of bad row found.

    A row is bad when flux or error is non-finite at an unmasked pixel, error <= 0 at an unmasked pixel,
    every pixel is masked, or a required label is NaN.
    """
    good_pixel = np.ones(flux.shape, dtype=bool) if mask is None else (mask == 0)
    # (key, what, bad pixels (n, n_pixels) with the values shown, or bad rows (n,) and None)
    checks = [
        (keys["flux"], "non-finite flux at unmasked pixels", ~np.isfinite(flux) & good_pixel, flux),
        (keys["error"], "non-finite error at unmasked pixels", ~np.isfinite(error) & good_pixel, error),
        (keys["error"], "error <= 0 at unmasked pixels", (error <= 0) & good_pixel, error),
    ]
    if mask is not None:
        checks.append((keys["mask"], "every pixel masked", ~good_pixel.any(axis=1), None))
    for name in required_labels:
        checks.append((f"{keys['labels']} column {name}", f"NaN {name}", ~np.isfinite(labels[name].to_numpy()),
                       None))

    good = np.ones(len(flux), dtype=bool)
    problems = []
    for key, what, bad, values in checks:
        bad_rows = bad if values is None else bad.any(axis=1)
        if bad_rows.any():
            problem = Problem(path, key, what)
            problem.merge(first_row + np.flatnonzero(bad_rows))
            if values is not None:
                row, pixel = np.argwhere(bad)[0]
                problem.example = f"row {first_row + row}, pixel {pixel}: {values[row, pixel]}"
            problems.append(problem)
            good &= ~bad_rows
    return good, problems


def check_label_columns(path: Path, key: str, labels: pd.DataFrame, n_spectra: int,
                        required_labels: tuple = REQUIRED_LABELS) -> None:
    """Raise ValueError when the label table misses a required column, has the wrong length or dtype."""
    missing = [name for name in required_labels if name not in labels.columns]
    if missing:
        raise ValueError(f"{path}: key {key} is missing label columns {missing}; columns found: "
                         f"{list(labels.columns)}. Add them (Fe_H is accepted for M_H).")
    if len(labels) != n_spectra:
        raise ValueError(f"{path}: key {key} has {len(labels)} rows but the file contains {n_spectra} spectra; "
                         "there must be one label row per spectrum")
    for name in required_labels:
        if labels[name].dtype.kind not in "fiu":
            raise ValueError(f"{path}: key {key} column {name} has dtype {labels[name].dtype}, expected numbers")


def sanitize_masked(flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> None:
    """Replace non-finite or non-positive values at masked pixels in place, so no NaN reaches a shard.

    Masked flux becomes 0 and masked error the largest valid error of that spectrum. Kernels zero masked
    pixels anyway, so the values only keep statistics and float16 storage finite.
    """
    if mask is None:
        return
    bad_pixel = mask != 0
    if not bad_pixel.any():
        return
    valid_error = np.where(bad_pixel | ~np.isfinite(error) | (error <= 0), -np.inf, error)
    row_max = valid_error.max(axis=1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 1.0)
    np.copyto(flux, 0.0, where=bad_pixel & ~np.isfinite(flux))
    np.copyto(error, np.broadcast_to(row_max, error.shape), where=bad_pixel & (~np.isfinite(error) | (error <= 0)))


def raise_problems(problems: list[Problem]) -> None:
    """Raise one ValueError listing every problem, with the fix."""
    lines = "\n  ".join(p.message() for p in problems)
    raise ValueError(f"invalid spectra:\n  {lines}\nFix the input, or drop bad rows (on_bad='drop', "
                     "--drop-bad on the command line).")
