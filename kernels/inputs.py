"""The fast path: noisy network inputs from NumPy arrays, computed by the Numba kernels on a thread pool."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import numba_kernels
from .arguments import (FLOAT_DTYPES, NOISE_FREE, WHITENING, WHITENING_ERROR_FLOOR, PreparedCall, check_epoch,
                        check_out, check_seed, prepare_call)
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
    rows = np.arange(call.out.shape[0], dtype=np.int64)
    transform = RowTransform._from_call(call)

    def process_rows(start: int, stop: int) -> None:
        mask_block = None if call.mask is None else call.mask[start:stop]
        transform.run_unchecked(call.flux[start:stop], call.error[start:stop], call.sample_ids[start:stop], call.out,
                       rows[start:stop], mask_block)

    run_in_row_blocks(process_rows, call.out.shape[0], num_threads)
    return call.out


class RowTransform:
    """make_inputs for many calls on a few rows each, with the arguments that stay the same checked once.

    The streaming loader transforms a few dozen rows at a time, and a full make_inputs call per block would
    cost more in argument checks than the rows take.
    Each call writes input row i to row out_rows[i] of `out`, so the rows land in a shuffled order without
    a separate gather. The result equals make_inputs to the bit.
    """

    def __init__(self, *, mode: str, noise_level: float = 1.0, seed: int, epoch: int, n_pixels: int,
                 stats: Mapping | None = None):
        probe = np.zeros((1, n_pixels), dtype=np.float32)
        call = prepare_call(probe, probe, mode=mode, noise_level=noise_level, seed=seed, epoch=epoch,
                            sample_ids=np.zeros(1, dtype=np.int64), stats=stats, mask=None, out=None)
        self._init_from(call)

    @classmethod
    def _from_call(cls, call: PreparedCall) -> RowTransform:
        transform = cls.__new__(cls)
        transform._init_from(call)
        return transform

    def _init_from(self, call: PreparedCall) -> None:
        self.mode_code, self.n_pixels = call.mode_code, call.flux.shape[1]
        self._args = (call.epoch_k0, call.epoch_k1, call.mode_code, call.noise_level,
                      np.float32(WHITENING_ERROR_FLOOR if call.mode_code == WHITENING else 0.0),
                      call.flux_mean, call.inv_sigma, call.clip)

    def __call__(self, flux: np.ndarray, error: np.ndarray, sample_ids: np.ndarray, out: np.ndarray,
                 out_rows: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Write the inputs of row i of flux and error to row out_rows[i] of `out`, on this thread.

        flux, error: C-contiguous (rows, n_pixels) float16, float32 or float64; mask: None or a C-contiguous
        bool, int8 or uint8 array of that shape (non-zero = bad). sample_ids, out_rows: (rows,) int64. out: C-contiguous
        float32 (n_out, n_pixels), with every out_rows value in [0, n_out).
        """
        n_rows = flux.shape[0]
        arrays = {"flux": flux, "error": error} if mask is None else {"flux": flux, "error": error, "mask": mask}
        for name, array in arrays.items():
            if array.shape != (n_rows, self.n_pixels):
                raise ValueError(f"{name} has shape {array.shape}; expected (rows, {self.n_pixels}) with the rows of "
                                 f"flux, {n_rows}")
            if not array.flags.c_contiguous:
                raise ValueError(f"{name} is not C-contiguous; pass np.ascontiguousarray({name})")
        for name, array in (("flux", flux), ("error", error)):
            if array.dtype not in FLOAT_DTYPES:
                raise ValueError(f"{name} has dtype {array.dtype}; expected float16, float32 or float64")
        if mask is not None and (mask.dtype.itemsize != 1 or mask.dtype.kind not in "biu"):
            raise ValueError(f"mask has dtype {mask.dtype}; expected bool, int8 or uint8 (non-zero = bad pixel)")
        if out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != self.n_pixels or \
                not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out must be a writeable C-contiguous float32 (n_out, {self.n_pixels}) array")
        if sample_ids.shape != (n_rows,) or out_rows.shape != (n_rows,) or sample_ids.dtype != np.int64 \
                or out_rows.dtype != np.int64:
            raise ValueError(f"sample_ids and out_rows must be ({n_rows},) int64")
        if n_rows and (out_rows.min() < 0 or out_rows.max() >= out.shape[0]):
            raise ValueError(f"invalid out_rows from {out_rows.min()} to {out_rows.max()}; expected values in "
                             f"[0, {out.shape[0]}), the rows of out")
        self.run_unchecked(flux, error, sample_ids, out, out_rows, None if mask is None else mask.view(np.uint8))

    def run_unchecked(self, flux, error, sample_ids, out, out_rows, mask) -> None:
        """Do what calling does, without the argument checks (about 6 us a call), and with a uint8 mask.

        For callers that build the arrays to fit, as the streaming loader does. An out_rows value outside
        `out` writes to memory that `out` does not own.
        """
        flux_view, error_view = _kernel_view(flux), _kernel_view(error)
        if self.mode_code == NOISE_FREE:
            numba_kernels.noise_free_rows(flux_view, error_view, mask, out, out_rows)
        else:
            epoch_k0, epoch_k1, mode_code, noise_level, floor_fraction, flux_mean, inv_sigma, clip = self._args
            numba_kernels.noisy_inputs_rows(flux_view, error_view, mask, sample_ids, epoch_k0, epoch_k1, mode_code,
                                            noise_level, floor_fraction, flux_mean, inv_sigma, clip, out, out_rows)


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
