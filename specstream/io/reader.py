"""Stream spectra and labels out of one or more survey HDF5 files in bounded memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np
import pandas as pd

from specstream.io.labels import is_pandas_table, read_columns_group, read_pandas_table, read_structured
from specstream.io.layout import SurveyFile, describe
from specstream.io.validate import (
    ON_BAD_CHOICES, REQUIRED_LABELS, Problem, check_label_columns, check_rows, raise_problems, sanitize_masked,
)

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4096  # spectra per chunk: 128 MiB of float64 flux, the survey files' chunk height


@dataclass
class Chunk:
    """A block of consecutive valid spectra from one file."""

    flux: np.ndarray  # (n, n_pixels) as stored (float32 or float64)
    error: np.ndarray  # (n, n_pixels)
    mask: np.ndarray | None  # (n, n_pixels) int8, non-zero = bad pixel; None when the file has no mask
    labels: pd.DataFrame  # n rows
    source: Path
    rows: np.ndarray  # (n,) int64 row index of each spectrum inside `source`
    n_dropped: int = 0  # bad rows left out of this chunk


def open_survey(path: str | Path) -> SurveyFile:
    """Describe one survey file; raise ValueError on missing keys, wrong shapes or dtypes."""
    return describe(path)


def read_labels(path: str | Path, info: SurveyFile | None = None) -> pd.DataFrame:
    """Read the whole label table of one file without executing anything stored in it."""
    info = info or describe(path)
    with h5py.File(info.path, "r") as handle:
        node = handle[info.keys["labels"]]
        if is_pandas_table(node):
            labels = read_pandas_table(info.path, node)
        elif isinstance(node, h5py.Group):
            labels = read_columns_group(info.path, node)
        else:
            labels = read_structured(info.path, node)
    check_label_columns(info.path, info.keys["labels"], labels, info.n_spectra)
    return labels.reset_index(drop=True)


def read_wave(path: str | Path) -> np.ndarray:
    """Return the wavelength grid of one file, (n_pixels,) Angstrom."""
    return describe(path).wave


def check_same_grid(files: list[SurveyFile], rtol: float = 1e-7) -> None:
    """Raise ValueError unless every file has the same number of pixels and wavelength grid."""
    first = files[0]
    for info in files[1:]:
        if info.n_pixels != first.n_pixels or not np.allclose(info.wave, first.wave, rtol=rtol, atol=0.0):
            raise ValueError(f"{info.path}: wavelength grid differs from {first.path} "
                             f"({info.n_pixels} vs {first.n_pixels} pixels); files of one data set must share "
                             "one grid")


def iter_chunks(
    paths: Iterable[str | Path], chunk_size: int = DEFAULT_CHUNK_SIZE, on_bad: str = "raise",
    required_labels: tuple = REQUIRED_LABELS, problems: list[Problem] | None = None,
) -> Iterator[Chunk]:
    """Yield validated chunks of spectra from several files, in file order then row order.

    on_bad="raise" stops at the first chunk with a bad row, naming file, key, rows and count.
    on_bad="drop" leaves bad rows out. It appends a Problem per kind to `problems` when given, and logs
    them as warnings otherwise.
    """
    if on_bad not in ON_BAD_CHOICES:
        raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    files = [describe(p) for p in paths]
    if not files:
        raise ValueError("no input files given")
    check_same_grid(files)
    for info in files:
        yield from _iter_file(info, chunk_size, on_bad, required_labels, problems)


def _iter_file(info: SurveyFile, chunk_size: int, on_bad: str, required_labels: tuple,
               problems: list[Problem] | None) -> Iterator[Chunk]:
    labels = read_labels(info.path, info)
    found: dict[tuple, Problem] = {}
    with h5py.File(info.path, "r") as handle:
        flux_ds, error_ds = handle[info.keys["flux"]], handle[info.keys["error"]]
        mask_ds = handle[info.keys["mask"]] if info.has_mask else None
        for start in range(0, info.n_spectra, chunk_size):
            stop = min(start + chunk_size, info.n_spectra)
            flux, error = flux_ds[start:stop], error_ds[start:stop]
            mask = mask_ds[start:stop].astype(np.int8, copy=False) if mask_ds is not None else None
            chunk_labels = labels.iloc[start:stop]
            good, chunk_problems = check_rows(info.path, info.keys, start, flux, error, mask, chunk_labels,
                                              required_labels)
            if chunk_problems and on_bad == "raise":
                raise_problems(chunk_problems)
            for problem in chunk_problems:
                _merge_problem(found, problem)
            rows = np.arange(start, stop, dtype=np.int64)
            if not good.all():
                flux, error, rows = flux[good], error[good], rows[good]
                mask = mask[good] if mask is not None else None
                chunk_labels = chunk_labels.iloc[np.flatnonzero(good)]
            sanitize_masked(flux, error, mask)
            yield Chunk(flux, error, mask, chunk_labels.reset_index(drop=True), info.path, rows,
                        n_dropped=int((~good).sum()))
    for problem in found.values():
        if problems is None:
            logger.warning("left out %s", problem.message())
        else:
            problems.append(problem)


def _merge_problem(found: dict, problem: Problem) -> None:
    key = (problem.key, problem.what)
    if key not in found:
        found[key] = Problem(problem.path, problem.key, problem.what)
    found[key].absorb(problem)
