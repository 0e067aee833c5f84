"""A physical toy model of cool-star spectra in the PFS MR window (7100-8850 A), for stand-in data.

This is a stand-in, not a stellar atmosphere: it reproduces which features of this window respond to which
label, with plausible strengths, so that networks and baselines face a problem shaped like the survey's.
The spectrum of a star is

    flux(lambda) = B_lambda(T_eff) * exp(-tau(lambda / (1 + z))) * calibration(lambda) * scale

with tau a sum of fixed absorption profiles (Gaussian cores at R ~ 5000, Lorentzian damping wings,
molecular bands that degrade to the red) whose strengths depend on the labels:
- Ca II triplet 8498/8542/8662 A: cores grow with [M/H] and toward low log g; damping wings grow with log g.
- Na I 8183/8195 A, K I 7665/7699 A, Mg I 8807 A: gravity-sensitive, strongest in cool dwarfs.
- Fe I, Si I, Ca I, Ti I lines and a fixed random set of weak metal lines: [M/H], [alpha/M], T_eff.
- Ionised lines: stronger at low log g.
- TiO bands (7054, 7589, 7666, 8432-8452 A) below about 4200 K; CN bands (7875, 8125, 8320 A) grow with
  [M/H] + [C/M] and toward low log g.
- Paschen lines: only toward the hot end of the range.
Line positions are laboratory air wavelengths converted to vacuum. Strengths are tuned by hand so that Ridge
regression of log_g on noisy spectra lands in the survey's difficulty range (see tests/test_synth.py).
"""

from __future__ import annotations

import numpy as np

from specstream.grid import PIXEL_STEP_A, SPEED_OF_LIGHT_KM_PER_S

RESOLVING_POWER = 5000.0
REST_MARGIN_A = 12.0  # covers |v| <= 300 km/s at the red edge (8.9 A) plus a line half-width


def air_to_vacuum(wave_air_a: np.ndarray) -> np.ndarray:
    """Convert air to vacuum wavelengths, Angstrom (Morton 2000 refractive index, valid above 2000 A)."""
    wave_air_a = np.asarray(wave_air_a, dtype=np.float64)
    s2 = (1e4 / wave_air_a) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s2) + 1.5998e-4 / (38.9 - s2)
    return wave_air_a * n


# Air wavelengths (A) of the features, grouped by how their strength depends on the labels.
CA_TRIPLET = (8498.02, 8542.09, 8662.14)
NA_DOUBLET = (8183.26, 8194.82)
K_DOUBLET = (7664.90, 7698.97)
MG_LINES = (8806.76, 8736.02, 8717.83)
FE_LINES = (7495.07, 7511.02, 7568.90, 7583.79, 7748.27, 7780.56, 7832.20, 7937.13, 7945.85, 7998.94,
            8046.05, 8085.17, 8327.05, 8387.77, 8468.41, 8514.07, 8582.26, 8611.80, 8621.60, 8674.75,
            8688.62, 8757.19, 8763.97, 8793.34, 8824.22, 8838.43)
ALPHA_LINES = (7405.77, 7415.95, 7423.50, 7944.00, 8728.01, 8752.01, 7148.15, 7326.15, 8093.23, 8742.45)
TI_LINES = (7344.70, 7357.73, 7364.11, 8377.86, 8382.53, 8412.36, 8426.50, 8434.96, 8435.65, 8518.35)
IONISED_LINES = (7222.39, 7224.49, 7449.33, 7462.41, 7515.83, 7711.72, 7841.39, 8287.88)
PASCHEN_LINES = (8467.26, 8502.49, 8545.38, 8598.39, 8665.02, 8750.47, 8862.78)
TIO_BANDHEADS = (7053.0, 7087.0, 7125.0, 7589.0, 7666.0, 8432.0, 8442.0, 8452.0, 8859.0)
CN_BANDHEADS = (7875.0, 8125.0, 8320.0)

N_RANDOM_LINES = 240  # weak metal lines at fixed random positions, in four excitation groups
RANDOM_LINE_SEED = 20240517


def rest_grid(obs_wave: np.ndarray) -> np.ndarray:
    """Return the rest-frame grid on which profiles are tabulated: the pixel step, with margins."""
    lo, hi = obs_wave[0] - REST_MARGIN_A, obs_wave[-1] + REST_MARGIN_A
    return np.arange(lo, hi + PIXEL_STEP_A, PIXEL_STEP_A)


def _gauss(grid, centres, sigma):
    out = np.zeros_like(grid)
    for c in air_to_vacuum(np.asarray(centres)):
        out += np.exp(-0.5 * ((grid - c) / sigma) ** 2)
    return out


def _lorentz(grid, centres, hwhm):
    out = np.zeros_like(grid)
    for c in air_to_vacuum(np.asarray(centres)):
        out += 1.0 / (1.0 + ((grid - c) / hwhm) ** 2)
    return out


def _band(grid, heads, scale_a):
    """Molecular bands: a sharp head degrading to the red over `scale_a` Angstrom."""
    out = np.zeros_like(grid)
    for head in air_to_vacuum(np.asarray(heads)):
        x = grid - head
        out += np.where(x >= 0, np.exp(-x / scale_a), 0.0) * (1 - np.exp(-np.clip(x, 0, None) / 1.5))
    return out


def build_profiles(grid: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Return component names and their optical-depth profiles, (n_components, len(grid)) float32."""
    sigma = 8000.0 / RESOLVING_POWER / 2.3548  # instrumental Gaussian sigma, A
    rng = np.random.default_rng(RANDOM_LINE_SEED)
    lo, hi = grid[0] + 5, grid[-1] - 5
    random_lines = [rng.uniform(lo, hi, N_RANDOM_LINES // 4) / 1.000274 for _ in range(4)]
    components = {
        "cat_core": _gauss(grid, CA_TRIPLET, 1.4 * sigma),
        "cat_wing": _lorentz(grid, CA_TRIPLET, 4.0),
        "na": _gauss(grid, NA_DOUBLET, 1.2 * sigma) + 0.3 * _lorentz(grid, NA_DOUBLET, 1.5),
        "k": _gauss(grid, K_DOUBLET, 1.2 * sigma) + 0.3 * _lorentz(grid, K_DOUBLET, 1.5),
        "mg": _gauss(grid, MG_LINES[:1], 1.2 * sigma) + 0.4 * _lorentz(grid, MG_LINES[:1], 2.0)
        + 0.4 * _gauss(grid, MG_LINES[1:], sigma),
        "fe": _gauss(grid, FE_LINES, sigma),
        "alpha": _gauss(grid, ALPHA_LINES, sigma),
        "ti": _gauss(grid, TI_LINES, sigma),
        "ionised": _gauss(grid, IONISED_LINES, sigma),
        "paschen": _gauss(grid, PASCHEN_LINES, 2.5 * sigma) + 0.3 * _lorentz(grid, PASCHEN_LINES, 3.0),
        "tio": _band(grid, TIO_BANDHEADS, 60.0),
        "cn": _band(grid, CN_BANDHEADS, 40.0),
    }
    for i, lines in enumerate(random_lines):
        components[f"weak_{i}"] = _gauss(grid, lines, sigma)
    names = list(components)
    return names, np.stack([components[n] for n in names]).astype(np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def component_strengths(names: list[str], teff: np.ndarray, logg: np.ndarray, m_h: np.ndarray,
                        a_m: np.ndarray, c_m: np.ndarray) -> np.ndarray:
    """Return the optical-depth scale of each component for each star, (n, n_components) float32."""
    t = (teff - 4875.0) / 1125.0  # -1 .. 1 over 3750-6000 K
    g = (logg - 3.0) / 2.0  # -1 .. 1 over log g 1-5
    metal = 10.0 ** (0.5 * m_h)
    alpha = 10.0 ** (0.5 * (m_h + a_m))
    cool = _sigmoid((4200.0 - teff) / 120.0)
    strengths = {
        "cat_core": 1.1 * 10.0 ** (0.3 * m_h) * (1.0 - 0.35 * g) * (1.0 - 0.15 * t),
        "cat_wing": 0.25 * 10.0 ** (0.3 * m_h) * (1.0 + 0.8 * g),
        "na": 0.5 * 10.0 ** (0.3 * m_h) * (1.0 + 0.9 * g) * (1.0 - 0.4 * t),
        "k": 0.4 * 10.0 ** (0.3 * m_h) * (1.0 + 0.8 * g) * (1.0 - 0.5 * t),
        "mg": 0.5 * alpha * (1.0 + 0.6 * g),
        "fe": 0.35 * metal * (1.0 - 0.35 * t),
        "alpha": 0.3 * alpha * (1.0 - 0.2 * t),
        "ti": 0.45 * alpha * (0.3 + 1.5 * cool) * (1.0 - 0.2 * g),
        "ionised": 0.3 * metal * (1.0 - 0.7 * g) * (1.0 + 0.3 * t),
        "paschen": 0.25 * _sigmoid((teff - 5900.0) / 150.0) * (1.0 - 0.2 * g),
        "tio": 0.6 * cool * 10.0 ** (0.2 * m_h) * (1.0 - 0.1 * g),
        "cn": 0.06 * 10.0 ** (0.5 * (m_h + c_m)) * (1.0 - 0.4 * g) * (1.0 - 0.3 * t),
        "weak_0": 0.25 * metal * (1.0 - 0.5 * t),
        "weak_1": 0.2 * metal * (1.0 + 0.1 * t),
        "weak_2": 0.15 * alpha * (1.0 - 0.2 * g),
        "weak_3": 0.15 * metal * (1.0 + 0.1 * g) * (1.0 - 0.3 * t),
    }
    return np.stack([strengths[n] for n in names], axis=1).astype(np.float32)


def planck_shape(wave_a: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Return B_lambda(T) / B_lambda(T) at 8000 A for rest wavelengths (n, n_pixels) and T_eff (n,)."""
    c2 = 1.438777e8  # second radiation constant h c / k, A K
    t = teff[:, None]
    ref = (8000.0 ** -5) / np.expm1(c2 / (8000.0 * t))
    return (wave_a ** -5) / np.expm1(c2 / (wave_a * t)) / ref


def doppler_factor(velocity_km_s: np.ndarray) -> np.ndarray:
    """Return 1 + z for radial velocities in km/s (non-relativistic, |v| << c)."""
    return 1.0 + np.asarray(velocity_km_s) / SPEED_OF_LIGHT_KM_PER_S
