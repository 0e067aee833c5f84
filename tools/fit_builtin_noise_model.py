"""Fit the built-in PFS MR noise model from the exposure-time-calculator tables.

Prints the constants used by `specstream.noise_model.builtin_noise_model`: polynomial coefficients of
log10(signal at AB = 18) and of log10(sky + detector variance) outside sky lines, and the brightest OH sky
lines as (wavelength in Angstrom, peak excess variance). Run once when the tables change:

    python tools/fit_builtin_noise_model.py
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter, minimum_filter1d

from specstream.noise_model import load_etc_tables
from specstream.paths import pfs_etc_dir

N_SKY_LINES = 60
POLY_DEGREE = 7


def main() -> None:
    etc_dir = pfs_etc_dir()
    if etc_dir is None:
        raise SystemExit("PFS ETC tables not found; set SPECSTREAM_DATA to the reference-data folder")
    wave, signal_18, variance = load_etc_tables(etc_dir)
    x = (wave - 7975.0) / 875.0  # the same scaling as builtin_noise_model

    signal_coef = np.polyfit(x, np.log10(signal_18), POLY_DEGREE)
    baseline = median_filter(minimum_filter1d(variance, 15), 61)
    baseline_coef = np.polyfit(x, np.log10(baseline), POLY_DEGREE)

    excess = variance - 10 ** np.polyval(baseline_coef, x)
    peaks = [i for i in range(1, len(x) - 1) if excess[i] >= excess[i - 1] and excess[i] > excess[i + 1]]
    peaks = sorted(peaks, key=lambda i: -excess[i])[:N_SKY_LINES]
    print("SIGNAL_18_LOG10_POLY =", np.array2string(signal_coef, precision=6, separator=", "))
    print("BASELINE_VAR_LOG10_POLY =", np.array2string(baseline_coef, precision=6, separator=", "))
    print("SKY_LINES = (")
    for i in sorted(peaks):
        print(f"    ({wave[i]:.2f}, {excess[i]:.1f}),")
    print(")")


if __name__ == "__main__":
    main()
