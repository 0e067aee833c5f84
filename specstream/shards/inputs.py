"""Read validated rows of several survey files by global sample id, from any starting id.

Global sample id = offset of the file in the input list (the spectra of all earlier files) + row in file.
Rows are validated with `specstream.io`'s row checks. Reading can start at any id, which is what lets an
interrupted `specstream shard` run resume, and single ids can be read again when a resumed run rebuilds
its unfinished blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from specstream.io import LABEL_COLUMNS, Problem, SurveyFile, check_same_grid, describe, read_labels
from specstream.io.validate import REQUIRED_LABELS, check_rows, raise_problems, sanitize_masked

logger = logging.getLogger(__name__)


@dataclass
class Rows:
    """Validated spectra in ascending id order, as float32, ready to be split and buffered."""

    ids: np.ndarray  # (n,) int64 global sample ids
    flux: np.ndarray  # (n, n_pixels) float32
    error: np.ndarray  # (n, n_pixels) float32
    mask: np.ndarray | None  # (n, n_pixels) int8, None when no input file has a mask
    labels: np.ndarray  # (n, n_labels) float64, columns as InputSet.label_names

    def take(self, index: np.ndarray) -> Rows:
        """Return the rows at positions `index`."""
        mask = None if self.mask is None else self.mask[index]
        return Rows(self.ids[index], self.flux[index], self.error[index], mask, self.labels[index])


class ProblemLog:
    """Bad rows found in drop mode, one Problem per (file, key, kind), in a form a checkpoint can store."""

    def __init__(self, records: list[dict] | None = None):
        self.problems: dict[tuple, Problem] = {}
        for record in records or []:
            problem = Problem.from_record(record)
            self.problems[(str(problem.path), problem.key, problem.what)] = problem

    def add(self, problem: Problem) -> None:
        key = (str(problem.path), problem.key, problem.what)
        if key not in self.problems:
            self.problems[key] = Problem(problem.path, problem.key, problem.what)
        self.problems[key].absorb(problem)

    def records(self) -> list[dict]:
        return [problem.record() for problem in self.problems.values()]


def _numeric_columns(path: Path, labels: pd.DataFrame) -> list[str]:
    numeric = [name for name in labels.columns if labels[name].dtype.kind in "fiub"]
    skipped = [name for name in labels.columns if name not in numeric]
    if skipped:
        logger.warning("%s: label columns %s are not numeric and are left out of the shards", path, skipped)
    return numeric


class InputSet:
    """Several survey files on one wavelength grid, addressed by global sample id."""

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise ValueError("no input files given; pass one or more survey HDF5 files")
        resolved = [Path(path).resolve() for path in paths]
        repeated = sorted({str(path) for path in resolved if resolved.count(path) > 1})
        if repeated:
            raise ValueError(f"input files given more than once: {', '.join(repeated)}; their spectra would get "
                             "two sample ids and could land in two splits")
        self.files: list[SurveyFile] = [describe(path) for path in paths]
        check_same_grid(self.files)
        counts = np.array([info.n_spectra for info in self.files], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])  # first id of each file, then the total
        self.n_total = int(self.offsets[-1])
        self.n_pixels = self.files[0].n_pixels
        self.wave = self.files[0].wave
        self.has_mask = any(info.has_mask for info in self.files)
        columns: list[str] = []
        for info in self.files:
            columns += [c for c in _numeric_columns(info.path, read_labels(info.path, info)) if c not in columns]
        self.label_names = [c for c in LABEL_COLUMNS if c in columns] + sorted(set(columns) - set(LABEL_COLUMNS))
        self._labels_cache: tuple[int, pd.DataFrame, np.ndarray] | None = None

    def _labels(self, file_index: int) -> tuple[pd.DataFrame, np.ndarray]:
        """Return the label table of one file and its (n, n_labels) float64 array; one file is cached."""
        if self._labels_cache is None or self._labels_cache[0] != file_index:
            info = self.files[file_index]
            frame = read_labels(info.path, info)
            array = np.full((len(frame), len(self.label_names)), np.nan)
            for j, name in enumerate(self.label_names):
                if name in frame.columns and frame[name].dtype.kind in "fiub":
                    array[:, j] = frame[name].to_numpy(dtype=np.float64)
            self._labels_cache = (file_index, frame, array)
        return self._labels_cache[1], self._labels_cache[2]

    def _read_runs(self, file_index: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Read sorted rows of one file as float32 flux, error and int8 mask, one read per run of rows."""
        info = self.files[file_index]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks) if len(run)]
        flux = np.empty((len(rows), self.n_pixels), dtype=np.float32)
        error = np.empty_like(flux)
        mask = np.zeros(flux.shape, dtype=np.int8) if self.has_mask else None
        with h5py.File(info.path, "r") as handle:
            arrays = {role: handle[info.keys[role]] for role in ("flux", "error", "mask") if role in info.keys}
            position = 0
            for start, stop in runs:
                end = position + stop - start
                for role, out in (("flux", flux), ("error", error), ("mask", mask)):
                    if role in arrays and out is not None:
                        arrays[role].read_direct(out, np.s_[start:stop], np.s_[position:end])
                position = end
        return flux, error, mask

    def _validated(self, file_index: int, rows: np.ndarray, on_bad: str, problems: ProblemLog) -> Rows:
        info = self.files[file_index]
        frame, label_array = self._labels(file_index)
        flux, error, mask = self._read_runs(file_index, rows)
        # A file without a mask reads as all zeros when another input file has one. There is no mask key to check.
        file_mask = mask if "mask" in info.keys else None
        good, found = check_rows(info.path, info.keys, int(rows[0]), flux, error, file_mask, frame.iloc[rows],
                                 REQUIRED_LABELS)
        if found and on_bad == "raise":
            raise_problems(found)
        for problem in found:
            problems.add(problem)
        sanitize_masked(flux, error, mask)
        result = Rows(self.offsets[file_index] + rows, flux, error, mask, label_array[rows])
        return result if good.all() else result.take(np.flatnonzero(good))

    def iter_rows(self, start_id: int, chunk_size: int, on_bad: str,
                  problems: ProblemLog) -> Iterator[tuple[int, int, Rows]]:
        """Yield (first id, end id, valid rows) of each chunk from the chunk that contains `start_id` on.

        Chunks are aligned to file start + k * chunk_size, whatever `start_id` is, so a resumed run reads the
        same chunks as an uninterrupted one. Bad rows raise ValueError (on_bad="raise") or are left out and
        logged in `problems` (on_bad="drop"), so a chunk may come with fewer rows than its id range.
        """
        for file_index, info in enumerate(self.files):
            first, end = int(self.offsets[file_index]), int(self.offsets[file_index + 1])
            if start_id >= end:
                continue
            row = max(start_id - first, 0)
            row -= row % chunk_size
            for start in range(row, info.n_spectra, chunk_size):
                rows = np.arange(start, min(start + chunk_size, info.n_spectra))
                yield first + start, first + int(rows[-1]) + 1, self._validated(file_index, rows, on_bad, problems)

    def read_ids(self, ids: np.ndarray) -> Rows:
        """Read and validate the rows of ascending ids that were valid before; raise if one no longer is."""
        parts = []
        for file_index in range(len(self.files)):
            first, end = self.offsets[file_index], self.offsets[file_index + 1]
            selected = ids[(ids >= first) & (ids < end)]
            if len(selected):
                parts.append(self._validated(file_index, selected - first, "raise", ProblemLog()))
        if not parts:
            return Rows(ids[:0], np.empty((0, self.n_pixels), np.float32),
                        np.empty((0, self.n_pixels), np.float32),
                        np.zeros((0, self.n_pixels), np.int8) if self.has_mask else None,
                        np.empty((0, len(self.label_names))))
        masks = [part.mask for part in parts]
        return Rows(np.concatenate([p.ids for p in parts]), np.concatenate([p.flux for p in parts]),
                    np.concatenate([p.error for p in parts]), None if masks[0] is None else np.concatenate(masks),
                    np.concatenate([p.labels for p in parts]))
