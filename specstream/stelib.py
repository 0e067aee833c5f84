"""Convert the STELIB v3.2 observed spectra (Le Borgne et al. 2003, A&A 402, 433) to the survey layout.

Input is the curated `stelib_mr_window_1A.npz` of the reference data: 113 stars with T_eff, log g and [Fe/H]
and positive flux over 7100-8850 A, on a 1 A grid in air. Each spectrum is moved to the MR vacuum grid by
linear interpolation, scaled to an i-band-like magnitude, and given errors from the PFS noise model.
Pixels whose air wavelength falls outside the STELIB window are masked.

Limitation: STELIB's resolution (3.4 A FWHM, R ~ 2400) is about half the MR arm's, so its lines are broader
than PFS would record them. Interpolation cannot restore the missing resolution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from specstream.grid import ab_mag_to_flux, mr_wave
from specstream.io import SurveyWriter
from specstream.noise_model import NoiseModel, load_noise_model
from specstream.paths import stelib_dir
from specstream.stand_in_model import air_to_vacuum
from specstream.synth import LABEL_RANGES, NORMALISATION_WINDOW_A

logger = logging.getLogger(__name__)

STELIB_NPZ = "stelib_mr_window_1A.npz"
NPZ_KEYS = ("wave_air_A", "flux", "teff", "logg", "feh", "filename")


def load_stelib_window(path: Path | None = None) -> dict:
    """Read the STELIB MR-window file (no pickled objects allowed) and check its keys and shapes."""
    if path is None:
        folder = stelib_dir()
        if folder is None:
            raise FileNotFoundError("STELIB reference data not found; set SPECSTREAM_DATA to the folder that "
                                    f"contains stelib/{STELIB_NPZ} (or give `convert-stelib` the file with "
                                    "--source)")
        path = folder / STELIB_NPZ
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STELIB file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in NPZ_KEYS if key not in data.files]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}; found {data.files}")
        arrays = {key: data[key] for key in NPZ_KEYS}
    n_stars, n_wave = arrays["flux"].shape
    if arrays["wave_air_A"].shape != (n_wave,) or any(arrays[k].shape != (n_stars,) for k in NPZ_KEYS[2:]):
        raise ValueError(f"{path}: flux is {arrays['flux'].shape} but the wave or label arrays do not match it")
    arrays["path"] = path
    return arrays


def stelib_to_mr(arrays: dict, mags: np.ndarray, noise_model: NoiseModel) -> tuple:
    """Return flux, error (n, 4096) float64, mask (n, 4096) int8 and labels for the given magnitudes."""
    wave = mr_wave()
    wave_air = wave / (air_to_vacuum(wave) / wave)  # vacuum -> air, to the accuracy of the index formula
    src_wave = arrays["wave_air_A"]
    outside = (wave_air < src_wave[0]) | (wave_air > src_wave[-1])
    shape = np.stack([np.interp(wave_air, src_wave, row) for row in arrays["flux"].astype(np.float64)])

    lo, hi = NORMALISATION_WINDOW_A
    window = (wave >= lo) & (wave <= hi)
    target = ab_mag_to_flux(mags[:, None], wave[window]).mean(axis=1)
    flux = shape * (target / shape[:, window].mean(axis=1))[:, None]
    error = noise_model.error(flux)
    mask = np.broadcast_to(outside.astype(np.int8), flux.shape).copy()
    labels = pd.DataFrame({
        "T_eff": arrays["teff"], "log_g": arrays["logg"], "M_H": arrays["feh"],
        "a_M": np.nan, "C_M": np.nan, "mag": mags, "redshift": 0.0,
        "snr": np.median(flux[:, ~outside] / error[:, ~outside], axis=1),
    })
    return flux, error, mask, labels


def convert_stelib(out: str | Path, *, source: Path | None = None, seed: int = 0, mag: float | None = None,
                   teff_range: tuple[float, float] | None = None, n_exposures: int = 12,
                   dtype: str = "float32") -> tuple[Path, int]:
    """Write the STELIB stars to `out` in the survey layout; return the path and the number of stars.

    Magnitudes are drawn uniformly over the stand-in range with `seed`, or all set to `mag`.
    `teff_range` keeps only stars inside it (e.g. 3750-6000 K, the training set's range).
    """
    arrays = load_stelib_window(source)
    keep = np.ones(len(arrays["teff"]), dtype=bool)
    if teff_range is not None:
        keep = (arrays["teff"] >= teff_range[0]) & (arrays["teff"] <= teff_range[1])
        if not keep.any():
            raise ValueError(f"no STELIB star has T_eff in {teff_range}; the file covers "
                             f"{arrays['teff'].min():.0f}-{arrays['teff'].max():.0f} K")
    arrays = {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(keep)
                  and k != "wave_air_A" else v) for k, v in arrays.items()}
    n = int(keep.sum())
    rng = np.random.default_rng(seed)
    mags = np.full(n, float(mag)) if mag is not None else rng.uniform(*LABEL_RANGES["mag"], n)
    noise_model = load_noise_model(n_exposures=n_exposures)
    flux, error, mask, labels = stelib_to_mr(arrays, mags, noise_model)
    attrs = {"specstream_source": f"STELIB v3.2 via {arrays['path'].name}",
             "specstream_noise_model": noise_model.source, "specstream_flux_unit": "1e-17 erg/s/cm^2/A"}
    with SurveyWriter(out, n, mr_wave(), dtype=dtype, with_mask=True, attrs=attrs) as writer:
        writer.write(0, flux.astype(dtype), error.astype(dtype), labels, mask)
    logger.info("wrote %d STELIB spectra to %s (noise model: %s)", n, out, noise_model.source)
    return Path(out), n
