"""Torch twin of make_inputs for batches already on a device (CPU or GPU).

Same definition as the Numba kernels and the NumPy reference: Threefry-2x32-20 draws, the float32
Box-Muller of `box_muller.py`, the same bad-pixel, floor and clip rules. torch has no uint32 arithmetic, so
32-bit words live in int64 tensors and every sum is masked back to 32 bits. Each float32 operation is a
separate elementwise op with float32-exact constants, so nothing can fuse into a multiply-add.
Results match the NumPy reference to the bit on CPU (tested). On CUDA the same ops are IEEE float32 and
are expected to match as well; the gpu-marked test checks it where a GPU is present.

Eagerly, each of the generator's ~200 integer ops is one pass over a (batch, n_pixels / 2) int64 tensor.
With `compile_draws=True` the Threefry part runs through torch.compile, which fuses it into a few kernels:
5.6x faster for a whole 256 x 4096 whitening batch on a 2-core CPU, after about 25 s of compilation.
Only integer ops are compiled, so the results stay exact; the float32 Box-Muller part stays eager because
a compiler may fuse its multiplies and adds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from . import box_muller as bm
from .arguments import (NOISE_FREE, STANDARDIZED, WHITENING, WHITENING_ERROR_FLOOR, check_dtypes, check_epoch,
                        check_noise_level, check_seed, check_shapes, clip_limit, mode_code, standardization_arrays)
from .threefry import KEY_PARITY, N_ROUNDS, NOISE_STREAM, ROTATIONS, epoch_key

logger = logging.getLogger(__name__)

_U32_MASK = 0xFFFFFFFF
_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
                 torch.bool: np.bool_, torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16,
                 torch.int32: np.int32, torch.int64: np.int64}


def _f(value: np.float32) -> float:
    """Return a float32 constant as a Python float (exact), for use as a scalar operand."""
    return float(value)


def _numpy_dtype(tensor: torch.Tensor, name: str):
    if tensor.dtype not in _NUMPY_DTYPES:
        raise ValueError(f"{name} has dtype {tensor.dtype}; expected float16, float32 or float64 (mask: bool or integer)")
    return np.dtype(_NUMPY_DTYPES[tensor.dtype])


def threefry2x32_torch(c0: torch.Tensor, c1: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor):
    """Return Threefry-2x32-20 output words. Inputs and outputs are int64 tensors holding uint32 values."""
    keys = (k0, k1, (k0 ^ k1) ^ KEY_PARITY)
    x0 = (c0 + k0) & _U32_MASK
    x1 = (c1 + k1) & _U32_MASK
    for round_index in range(N_ROUNDS):
        r = ROTATIONS[round_index % 8]
        x0 = (x0 + x1) & _U32_MASK
        x1 = (((x1 << r) | (x1 >> (32 - r))) & _U32_MASK) ^ x0
        if round_index % 4 == 3:
            injection = round_index // 4 + 1
            x0 = (x0 + keys[injection % 3]) & _U32_MASK
            x1 = (x1 + keys[(injection + 1) % 3] + injection) & _U32_MASK
    return x0, x1


def _log_f32(u: torch.Tensor) -> torch.Tensor:
    bits = u.view(torch.int32).to(torch.int64)
    exponent = (bits >> 23) - 127
    m = ((bits & 0x007FFFFF) | 0x3F800000).to(torch.int32).view(torch.float32)
    above = m > _f(bm.SQRT2)
    m = torch.where(above, m * _f(bm.HALF), m)
    exponent = exponent + above.to(torch.int64)
    s = (m - _f(bm.ONE)) / (m + _f(bm.ONE))
    s2 = s * s
    p = s2 * _f(bm.LOG_C9) + _f(bm.LOG_C7)
    p = p * s2 + _f(bm.LOG_C5)
    p = p * s2 + _f(bm.LOG_C3)
    p = p * s2 + _f(bm.ONE)
    return (s * _f(bm.TWO)) * p + exponent.to(torch.float32) * _f(bm.LN2)


def _sqrt_f32(x: torch.Tensor) -> torch.Tensor:
    """Return the correctly rounded float32 square root of x >= 0.

    torch 2.13's CPU float32 sqrt is sometimes 1 ulp off, so its result is corrected by exact midpoint tests
    in float64: a float32 midpoint has at most 25 significant bits, so its square is exact in float64.
    """
    root = torch.sqrt(x)
    x64 = x.double()
    up = torch.nextafter(root, torch.full_like(root, float("inf")))
    midpoint = (root.double() + up.double()) * 0.5
    root = torch.where(x64 >= midpoint * midpoint, up, root)
    down = torch.nextafter(root, torch.zeros_like(root))
    midpoint = (root.double() + down.double()) * 0.5
    return torch.where(x64 < midpoint * midpoint, down, root)


def box_muller_torch(x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return two float32 tensors of standard normals from int64 tensors holding uint32 words."""
    u = x0.to(torch.float32) * _f(bm.SCALE_32) + _f(bm.HALF_STEP_32)
    radius = _sqrt_f32(_log_f32(u) * _f(bm.MINUS_TWO))

    quadrant = x1 >> 30
    fraction = ((x1 >> 6) & 0x00FFFFFF).to(torch.float32) * _f(bm.SCALE_24)
    t = (fraction - _f(bm.HALF)) * _f(bm.QUARTER_TURN)
    t2 = t * t
    ps = t2 * _f(bm.SIN_C9) + _f(bm.SIN_C7)
    ps = ps * t2 + _f(bm.SIN_C5)
    ps = ps * t2 + _f(bm.SIN_C3)
    sin_t = t + (t * t2) * ps
    pc = t2 * _f(bm.COS_C10) + _f(bm.COS_C8)
    pc = pc * t2 + _f(bm.COS_C6)
    pc = pc * t2 + _f(bm.COS_C4)
    pc = pc * t2 + _f(bm.COS_C2)
    cos_t = t2 * pc + _f(bm.ONE)

    swap = (quadrant & 1) != 0
    c = torch.where(swap, sin_t, cos_t)
    s = torch.where(swap, cos_t, sin_t)
    c = torch.where(((quadrant ^ (quadrant >> 1)) & 1) != 0, -c, c)  # negation flips the sign bit only
    s = torch.where((quadrant >> 1) != 0, -s, s)
    return radius * c, radius * s


class _CompiledThreefry:
    """threefry2x32_torch through torch.compile, built on first use; eager for good once compiling fails."""

    def __init__(self):
        self.function = None
        self.failed = False

    def __call__(self, *words: torch.Tensor):
        if not self.failed:
            try:
                if self.function is None:
                    self.function = torch.compile(threefry2x32_torch, dynamic=True)
                return self.function(*words)
            except Exception as exc:  # any compiler failure: the eager function computes the same words
                self.failed = True
                logger.warning("compiling the noise generator failed, drawing noise eagerly instead: %s", exc)
        return threefry2x32_torch(*words)


_compiled_threefry = _CompiledThreefry()


def _normals_torch(sample_ids: torch.Tensor, seed: int, epoch: int, n_pixels: int,
                   compile_draws: bool = False) -> torch.Tensor:
    """Return (batch, n_pixels) float32 normals on the device of `sample_ids`."""
    threefry = _compiled_threefry if compile_draws else threefry2x32_torch
    epoch_k0, epoch_k1 = (int(k) for k in epoch_key(seed, epoch))
    device = sample_ids.device
    ids_lo = (sample_ids & _U32_MASK)[:, None]
    ids_hi = ((sample_ids >> 32) & _U32_MASK)[:, None]
    key0, key1 = threefry(ids_lo, ids_hi, torch.full_like(ids_lo, epoch_k0), torch.full_like(ids_lo, epoch_k1))
    n_pairs = (n_pixels + 1) // 2
    pair = torch.arange(n_pairs, dtype=torch.int64, device=device)[None, :]
    stream = torch.full_like(pair, NOISE_STREAM)
    x0, x1 = threefry(pair, stream, key0, key1)
    z0, z1 = box_muller_torch(x0, x1)
    return torch.cat([z0, z1], dim=1)[:, :n_pixels]


def _error_floor_torch(error: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """Return WHITENING_ERROR_FLOOR * approximate geometric mean of each row's good errors, (batch, 1)."""
    bits = torch.where(good, error.view(torch.int32).to(torch.int64), 0)
    count = good.sum(dim=1)
    mean_bits = torch.div(bits.sum(dim=1), count.clamp(min=1), rounding_mode="floor")
    floor = mean_bits.to(torch.int32).view(torch.float32) * float(np.float32(WHITENING_ERROR_FLOOR))
    return torch.where(count > 0, floor, 0.0)[:, None]


def make_inputs_torch(flux: torch.Tensor, error: torch.Tensor, *, mode: str, noise_level: float = 1.0,
                      seed: int, epoch: int, sample_ids, stats: Mapping | None = None,
                      mask=None, compile_draws: bool = False) -> torch.Tensor:
    """Compute make_inputs on torch tensors, on their device, and return (batch, n_pixels) float32.

    Arguments and rules are those of `specstream.kernels.make_inputs`; flux and error are tensors,
    sample_ids and mask may be tensors or arrays. `compile_draws` compiles the generator (see above).
    """
    code = mode_code(mode)
    if not isinstance(flux, torch.Tensor) or not isinstance(error, torch.Tensor):
        raise ValueError(f"flux and error must be torch tensors; got {type(flux).__name__} and {type(error).__name__}")
    device = flux.device
    sample_ids = torch.as_tensor(sample_ids, device=device)
    mask = None if mask is None else torch.as_tensor(mask, device=device)
    check_dtypes(_numpy_dtype(flux, "flux"), _numpy_dtype(error, "error"),
                 None if mask is None else _numpy_dtype(mask, "mask"), _numpy_dtype(sample_ids, "sample_ids"))
    check_shapes(flux.shape, error.shape, None if mask is None else mask.shape, sample_ids.shape)
    level = check_noise_level(noise_level, code)
    seed, epoch = check_seed(seed), check_epoch(epoch)

    f = flux.to(device=device, dtype=torch.float32)
    e = error.to(device=device, dtype=torch.float32)
    good = torch.isfinite(f) & torch.isfinite(e) & (e > 0)
    if mask is not None:
        good &= mask == 0

    if code == NOISE_FREE:
        value = f
    else:
        normals = _normals_torch(sample_ids.to(torch.int64), seed, epoch, f.shape[1], compile_draws)
        noisy = f + (e * _f(level)) * normals
        if code == WHITENING:
            good &= e >= _error_floor_torch(e, good)
            value = noisy / (e * _f(level))
        elif code == STANDARDIZED:
            flux_mean, inv_sigma = (torch.from_numpy(a).to(device) for a in standardization_arrays(stats, f.shape[1], level))
            value = (noisy - flux_mean) * inv_sigma
        else:
            value = noisy
    value = torch.where(good & ~torch.isnan(value), value, 0.0)
    limit = _f(clip_limit(code))
    return value.clamp(-limit, limit)


def draw_normals_torch(seed: int, epoch: int, sample_ids, n_pixels: int, *, device=None) -> torch.Tensor:
    """Return the standard normals (batch, n_pixels) float32 that make_inputs uses, on `device`."""
    ids = torch.as_tensor(sample_ids, device=device)
    if ids.ndim != 1 or ids.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"sample_ids has shape {tuple(ids.shape)} and dtype {ids.dtype}; expected (batch,) integers")
    if isinstance(n_pixels, bool) or not isinstance(n_pixels, (int, np.integer)) or n_pixels < 1:
        raise ValueError(f"invalid n_pixels {n_pixels!r}; expected an integer >= 1")
    return _normals_torch(ids.to(torch.int64), check_seed(seed), check_epoch(epoch), int(n_pixels))
