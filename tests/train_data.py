"""Tiny shard sets for the training and resident-loader tests, with a label the network can learn.

The spectra have few pixels so that an MLP trains in seconds on a CPU. log_g and T_eff change the depth
of two absorption features, so a model that learns reaches a clearly positive R^2, and one that does not
stays near 0.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from specstream.io import SURVEY_KEYS
from specstream.shards.build import ShardOptions, write_shards

N_PIXELS = 128


def learnable_survey(path: Path, n: int, *, seed: int = 0, with_mask: bool = False, n_pixels: int = N_PIXELS) -> Path:
    """Write a survey-layout file of `n` spectra of `n_pixels` pixels whose flux encodes log_g and T_eff."""
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({
        "T_eff": rng.uniform(3750, 6000, n), "log_g": rng.uniform(1, 5, n), "M_H": rng.uniform(-2.5, 0.5, n),
        "a_M": rng.uniform(-0.2, 0.6, n), "C_M": rng.uniform(-0.5, 0.5, n), "mag": rng.uniform(20.5, 22.5, n),
        "redshift": np.zeros(n), "snr": rng.uniform(2, 12, n),
    })
    pixels = np.arange(n_pixels)
    gravity_line = np.exp(-0.5 * ((pixels - 0.3125 * n_pixels) / 4.0) ** 2)
    temperature_line = np.exp(-0.5 * ((pixels - 0.703125 * n_pixels) / 6.0) ** 2)
    depth_g = 0.4 * (labels["log_g"].to_numpy() - 1) / 4
    depth_t = 0.3 * (labels["T_eff"].to_numpy() - 3750) / 2250
    flux = 1.0 - depth_g[:, None] * gravity_line - depth_t[:, None] * temperature_line
    error = np.full((n, n_pixels), 0.05) * rng.uniform(0.8, 1.2, (n, 1))
    wave = 7100 + (pixels + 0.5) * 1750 / n_pixels
    with h5py.File(path, "w") as handle:
        handle[SURVEY_KEYS["flux"]] = flux.astype(np.float32)
        handle[SURVEY_KEYS["error"]] = error.astype(np.float32)
        handle[SURVEY_KEYS["wave"]] = wave
        if with_mask:
            mask = np.zeros((n, n_pixels), dtype=np.int8)
            mask[rng.random((n, n_pixels)) < 0.02] = 1
            handle[SURVEY_KEYS["mask"]] = mask
    labels.to_hdf(path, key=SURVEY_KEYS["labels"], format="table", mode="a")
    return path


def learnable_shards(directory: Path, n: int = 600, *, n_val: int = 80, n_test: int = 80, dtype: str = "float32",
                     with_mask: bool = False, block_size: int = 16, n_pixels: int = N_PIXELS) -> Path:
    """Write a learnable survey file and its shards (several shards of several blocks) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    survey = learnable_survey(directory / "survey.h5", n, with_mask=with_mask, n_pixels=n_pixels)
    shards = directory / "shards"
    options = ShardOptions(test_size=n_test, val_size=n_val, block_size=block_size, shard_size_mb=0.05,
                           dtype=dtype, fsync=False)
    write_shards([survey], shards, options)
    return shards
