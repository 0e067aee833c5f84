"""Stand-in training data: label-dependent toy spectra on the MR grid with PFS noise-model errors.

The spectra come from `specstream.stand_in_model` (a documented toy model, not stellar atmospheres). Flux is
noise-free, in FLUX_UNIT_CGS, scaled to each star's magnitude; the error is the PFS MR noise model for
12 x 900 s exposures. Noise is drawn later, at load time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from specstream.grid import SPEED_OF_LIGHT_KM_PER_S, ab_mag_to_flux, mr_wave
from specstream.io import SurveyWriter
from specstream.noise_model import NoiseModel, load_noise_model
from specstream import stand_in_model as model

logger = logging.getLogger(__name__)

# Label ranges of the workhorse training set: cool stars, uniform in each label.
LABEL_RANGES = {
    "T_eff": (3750.0, 6000.0),  # K
    "log_g": (1.0, 5.0),  # dex, cgs
    "M_H": (-2.5, 0.5),  # dex
    "a_M": (-0.2, 0.6),  # dex
    "C_M": (-0.5, 0.5),  # dex
    "mag": (20.5, 22.5),  # HSC i, AB
}
VELOCITY_RANGE_KM_S = (-300.0, 300.0)  # radial velocity, stored as redshift = v / c
CALIBRATION_SIGMA = 0.03  # rms of the random linear and quadratic flux-calibration terms
NORMALISATION_WINDOW_A = (7600.0, 8000.0)  # where the flux is scaled to the star's magnitude
DEFAULT_CHUNK_SIZE = 2048


def generate_labels(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw labels for `n` stars and a (n, 2) array of nuisance calibration terms."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    labels = {name: rng.uniform(lo, hi, n) for name, (lo, hi) in LABEL_RANGES.items()}
    labels["redshift"] = rng.uniform(*VELOCITY_RANGE_KM_S, n) / SPEED_OF_LIGHT_KM_PER_S
    calibration = rng.normal(0.0, CALIBRATION_SIGMA, (n, 2))
    frame = pd.DataFrame(labels)
    frame["snr"] = np.nan  # filled once the errors are known
    return frame, calibration


class StandInGenerator:
    """Compute noise-free flux and error for blocks of labels; profiles are tabulated once."""

    def __init__(self, noise_model: NoiseModel | None = None):
        self.wave = mr_wave()
        self.noise_model = noise_model or load_noise_model()
        self.rest = model.rest_grid(self.wave)
        self.names, self.profiles = model.build_profiles(self.rest)
        lo, hi = NORMALISATION_WINDOW_A
        self.norm_pixels = (self.wave >= lo) & (self.wave <= hi)
        self.x = ((self.wave - self.wave.mean()) / (self.wave[-1] - self.wave.mean())).astype(np.float32)

    def spectra(self, labels: pd.DataFrame, calibration: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return flux, error (n, 4096) float64 in FLUX_UNIT_CGS and the median S/N per spectrum (n,)."""
        teff = labels["T_eff"].to_numpy()
        strengths = model.component_strengths(
            self.names, teff, labels["log_g"].to_numpy(), labels["M_H"].to_numpy(),
            labels["a_M"].to_numpy(), labels["C_M"].to_numpy(),
        )
        # A BLAS matrix product may sum in another order for another number of rows and change the last bit
        # of some values. Adding the components one by one keeps each spectrum independent of the chunk size.
        tau_rest = np.zeros((len(teff), self.profiles.shape[1]))  # (n, n_rest)
        for component in range(len(self.names)):
            tau_rest += strengths[:, component, None] * self.profiles[component]
        one_plus_z = 1.0 + labels["redshift"].to_numpy()[:, None]
        rest_wave = self.wave[None, :] / one_plus_z  # (n, 4096)
        position = (rest_wave - self.rest[0]) / (self.rest[1] - self.rest[0])
        left = np.clip(position.astype(np.int64), 0, len(self.rest) - 2)
        frac = (position - left).astype(np.float32)
        tau = np.take_along_axis(tau_rest, left, 1) * (1 - frac) + np.take_along_axis(tau_rest, left + 1, 1) * frac

        shape = model.planck_shape(rest_wave, teff) * np.exp(-tau)
        shape *= 1.0 + calibration[:, :1] * self.x + calibration[:, 1:] * (self.x ** 2 - 1.0 / 3.0)
        target = ab_mag_to_flux(labels["mag"].to_numpy()[:, None], self.wave[self.norm_pixels]).mean(axis=1)
        flux = shape * (target / shape[:, self.norm_pixels].mean(axis=1))[:, None]
        error = self.noise_model.error(flux)
        snr = np.median(flux / error, axis=1)
        return flux, error, snr


def generate_arrays(n: int, seed: int, noise_model: NoiseModel | None = None,
                    dtype: str = "float32") -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Return flux, error (n, 4096) and labels in memory; the same values `write_synth` stores."""
    labels, calibration = generate_labels(n, seed)
    generator = StandInGenerator(noise_model)
    flux = np.empty((n, len(generator.wave)), dtype=dtype)
    error = np.empty_like(flux)
    for start in range(0, n, DEFAULT_CHUNK_SIZE):
        stop = min(start + DEFAULT_CHUNK_SIZE, n)
        flux[start:stop], error[start:stop], snr = generator.spectra(labels.iloc[start:stop], calibration[start:stop])
        labels.loc[start:stop - 1, "snr"] = snr
    return flux, error, labels


def write_synth(path: str | Path, n: int, seed: int, dtype: str = "float32", chunk_size: int = DEFAULT_CHUNK_SIZE,
                noise_model: NoiseModel | None = None, progress: Callable[[int], None] | None = None,
                layout: str = "survey") -> Path:
    """Write `n` stand-in spectra to `path`, chunk by chunk, in bounded memory.

    `layout` is "survey" (the simulator's layout, labels as a pandas table) or "flat" (needs no PyTables).
    `progress`, when given, is called with the number of spectra written after each chunk.
    """
    labels, calibration = generate_labels(n, seed)
    generator = StandInGenerator(noise_model)
    logger.info("writing %d stand-in spectra to %s (seed %d, %s, noise model: %s)", n, path, seed, dtype,
                generator.noise_model.source)
    attrs = {"specstream_synth_seed": seed, "specstream_noise_model": generator.noise_model.source,
             "specstream_flux_unit": "1e-17 erg/s/cm^2/A"}
    with SurveyWriter(path, n, generator.wave, dtype=dtype, attrs=attrs, layout=layout) as writer:
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            block = labels.iloc[start:stop].copy()
            flux, error, block["snr"] = generator.spectra(block, calibration[start:stop])
            writer.write(start, flux.astype(dtype), error.astype(dtype), block)
            if progress is not None:
                progress(stop - start)
    return Path(path)
