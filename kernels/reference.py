"""NumPy reference of make_inputs and draw_normals: same draws and same float32 operations, to the bit.

Written as whole-array NumPy with no Numba, so that tests compare the kernels against an independent
implementation of the same definition. It is slow (about 20x slower than the kernels) and meant for tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .arguments import (NOISE_FREE, STANDARDIZED, WHITENING, WHITENING_ERROR_FLOOR, check_epoch, check_seed,
                        prepare_call)
from .box_muller import box_muller_numpy
from .threefry import NOISE_STREAM, epoch_key, spectrum_keys_numpy, threefry2x32_numpy


def _normals(sample_ids: np.ndarray, epoch_k0, epoch_k1, n_pixels: int) -> np.ndarray:
    """Return (batch, n_pixels) float32 normals. Pair j feeds pixels j and j + n_pairs."""
    key0, key1 = spectrum_keys_numpy(sample_ids, epoch_k0, epoch_k1)
    n_pairs = (n_pixels + 1) // 2
    pair = np.arange(n_pairs, dtype=np.uint32)[None, :]
    x0, x1 = threefry2x32_numpy(pair, np.uint32(NOISE_STREAM), key0[:, None], key1[:, None])
    z0, z1 = box_muller_numpy(x0, x1)
    return np.concatenate([z0, z1], axis=1)[:, :n_pixels]


def _good_pixels(flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        good = np.isfinite(flux) & np.isfinite(error) & (error > 0)
    if mask is not None:
        good &= mask == 0
    return good


def _error_floor(error: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Return WHITENING_ERROR_FLOOR * approximate geometric mean of each row's good errors, (batch, 1)."""
    bits = np.where(good, error.view(np.uint32), np.uint32(0)).astype(np.int64)
    count = good.sum(axis=1)
    mean_bits = bits.sum(axis=1) // np.maximum(count, 1)
    floor = np.float32(WHITENING_ERROR_FLOOR) * mean_bits.astype(np.uint32).view(np.float32)
    return np.where(count > 0, floor, np.float32(0.0))[:, None]


def make_inputs_reference(flux, error, *, mode: str, noise_level: float = 1.0, seed: int, epoch: int,
                          sample_ids, stats: Mapping | None = None, mask=None,
                          out: np.ndarray | None = None) -> np.ndarray:
    """Compute what `make_inputs` computes, with NumPy only: same arguments, same result to the bit."""
    call = prepare_call(flux, error, mode=mode, noise_level=noise_level, seed=seed, epoch=epoch,
                        sample_ids=sample_ids, stats=stats, mask=mask, out=out)
    flux32 = call.flux.astype(np.float32)
    error32 = call.error.astype(np.float32)
    good = _good_pixels(flux32, error32, call.mask)

    with np.errstate(all="ignore"):  # bad pixels may overflow or divide by zero; they are zeroed below
        if call.mode_code == NOISE_FREE:
            value = flux32
        else:
            normals = _normals(call.sample_ids, call.epoch_k0, call.epoch_k1, flux32.shape[1])
            level = call.noise_level
            noisy = flux32 + (level * error32) * normals
            if call.mode_code == WHITENING:
                good &= error32 >= _error_floor(error32, good)
                value = noisy / (level * error32)
            elif call.mode_code == STANDARDIZED:
                value = (noisy - call.flux_mean) * call.inv_sigma
            else:
                value = noisy
        value = np.where(good & ~np.isnan(value), value, np.float32(0.0))
        np.clip(value, -call.clip, call.clip, out=call.out)
    return call.out


def draw_normals_reference(seed: int, epoch: int, sample_ids, n_pixels: int) -> np.ndarray:
    """Return the standard normals that `draw_normals` returns, with NumPy only."""
    epoch_k0, epoch_k1 = epoch_key(check_seed(seed), check_epoch(epoch))
    ids = np.asarray(sample_ids).astype(np.int64, copy=False)
    return _normals(ids, epoch_k0, epoch_k1, int(n_pixels))
