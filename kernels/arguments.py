"""Input modes, safety constants and the argument checks shared by the Numba, NumPy and torch paths.

What "safe" means, for every mode:
- A pixel is bad when its mask is non-zero, its flux is not finite, or its error is not finite or <= 0.
  Bad pixels come out as exactly 0 in every mode, and they never affect other pixels.
- whitening: noisy flux / (noise_level * error). A pixel whose error is below WHITENING_ERROR_FLOOR times G,
  an approximate geometric mean of the spectrum's good errors, is bad as well: its whitened value would
  measure the defect in the error, not the star. In 2000 stand-in spectra (PFS ETC noise model,
  i = 20.5-22.5, 12 x 900 s) no error falls below 0.62 G and sky lines raise errors to about 21 G, so the
  floor 0.1 G leaves real errors alone and catches only near-zero errors. Zeroing such pixels works better
  than raising their error to the floor, which leaves them as outliers of about ten times the spectrum's
  S/N. In benchmarks/bench_whitening_accuracy.py (an MLP trained on 10000 stand-in spectra with 0.2 % of
  the errors scaled by 1e-6), test R^2 of log_g was 0.40 with zeroing, 0.22 with raising and -0.61 with
  the naive formula, against 0.40 for flux_only. Values are clipped to +-WHITENING_CLIP.
- standardized: (noisy flux - flux_mean) / sigma per pixel. Sigma is the standard deviation of the noisy flux
  over the training split, sqrt(flux_std**2 + noise_level**2 * (error_mean**2 + error_std**2)), floored at
  STANDARDIZED_STD_FLOOR times its median over pixels. Values are clipped to +-STANDARDIZED_CLIP.
  flux_mean and flux_std describe the stored noise-free flux, error_mean and error_std the stored error.
- flux_only: the noisy flux, clipped to the finite float32 range.
- noise_free: the flux itself, with the same bad-pixel rule (no draw, noise_level is ignored).
Non-finite input therefore never gives non-finite output.

G is computed from the float32 bit patterns. For a positive float32 x, bits(x) / 2**23 - 127 is a
piecewise-linear approximation of log2(x), exact at powers of two and at most 0.086 below. So the integer
mean of bits(error) over good pixels, read back as a float32, lies between 0.94 and 1.07 times the
geometric mean. Integer sums are exact and independent of
summation order, so the Numba, NumPy and torch paths compute the same floor to the bit.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .threefry import epoch_key

INPUT_MODES = ("flux_only", "whitening", "standardized", "noise_free")
FLUX_ONLY, WHITENING, STANDARDIZED, NOISE_FREE = range(4)  # mode codes passed to the Numba kernels

# Epoch value for validation and test draws: taken as uint64 it is 2**64 - 1, a counter no training epoch reaches.
FIXED_EPOCH = -1

WHITENING_ERROR_FLOOR = 0.1  # whitening treats errors below this fraction of the geometric mean as bad
WHITENING_CLIP = 1000.0  # whitened values are clipped to +-this
STANDARDIZED_STD_FLOOR = 1e-3  # fraction of the median per-pixel sigma
STANDARDIZED_CLIP = 1000.0  # standardized values are clipped to +-this
FLUX_CLIP = float(np.finfo(np.float32).max)  # flux_only output: turns overflow into the largest float32

STATS_KEYS = ("flux_mean", "flux_std", "error_mean", "error_std")
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
MAX_EPOCH = 2**63 - 1


def validate_mode(mode: str) -> str:
    """Return `mode` if it is one of INPUT_MODES, or raise ValueError."""
    if not isinstance(mode, str) or mode not in INPUT_MODES:
        raise ValueError(f"invalid input mode {mode!r}; expected one of {', '.join(INPUT_MODES)}")
    return mode


def mode_code(mode: str) -> int:
    """Return the kernel code (FLUX_ONLY, WHITENING, ...) of an input mode name."""
    return INPUT_MODES.index(validate_mode(mode))


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_seed(seed) -> int:
    """Return `seed` as a Python int in [0, 2**64), or raise ValueError."""
    if not _is_integer(seed) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"invalid seed {seed!r}; expected an integer in [0, 2**64)")
    return int(seed)


def check_epoch(epoch) -> int:
    """Return `epoch` as a Python int: >= 0 for training draws or FIXED_EPOCH, or raise ValueError."""
    if not _is_integer(epoch) or not (epoch == FIXED_EPOCH or 0 <= int(epoch) <= MAX_EPOCH):
        raise ValueError(
            f"invalid epoch {epoch!r}; expected an integer >= 0 for training draws, "
            f"or FIXED_EPOCH ({FIXED_EPOCH}) for the fixed validation/test draws"
        )
    return int(epoch)


def check_noise_level(noise_level, mode_code: int) -> np.float32:
    """Return noise_level as float32. It must be finite and >= 0, and > 0 for whitening."""
    try:
        value = float(noise_level)
    except (TypeError, ValueError):
        raise ValueError(f"invalid noise_level {noise_level!r}; expected a finite number >= 0") from None
    if not np.isfinite(value) or value < 0 or not np.isfinite(np.float32(value)):
        raise ValueError(f"invalid noise_level {noise_level!r}; expected a finite number >= 0")
    if mode_code == WHITENING and np.float32(value) == 0:
        raise ValueError(
            "noise_level must be > 0 for mode 'whitening', which divides by noise_level * error; "
            "use mode 'noise_free' or 'flux_only' with noise_level=0 for noise-free input"
        )
    return np.float32(value)


def check_shapes(flux_shape, error_shape, mask_shape, ids_shape) -> tuple[int, int]:
    """Return (batch, n_pixels) after checking that the shapes agree, or raise ValueError."""
    flux_shape, error_shape = tuple(flux_shape), tuple(error_shape)
    if len(flux_shape) != 2 or flux_shape[1] < 1:
        raise ValueError(f"flux has shape {flux_shape}; expected (batch, n_pixels) with n_pixels >= 1")
    if error_shape != flux_shape:
        raise ValueError(f"error has shape {error_shape}; expected the shape of flux, {flux_shape}")
    if mask_shape is not None and tuple(mask_shape) != flux_shape:
        raise ValueError(f"mask has shape {tuple(mask_shape)}; expected the shape of flux, {flux_shape}")
    if tuple(ids_shape) != flux_shape[:1]:
        raise ValueError(
            f"sample_ids has shape {tuple(ids_shape)}; expected ({flux_shape[0]},), one id per spectrum"
        )
    return flux_shape[0], flux_shape[1]


def check_dtypes(flux_dtype, error_dtype, mask_dtype, ids_dtype) -> None:
    """Raise ValueError unless flux/error are float16/32/64, mask is bool or integer, sample ids are integer."""
    for name, dtype in (("flux", flux_dtype), ("error", error_dtype)):
        if np.dtype(dtype) not in FLOAT_DTYPES:
            raise ValueError(f"{name} has dtype {np.dtype(dtype)}; expected float16, float32 or float64")
    if mask_dtype is not None and np.dtype(mask_dtype).kind not in "biu":
        raise ValueError(f"mask has dtype {np.dtype(mask_dtype)}; expected bool or an integer type (non-zero = bad)")
    if np.dtype(ids_dtype).kind not in "iu":
        raise ValueError(f"sample_ids has dtype {np.dtype(ids_dtype)}; expected an integer type (int64)")


def _stats_array(stats: Mapping, key: str, n_pixels: int) -> np.ndarray:
    if key not in stats:
        raise ValueError(
            f"stats is missing key {key!r}; expected the keys {', '.join(STATS_KEYS)} "
            "(the 'stats' of the shard manifest, computed on the training split)"
        )
    values = np.asarray(stats[key], dtype=np.float64)
    if values.shape != (n_pixels,):
        raise ValueError(f"stats[{key!r}] has shape {values.shape}; expected ({n_pixels},), one value per pixel")
    bad = np.flatnonzero(~np.isfinite(values) | ((values < 0) & (key != "flux_mean")))
    if bad.size:
        expected = "a finite number" if key == "flux_mean" else "a finite number >= 0"
        raise ValueError(
            f"stats[{key!r}] at pixel {bad[0]} is {values[bad[0]]}; expected {expected}. "
            "Recompute the statistics of the training split (they must skip bad pixels)"
        )
    return values


def standardization_arrays(stats, n_pixels: int, noise_level: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Return (flux_mean, 1 / sigma), both (n_pixels,) float32, for mode 'standardized'."""
    if stats is None or not isinstance(stats, Mapping):
        raise ValueError(
            f"mode 'standardized' needs stats, a mapping with the keys {', '.join(STATS_KEYS)}; "
            f"got {type(stats).__name__}. Pass the 'stats' of the shard manifest"
        )
    flux_mean, flux_std, error_mean, error_std = (_stats_array(stats, key, n_pixels) for key in STATS_KEYS)
    level = float(noise_level)
    sigma = np.sqrt(flux_std**2 + level**2 * (error_mean**2 + error_std**2))
    floor = STANDARDIZED_STD_FLOOR * float(np.median(sigma))
    if not floor > 0:
        raise ValueError(
            "stats give a zero standard deviation at more than half of the pixels "
            f"(median sigma {float(np.median(sigma))}); expected the statistics of a training split with "
            "varied spectra. Recompute the stats, or use mode 'flux_only'"
        )
    inv_sigma = 1.0 / np.maximum(sigma, floor)
    return flux_mean.astype(np.float32), inv_sigma.astype(np.float32)


def clip_limit(mode_code: int) -> np.float32:
    """Return the magnitude to which a mode's output is clipped."""
    limits = {FLUX_ONLY: FLUX_CLIP, WHITENING: WHITENING_CLIP, STANDARDIZED: STANDARDIZED_CLIP, NOISE_FREE: FLUX_CLIP}
    return np.float32(limits[mode_code])


def check_out(out, shape: tuple[int, int]):
    """Return `out`, or a new float32 array, after checking that it can receive a (batch, n_pixels) result."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        found = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}".strip()
        raise ValueError(f"out is {found}; expected a float32 numpy array of shape {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable; pass np.empty(shape, np.float32) or None")
    return out


def _mask_as_uint8(mask: np.ndarray) -> np.ndarray:
    """Return the mask as C-contiguous uint8 (non-zero = bad), so the kernels compile for one mask type only."""
    mask = np.ascontiguousarray(mask)
    if mask.dtype.itemsize == 1:
        return mask.view(np.uint8)  # bool, int8 and uint8: non-zero bytes stay non-zero
    return (mask != 0).view(np.uint8)


@dataclass(frozen=True)
class PreparedCall:
    """Checked arguments of one make_inputs call on NumPy arrays, in the form the kernels take."""

    mode_code: int
    flux: np.ndarray  # (batch, n_pixels) float16, float32 or float64, C-contiguous
    error: np.ndarray  # same shape, float16, float32 or float64
    mask: np.ndarray | None  # same shape, uint8, non-zero = bad pixel
    sample_ids: np.ndarray  # (batch,) int64
    noise_level: np.float32
    epoch_k0: np.uint32
    epoch_k1: np.uint32
    flux_mean: np.ndarray  # (n_pixels,) float32; zeros unless mode is standardized
    inv_sigma: np.ndarray  # (n_pixels,) float32; zeros unless mode is standardized
    clip: np.float32
    out: np.ndarray  # (batch, n_pixels) float32


def prepare_call(flux, error, *, mode, noise_level, seed, epoch, sample_ids, stats, mask, out) -> PreparedCall:
    """Check every argument of make_inputs for NumPy input, raising ValueError that names the first invalid one."""
    code = mode_code(mode)
    flux, error = np.asarray(flux), np.asarray(error)
    sample_ids = np.asarray(sample_ids)
    mask = None if mask is None else np.asarray(mask)
    check_dtypes(flux.dtype, error.dtype, None if mask is None else mask.dtype, sample_ids.dtype)
    batch, n_pixels = check_shapes(flux.shape, error.shape, None if mask is None else mask.shape, sample_ids.shape)
    level = check_noise_level(noise_level, code)
    epoch_k0, epoch_k1 = epoch_key(check_seed(seed), check_epoch(epoch))
    if code == STANDARDIZED:
        flux_mean, inv_sigma = standardization_arrays(stats, n_pixels, level)
    else:
        flux_mean = inv_sigma = np.zeros(n_pixels, dtype=np.float32)
    return PreparedCall(
        mode_code=code,
        flux=np.ascontiguousarray(flux),
        error=np.ascontiguousarray(error),
        mask=None if mask is None else _mask_as_uint8(mask),
        sample_ids=sample_ids.astype(np.int64, copy=False),
        noise_level=level,
        epoch_k0=epoch_k0,
        epoch_k1=epoch_k1,
        flux_mean=flux_mean,
        inv_sigma=inv_sigma,
        clip=clip_limit(code),
        out=check_out(out, (batch, n_pixels)),
    )
