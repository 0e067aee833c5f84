"""Detect which of the two accepted HDF5 layouts a file uses and describe it without reading the spectra.

survey layout (what the survey's simulator writes):
    /dataset/arrays/flux/value   (N, n_pixels) float
    /dataset/arrays/error/value  (N, n_pixels) float
    /dataset/arrays/mask/value   (N, n_pixels) int, optional, non-zero = bad pixel
    /dataset/params              pandas to_hdf(format='table') label table
    /spectrumdataset/wave        (n_pixels,) Angstrom
flat layout:
    /flux, /error, /mask (optional), /wave at the root, and the labels as /labels: a pandas table, a group of
    1-D datasets (one per column) or a compound dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SURVEY_KEYS = {
    "flux": "/dataset/arrays/flux/value",
    "error": "/dataset/arrays/error/value",
    "mask": "/dataset/arrays/mask/value",
    "labels": "/dataset/params",
    "wave": "/spectrumdataset/wave",
}
FLAT_KEYS = {"flux": "/flux", "error": "/error", "mask": "/mask", "labels": "/labels", "wave": "/wave"}
LAYOUTS = {"survey": SURVEY_KEYS, "flat": FLAT_KEYS}


@dataclass(frozen=True)
class SurveyFile:
    """Description of one HDF5 file: its layout, dataset keys, shapes and dtypes."""

    path: Path
    layout: str  # "survey" or "flat"
    keys: dict  # role ("flux", "error", "mask", "labels", "wave") -> HDF5 key
    n_spectra: int
    n_pixels: int
    dtype: np.dtype  # dtype of flux on disk
    has_mask: bool
    wave: np.ndarray  # (n_pixels,) Angstrom
    size_bytes: int


def detect_layout(path: Path, handle: h5py.File) -> str:
    """Return "survey" or "flat"; raise ValueError naming the keys found when the file matches neither."""
    if SURVEY_KEYS["flux"] in handle:
        return "survey"
    if "flux" in handle and isinstance(handle["flux"], h5py.Dataset):
        return "flat"
    top = sorted(handle.keys())
    raise ValueError(
        f"{path}: missing key {SURVEY_KEYS['flux']} (survey layout) or /flux (flat layout); "
        f"top-level keys found: {top}. Write the spectra under one of these layouts."
    )


def _require(path: Path, handle: h5py.File, key: str, role: str) -> h5py.Dataset | h5py.Group:
    if key not in handle:
        raise ValueError(f"{path}: missing key {key} ({role}); every spectrum file needs flux, error, "
                         "wave and a label table")
    return handle[key]


def describe(path: str | Path) -> SurveyFile:
    """Open `path` read-only and describe it; raise on missing keys, wrong shapes or wrong dtypes."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the survey HDF5 files in it, for example {path}/*.h5")
    if not path.is_file():
        raise FileNotFoundError(f"spectrum file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc}); check that the copy is complete") from exc
    with handle:
        layout = detect_layout(path, handle)
        keys = dict(LAYOUTS[layout])
        flux = _require(path, handle, keys["flux"], "flux")
        error = _require(path, handle, keys["error"], "error")
        wave = _require(path, handle, keys["wave"], "wave")
        _require(path, handle, keys["labels"], "label table")
        has_mask = keys["mask"] in handle
        if not has_mask:
            keys.pop("mask")
        _check_arrays(path, handle, keys, flux, error, wave)
        return SurveyFile(
            path=path, layout=layout, keys=keys, n_spectra=int(flux.shape[0]), n_pixels=int(flux.shape[1]),
            dtype=flux.dtype, has_mask=has_mask, wave=np.asarray(wave[()], dtype=np.float64),
            size_bytes=path.stat().st_size,
        )


def _check_arrays(path: Path, handle: h5py.File, keys: dict, flux, error, wave) -> None:
    """Check dtypes and shapes of flux, error, mask and wave against each other."""
    for role, dataset in (("flux", flux), ("error", error)):
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 2:
            raise ValueError(f"{path}: key {keys[role]} must be a 2-D dataset (n_spectra, n_pixels), "
                             f"found shape {getattr(dataset, 'shape', 'a group')}")
        if dataset.dtype.kind != "f":
            raise ValueError(f"{path}: key {keys[role]} has dtype {dataset.dtype}, expected float32 or float64")
    if error.shape != flux.shape:
        raise ValueError(f"{path}: key {keys['error']} has shape {error.shape} but {keys['flux']} has "
                         f"{flux.shape}; flux and error must match")
    if "mask" in keys:
        mask = handle[keys["mask"]]
        if mask.shape != flux.shape:
            raise ValueError(f"{path}: key {keys['mask']} has shape {mask.shape} but {keys['flux']} has "
                             f"{flux.shape}; mask must match flux")
        if mask.dtype.kind not in "iub":
            raise ValueError(f"{path}: key {keys['mask']} has dtype {mask.dtype}, expected an integer or bool "
                             "mask (non-zero = bad pixel)")
    if not isinstance(wave, h5py.Dataset) or wave.shape != (flux.shape[1],):
        raise ValueError(f"{path}: key {keys['wave']} has shape {getattr(wave, 'shape', 'a group')}, expected "
                         f"({flux.shape[1]},) to match the pixels of {keys['flux']}")
    if wave.dtype.kind not in "fiu":
        raise ValueError(f"{path}: key {keys['wave']} has dtype {wave.dtype}, expected a float wavelength")
