"""The fast path: noisy network inputs from NumPy arrays, computed by the Numba kernels on a thread pool."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import numba_kernels
from .arguments import NOISE_FREE, WHITENING, WHITENING_ERROR_FLOOR, check_epoch, check_out, check_seed, prepare_call
from .threads import run_in_row_blocks
from .threefry import epoch_key


def _kernel_view(array: np.ndarray) -> np.ndarray:
    # Numba 0.68 has no float16 on the CPU; the kernels decode the bits of a uint16 view instead.
    return array.view(np.uint16) if array.dtype == np.float16 else array


def make_inputs(flux, error, *, mode: str, noise_level: float = 1.0, seed: int, epoch: int, sample_ids,
                stats: Mapping | None = None, mask=None, out: np.ndarray | None = None,
                num_threads: int | None = None) -> np.ndarray:
    """Draw fresh noise and transform a batch of spectra into network inputs.

    Args:
        flux, error: (batch, n_pixels) float16, float32 or float64; noise-free flux and its 1-sigma error.
        mode: one of INPUT_MODES ("flux_only", "whitening", "standardized", "noise_free").
        noise_level: noise scale; the draw is flux + noise_level * error * N(0, 1).
        seed, epoch, sample_ids: the noise of pixel p of sample id s is a pure function of
            (seed, epoch, s, p). Pass FIXED_EPOCH for validation and test. sample_ids: (batch,) integers.
        stats: the manifest's per-pixel training statistics (flux_mean, flux_std, error_mean, error_std),
            needed by "standardized" only.
        mask: (batch, n_pixels) bool or integer, non-zero = bad pixel; bad pixels come out as 0.
        out: optional float32 (batch, n_pixels) C-contiguous array to write into.
        num_threads: threads for this call; None uses `threads.default_num_threads()`.

    Returns:
        (batch, n_pixels) float32 inputs, finite everywhere. See `kernels.arguments` for each mode's rules.

    Raises:
        ValueError: an argument has the wrong shape, dtype or value; the message names it.
    """
    call = prepare_call(flux, error, mode=mode, noise_level=noise_level, seed=seed, epoch=epoch,
                        sample_ids=sample_ids, stats=stats, mask=mask, out=out)
    flux_view, error_view = _kernel_view(call.flux), _kernel_view(call.error)

    if call.mode_code == NOISE_FREE:
        def process_rows(start: int, stop: int) -> None:
            mask_block = None if call.mask is None else call.mask[start:stop]
            numba_kernels.noise_free_rows(flux_view[start:stop], error_view[start:stop], mask_block,
                                          call.out[start:stop])
    else:
        floor_fraction = np.float32(WHITENING_ERROR_FLOOR if call.mode_code == WHITENING else 0.0)

        def process_rows(start: int, stop: int) -> None:
            mask_block = None if call.mask is None else call.mask[start:stop]
            numba_kernels.noisy_inputs_rows(
                flux_view[start:stop], error_view[start:stop], mask_block, call.sample_ids[start:stop],
                call.epoch_k0, call.epoch_k1, call.mode_code, call.noise_level, floor_fraction,
                call.flux_mean, call.inv_sigma, call.clip, call.out[start:stop],
            )

    run_in_row_blocks(process_rows, call.out.shape[0], num_threads)
    return call.out


def draw_normals(seed: int, epoch: int, sample_ids, n_pixels: int, *, out: np.ndarray | None = None,
                 num_threads: int | None = None) -> np.ndarray:
    """Return the standard normals (batch, n_pixels) float32 that make_inputs uses for these spectra."""
    sample_ids = np.asarray(sample_ids)
    if sample_ids.ndim != 1 or sample_ids.dtype.kind not in "iu":
        raise ValueError(
            f"sample_ids has shape {sample_ids.shape} and dtype {sample_ids.dtype}; expected (batch,) integers"
        )
    if isinstance(n_pixels, bool) or not isinstance(n_pixels, (int, np.integer)) or n_pixels < 1:
        raise ValueError(f"invalid n_pixels {n_pixels!r}; expected an integer >= 1")
    epoch_k0, epoch_k1 = epoch_key(check_seed(seed), check_epoch(epoch))
    ids = sample_ids.astype(np.int64, copy=False)
    out = check_out(out, (len(ids), int(n_pixels)))

    def process_rows(start: int, stop: int) -> None:
        numba_kernels.normals_rows(ids[start:stop], epoch_k0, epoch_k1, out[start:stop])

    run_in_row_blocks(process_rows, len(ids), num_threads)
    return out
