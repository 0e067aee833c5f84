"""The PFS medium-resolution (MR) red-arm pixel grid and flux-unit conversions."""

from __future__ import annotations

import numpy as np

N_PIXELS = 4096
WAVE_MIN_A = 7100.0  # Angstrom, vacuum, left edge of pixel 0
WAVE_MAX_A = 8850.0  # Angstrom, vacuum, right edge of the last pixel
PIXEL_STEP_A = (WAVE_MAX_A - WAVE_MIN_A) / N_PIXELS  # 0.42724609375 A

# Flux unit used by every file specstream writes: 1e-17 erg/s/cm^2/A. Spectra of i = 20-23 mag stars are then
# of order 0.1-1, which float16 shards store without underflow.
FLUX_UNIT_CGS = 1e-17
SPEED_OF_LIGHT_A_PER_S = 2.99792458e18
SPEED_OF_LIGHT_KM_PER_S = 299792.458


def mr_wave() -> np.ndarray:
    """Return the MR pixel-centre wavelengths, (4096,) float64, Angstrom in vacuum."""
    return WAVE_MIN_A + (np.arange(N_PIXELS) + 0.5) * PIXEL_STEP_A


def ab_mag_to_flux(mag: np.ndarray | float, wave_a: np.ndarray) -> np.ndarray:
    """Convert AB magnitudes to f_lambda in FLUX_UNIT_CGS for a spectrum flat in f_nu.

    Broadcasts `mag` (n, 1) against `wave_a` (n_pixels,) to (n, n_pixels).
    """
    f_nu = 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) + 48.6))  # erg/s/cm^2/Hz
    return f_nu * SPEED_OF_LIGHT_A_PER_S / np.asarray(wave_a, dtype=np.float64) ** 2 / FLUX_UNIT_CGS


def is_mr_grid(wave: np.ndarray, rtol: float = 1e-6) -> bool:
    """Return whether `wave` is the MR pixel grid to within `rtol`."""
    wave = np.asarray(wave)
    return wave.shape == (N_PIXELS,) and bool(np.allclose(wave, mr_wave(), rtol=rtol, atol=0.0))
