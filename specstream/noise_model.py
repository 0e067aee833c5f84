"""The PFS MR red-arm noise model: per-pixel 1-sigma error of a spectrum of given flux.

The model follows the PFS exposure-time calculator (ETC). For each pixel it needs the object signal that a
flat AB = 18 mag spectrum gives per exposure (`signal_18`, electrons) and the sky + detector variance per
exposure without the object (`variance`, e^2). A spectrum with flux F (FLUX_UNIT_CGS) gives
S = signal_18 * F / F_18 electrons per exposure, and after `n_exposures` exposures

    error = F * sqrt(variance + S) / (S * sqrt(n_exposures)).

With the ETC tables of the reference run (sky model 11005, seeing 0.8", zenith 45 deg, new moon, 900 s
exposures) and 12 exposures, a flat spectrum has a median S/N per pixel of about 11 at i = 20.5, 4.7 at 21.5
and 1.9 at 22.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specstream.grid import N_PIXELS, ab_mag_to_flux, mr_wave
from specstream.paths import pfs_etc_dir

RED_MR_ARM = 3  # arm number of the MR red arm in the ETC tables
DEFAULT_N_EXPOSURES = 12  # 12 x 900 s

# Built-in fallback, fitted by tools/fit_builtin_noise_model.py to the ETC tables of the reference run.
# Polynomials in x = (wave - 7975) / 875 (x in [-1, 1] over the arm), highest power first.
SIGNAL_18_LOG10_POLY = (
    -0.023971, -0.399222, 0.133872, 0.624104, -0.190522, -0.270253, 0.03477, 2.748297
)
BASELINE_VAR_LOG10_POLY = (
    0.457181, -0.61601, -0.955599, 0.855532, 0.583352, -0.312348, -0.059254, 2.304323
)
# The brightest OH sky lines: (vacuum wavelength in Angstrom, peak excess variance in e^2 per exposure).
SKY_LINES = (
    (7242.49, 2409.5),
    (7247.19, 3646.5),
    (7278.80, 7786.7),
    (7318.54, 6649.6),
    (7343.32, 8447.9),
    (7371.52, 6837.0),
    (7403.99, 2681.3),
    (7526.18, 3962.2),
    (7574.03, 2525.9),
    (7714.59, 7037.5),
    (7719.29, 5772.2),
    (7753.05, 15826.3),
    (7762.44, 4327.1),
    (7796.62, 11825.0),
    (7810.72, 2902.8),
    (7823.97, 18715.9),
    (7843.62, 2638.4),
    (7855.59, 17131.2),
    (7863.27, 3053.6),
    (7873.10, 4250.7),
    (7916.25, 23847.8),
    (7923.52, 6463.1),
    (7933.77, 3026.7),
    (7951.72, 2497.7),
    (7967.10, 18251.7),
    (7982.05, 3098.5),
    (7995.72, 20252.3),
    (8016.66, 2371.7),
    (8028.19, 11957.9),
    (8064.51, 3164.3),
    (8284.11, 5658.0),
    (8290.95, 9819.2),
    (8298.64, 2350.2),
    (8301.20, 12687.6),
    (8313.17, 2792.5),
    (8346.92, 69934.0),
    (8355.46, 11274.0),
    (8384.94, 6308.0),
    (8401.60, 191178.0),
    (8417.84, 8892.9),
    (8432.79, 176965.9),
    (8455.01, 6841.5),
    (8467.83, 35025.4),
    (8496.03, 4161.8),
    (8507.56, 8893.1),
    (8541.31, 8031.3),
    (8657.10, 2347.2),
    (8658.38, 3148.5),
    (8661.80, 2449.9),
    (8663.08, 3051.7),
    (8668.21, 3063.3),
    (8673.33, 2571.7),
    (8761.35, 3350.5),
    (8763.91, 21239.8),
    (8770.32, 25055.7),
    (8778.86, 7516.5),
    (8781.00, 29533.5),
    (8793.82, 6930.8),
    (8829.71, 161525.1),
    (8839.10, 29441.5),
)
SKY_LINE_FWHM_A = 1.6  # about lambda / R at R ~ 5000


@dataclass(frozen=True)
class NoiseModel:
    """Per-pixel ETC quantities on the MR grid and the number of exposures they are combined over."""

    wave: np.ndarray  # (n_pixels,) Angstrom
    signal_18: np.ndarray  # (n_pixels,) electrons per exposure for a flat AB = 18 spectrum
    variance: np.ndarray  # (n_pixels,) sky + detector variance per exposure, e^2
    n_exposures: int = DEFAULT_N_EXPOSURES
    source: str = "built-in"

    def __post_init__(self) -> None:
        if self.n_exposures < 1:
            raise ValueError(f"n_exposures must be >= 1, got {self.n_exposures}")

    @property
    def electrons_per_flux(self) -> np.ndarray:
        """Electrons per exposure per FLUX_UNIT_CGS of f_lambda, (n_pixels,)."""
        return self.signal_18 / ab_mag_to_flux(18.0, self.wave)

    def error(self, flux: np.ndarray) -> np.ndarray:
        """Return the 1-sigma error of `flux` (n, n_pixels) in FLUX_UNIT_CGS, float64.

        Negative flux counts as zero object signal, so the error never falls below the sky + detector floor.
        """
        gain = self.electrons_per_flux
        signal = np.clip(np.asarray(flux, dtype=np.float64), 0.0, None) * gain
        return np.sqrt(self.variance + signal) / (gain * np.sqrt(self.n_exposures))

    def flat_snr(self, mag: float) -> np.ndarray:
        """Return the per-pixel S/N of a spectrum flat in f_nu at AB magnitude `mag`, (n_pixels,)."""
        flux = ab_mag_to_flux(mag, self.wave)[None, :]
        return (flux / self.error(flux))[0]


def load_etc_tables(etc_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read wave (Angstrom), signal_18 and variance of the MR red arm from the ETC output files."""
    noise_path, snc_path = etc_dir / "noise_mr.dat", etc_dir / "snc_mr.dat"
    for path in (noise_path, snc_path):
        if not path.is_file():
            raise FileNotFoundError(f"ETC table not found: {path}")
    noise = np.loadtxt(noise_path)
    snc = np.loadtxt(snc_path)
    noise = noise[noise[:, 0] == RED_MR_ARM]
    snc = snc[snc[:, 0] == RED_MR_ARM]
    if len(noise) != N_PIXELS or len(snc) != N_PIXELS:
        raise ValueError(
            f"{etc_dir}: expected {N_PIXELS} rows for arm {RED_MR_ARM}, "
            f"found {len(noise)} in noise_mr.dat and {len(snc)} in snc_mr.dat"
        )
    wave = noise[:, 2] * 10.0  # nm -> Angstrom, pixel centre
    return wave, snc[:, 4], noise[:, 3]


def builtin_noise_model(n_exposures: int = DEFAULT_N_EXPOSURES) -> NoiseModel:
    """Return the smooth built-in approximation of the ETC tables, for use when they are absent."""
    wave = mr_wave()
    x = (wave - 7975.0) / 875.0
    signal_18 = 10 ** np.polyval(SIGNAL_18_LOG10_POLY, x)
    variance = 10 ** np.polyval(BASELINE_VAR_LOG10_POLY, x)
    sigma_a = SKY_LINE_FWHM_A / 2.3548
    for line_wave, peak in SKY_LINES:
        variance = variance + peak * np.exp(-0.5 * ((wave - line_wave) / sigma_a) ** 2)
    return NoiseModel(wave, signal_18, variance, n_exposures, source="built-in")


def load_noise_model(etc_dir: Path | None = None, n_exposures: int = DEFAULT_N_EXPOSURES) -> NoiseModel:
    """Return the ETC noise model from `etc_dir` (default: the reference data), else the built-in one."""
    etc_dir = etc_dir or pfs_etc_dir()
    if etc_dir is None:
        return builtin_noise_model(n_exposures)
    wave, signal_18, variance = load_etc_tables(Path(etc_dir))
    return NoiseModel(wave, signal_18, variance, n_exposures, source=f"PFS ETC tables in {etc_dir}")
