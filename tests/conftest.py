"""Shared fixtures: small survey files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from specstream.io import SURVEY_KEYS


def make_labels(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "T_eff": rng.uniform(3750, 6000, n), "log_g": rng.uniform(1, 5, n), "M_H": rng.uniform(-2.5, 0.5, n),
        "a_M": rng.uniform(-0.2, 0.6, n), "C_M": np.full(n, np.nan), "mag": rng.uniform(20.5, 22.5, n),
        "redshift": rng.normal(0, 1e-4, n), "snr": rng.uniform(2, 10, n),
    })


def make_arrays(n: int, n_pixels: int, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.5, 1.5, (n, n_pixels)).astype(dtype)
    error = rng.uniform(0.05, 0.2, (n, n_pixels)).astype(dtype)
    wave = 7100 + (np.arange(n_pixels) + 0.5) * 1750 / n_pixels
    return flux, error, wave


def write_survey_file(path: Path, flux, error, wave, labels: pd.DataFrame, mask=None) -> Path:
    """Write the survey layout the way the survey's simulator does: h5py arrays, pandas table labels."""
    with h5py.File(path, "w") as handle:
        handle[SURVEY_KEYS["flux"]] = flux
        handle[SURVEY_KEYS["error"]] = error
        if mask is not None:
            handle[SURVEY_KEYS["mask"]] = mask
        handle[SURVEY_KEYS["wave"]] = wave
    labels.to_hdf(path, key=SURVEY_KEYS["labels"], format="table", mode="a")
    return path


@pytest.fixture
def survey_file(tmp_path):
    """Factory for a small survey-layout file; keyword arguments override the arrays."""

    def factory(n=40, n_pixels=64, seed=0, name="survey.h5", **overrides):
        flux, error, wave = make_arrays(n, n_pixels, seed)
        labels = make_labels(n, seed)
        values = {"flux": flux, "error": error, "wave": wave, "labels": labels, "mask": None, **overrides}
        return write_survey_file(tmp_path / name, values["flux"], values["error"], values["wave"],
                                 values["labels"], values["mask"])

    return factory
