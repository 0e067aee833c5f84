"""Write spectra in the survey layout, chunk by chunk, under a temporary name renamed on success."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from specstream.atomic import make_folder
from specstream.io.layout import LAYOUTS

HDF5_CHUNK_ROWS = 4096  # chunk shape (4096, n_pixels), as the survey's files use


class SurveyWriter:
    """Write `n_spectra` spectra to `path`; the file appears only when complete.

    Use as a context manager, and call `write(start, flux, error, labels, mask=None)` for consecutive blocks.
    Labels are kept in memory (a few floats per spectrum) and written on close: as a pandas table in the
    survey layout (needs PyTables), as a group of 1-D datasets in the flat layout (needs only h5py).
    """

    def __init__(self, path: str | Path, n_spectra: int, wave: np.ndarray, dtype: str = "float32",
                 with_mask: bool = False, attrs: dict | None = None, layout: str = "survey"):
        if n_spectra < 1:
            raise ValueError(f"n_spectra must be >= 1, got {n_spectra}")
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        self.keys = LAYOUTS[layout]
        self.layout = layout
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; give a file name such as {self.path / 'spectra.h5'}")
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.n_spectra = n_spectra
        self.n_pixels = len(wave)
        self._labels: list[pd.DataFrame] = []
        self._written = 0
        make_folder(self.path.parent)
        self._handle = h5py.File(self.tmp_path, "w")
        try:
            chunks = (min(HDF5_CHUNK_ROWS, n_spectra), self.n_pixels)
            shape = (n_spectra, self.n_pixels)
            self._flux = self._handle.create_dataset(self.keys["flux"], shape, dtype=dtype, chunks=chunks)
            self._error = self._handle.create_dataset(self.keys["error"], shape, dtype=dtype, chunks=chunks)
            self._mask = (self._handle.create_dataset(self.keys["mask"], shape, dtype="int8", chunks=chunks)
                          if with_mask else None)
            self._handle.create_dataset(self.keys["wave"], data=np.asarray(wave, dtype=np.float64))
            for key, value in (attrs or {}).items():
                self._handle.attrs[key] = value
        except BaseException:  # a bad wave grid or attribute: leave no temporary file behind
            self.abort()
            raise

    def write(self, start: int, flux: np.ndarray, error: np.ndarray, labels: pd.DataFrame,
              mask: np.ndarray | None = None) -> None:
        """Write rows [start, start + len(flux)); blocks must come in order without gaps."""
        n = len(flux)
        if start != self._written:
            raise ValueError(f"blocks must be written in order: expected start {self._written}, got {start}")
        if start + n > self.n_spectra or error.shape != flux.shape or len(labels) != n:
            raise ValueError(f"block at row {start} has flux {flux.shape}, error {error.shape}, {len(labels)} "
                             f"label rows; expected equal shapes within {self.n_spectra} spectra")
        self._flux[start:start + n] = flux
        self._error[start:start + n] = error
        if self._mask is not None:
            self._mask[start:start + n] = np.zeros(flux.shape, np.int8) if mask is None else mask
        self._labels.append(labels.reset_index(drop=True))
        self._written += n

    def close(self) -> Path:
        """Write the label table and move the finished file into place."""
        if self._written != self.n_spectra:
            raise ValueError(f"{self.path}: only {self._written} of {self.n_spectra} spectra were written")
        labels = pd.concat(self._labels, ignore_index=True)
        if self.layout == "flat":
            group = self._handle.create_group(self.keys["labels"])
            for name in labels.columns:
                group[name] = labels[name].to_numpy()
            group.attrs["columns"] = [str(name) for name in labels.columns]  # HDF5 lists members by name
            self._handle.close()
            os.replace(self.tmp_path, self.path)
            return self.path
        self._handle.close()
        # index=False skips the PyTables search index, whose nodes carry timestamps: the same data then
        # gives the same bytes, so checksums of written files are reproducible.
        labels.to_hdf(self.tmp_path, key=self.keys["labels"], format="table", mode="a", index=False)
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._handle.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "SurveyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
