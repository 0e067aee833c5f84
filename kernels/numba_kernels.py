"""Numba kernels: one call processes a block of rows (spectra) on one thread.

The kernels are serial and release the GIL (`nogil=True`), and `kernels.threads` runs blocks of rows on a
thread pool. They do not use `parallel=True`, because Numba's threading layers fail where specstream runs
them (Numba 0.68). With the GNU OpenMP layer, a forked child such as a DataLoader worker aborts with
"fork() called from a process already using GNU OpenMP". The workqueue layer aborts when two Python threads
launch parallel kernels at once.

Row i of the input goes to row out_rows[i] of the output, so a caller can write a shuffled batch straight
from rows read in storage order.
Per row, `_fill_normals` fills a buffer with the row's draws and a second loop applies the mode's transform.
`_fill_normals` is a separate compiled function, not inlined, so that it compiles once for every input
dtype and mask type.
Pair j of the row's draws gives pixel j its first normal and pixel j + n_pairs its second, so both loops walk
memory contiguously and vectorize.

`cache=True` writes compiled code next to this file (or to NUMBA_CACHE_DIR); Numba writes each cache file
under a temporary name and renames it, so processes that compile at once do not corrupt each other.
NOTE: Numba checks only this file's timestamp to invalidate the cache. After editing threefry.py,
box_muller.py or _intrinsics.py, delete kernels/__pycache__/*.nbi and *.nbc.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._intrinsics import f32_from_bits, f32_from_f16_bits, f32_to_bits
from .arguments import STANDARDIZED, WHITENING
from .box_muller import box_muller
from .threefry import NOISE_STREAM, spectrum_key, threefry2x32

_INF = np.float32(np.inf)
_ZERO = np.float32(0.0)
_STREAM = np.uint32(NOISE_STREAM)


def as_f32(value):
    """Convert one array element to float32. float16 arrays arrive viewed as uint16."""
    raise NotImplementedError("as_f32 is only callable from Numba-compiled code")


@overload(as_f32, inline="always")
def _as_f32_overload(value):
    if value == types.uint16:
        return lambda value: f32_from_f16_bits(value)
    if isinstance(value, types.Float):
        return lambda value: np.float32(value)
    return None


@njit(inline="always")
def _is_good(f, e, bad):
    """Return whether a pixel is usable: mask zero, finite flux, finite error > 0."""
    return (not bad) & (np.abs(f) < _INF) & (e > _ZERO) & (e < _INF)


@njit(inline="always")
def _is_bad(mask, i, j):
    if mask is None:
        return False
    return mask[i, j] != 0


@njit(nogil=True, cache=True, error_model="numpy")
def _fill_normals(key0, key1, normals):
    """Fill `normals` (n_pixels,) float32 with the standard normals of the spectrum keyed (key0, key1)."""
    n_pixels = normals.shape[0]
    n_pairs = (n_pixels + 1) // 2
    for j in range(n_pixels // 2):
        x0, x1 = threefry2x32(np.uint32(j), _STREAM, key0, key1)
        z0, z1 = box_muller(x0, x1)
        # Unsigned indices skip Numba's negative-index wraparound, which stops this loop from vectorizing.
        normals[np.uint64(j)] = z0
        normals[np.uint64(j + n_pairs)] = z1
    if n_pixels % 2 == 1:  # the last pair gives its first normal only
        x0, x1 = threefry2x32(np.uint32(n_pairs - 1), _STREAM, key0, key1)
        z0, z1 = box_muller(x0, x1)
        normals[n_pairs - 1] = z0


@njit(inline="always", error_model="numpy")
def _error_floor(flux, error, mask, i, fraction):
    """Return fraction * (approximate geometric mean of row i's good errors), or 0 when no pixel is good."""
    total = np.int64(0)
    count = np.int64(0)
    for j in range(flux.shape[1]):
        f = as_f32(flux[i, j])
        e = as_f32(error[i, j])
        good = _is_good(f, e, _is_bad(mask, i, j))
        total += np.int64(f32_to_bits(e)) if good else np.int64(0)
        count += np.int64(1) if good else np.int64(0)
    if count == 0:
        return _ZERO
    return fraction * f32_from_bits(np.uint32(total // count))


@njit(nogil=True, cache=True, error_model="numpy")
def noisy_inputs_rows(flux, error, mask, sample_ids, epoch_k0, epoch_k1, mode, noise_level,
                      floor_fraction, flux_mean, inv_sigma, clip, out, out_rows):
    """Write the inputs of row i of `flux` to row out_rows[i] of `out` (n_out, n_pixels) float32.

    flux, error: (batch, n_pixels) float32 or float64, or float16 viewed as uint16.
    mask: (batch, n_pixels) uint8 (non-zero = bad pixel), or None.
    sample_ids: (batch,) int64.
    mode: FLUX_ONLY, WHITENING or STANDARDIZED.
    flux_mean, inv_sigma: (n_pixels,) float32, read in mode STANDARDIZED only.
    out_rows: (batch,) int64, each in [0, n_out); the caller checks the range (there is no bounds check here).
    """
    n_rows, n_pixels = flux.shape
    normals = np.empty(n_pixels, dtype=np.float32)
    for i in range(n_rows):
        row = out_rows[i]
        key0, key1 = spectrum_key(sample_ids[i], epoch_k0, epoch_k1)
        _fill_normals(key0, key1, normals)
        # Whitening treats errors below the floor as bad. The other modes use floor 0, which no good pixel fails.
        floor = _error_floor(flux, error, mask, i, floor_fraction) if mode == WHITENING else _ZERO
        for j in range(n_pixels):
            f = as_f32(flux[i, j])
            e = as_f32(error[i, j])
            good = _is_good(f, e, _is_bad(mask, i, j)) & (e >= floor)
            noisy = f + (noise_level * e) * normals[j]
            if mode == WHITENING:
                value = noisy / (noise_level * e)
            elif mode == STANDARDIZED:
                value = (noisy - flux_mean[j]) * inv_sigma[j]
            else:
                value = noisy
            value = value if good & (value == value) else _ZERO
            out[row, j] = min(max(value, -clip), clip)


@njit(nogil=True, cache=True, error_model="numpy")
def noise_free_rows(flux, error, mask, out, out_rows):
    """Write the flux of good pixels and 0 for bad ones of row i to row out_rows[i] of `out` (float32)."""
    n_rows, n_pixels = flux.shape
    for i in range(n_rows):
        row = out_rows[i]
        for j in range(n_pixels):
            f = as_f32(flux[i, j])
            e = as_f32(error[i, j])
            good = _is_good(f, e, _is_bad(mask, i, j))
            out[row, j] = f if good else _ZERO


@njit(nogil=True, cache=True, error_model="numpy")
def normals_rows(sample_ids, epoch_k0, epoch_k1, out):
    """Write the standard normals of each sample id to `out` (batch, n_pixels) float32."""
    for i in range(out.shape[0]):
        key0, key1 = spectrum_key(sample_ids[i], epoch_k0, epoch_k1)
        _fill_normals(key0, key1, out[i])

