"""Threefry-2x32 with 20 rounds: the counter-based generator behind every noise draw.

Threefry, from D. E. Shaw Research's Random123 library, maps a 64-bit counter and a 64-bit key to 64 random
bits with 32-bit additions, rotations and XORs only. `jax.random` uses the same generator. Without state, any draw can be computed on its own, in any order, by any process, which is
what makes the noise a pure function of (seed, epoch, sample id, pixel).

The keys are chained, each level a Threefry call keyed by the level above:

    epoch key    = threefry(counter=epoch as uint64,     key=seed as uint64)
    spectrum key = threefry(counter=sample id as uint64, key=epoch key)
    pixel pair j = threefry(counter=(j, NOISE_STREAM),   key=spectrum key)  -> two uint32 -> two normals

For a fixed key Threefry is a bijection of the counter, so two sample ids never share a spectrum key within
an epoch, and two epochs never share an epoch key within a seed.

Two implementations follow: a scalar Numba one that is inlined into the kernels, and a vectorized NumPy one
for the reference path. Both are checked against the Random123 known-answer vectors in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Random123 R_32x2 rotation constants
KEY_PARITY = 0x1BD11BDA  # Skein key-schedule parity constant
N_ROUNDS = 20
NOISE_STREAM = 0  # second counter word of the per-pixel draws (other values are free for future streams)

_U32_MASK = 0xFFFFFFFF
_PARITY_U32 = np.uint32(KEY_PARITY)


# Numba version: scalars in, scalars out, inlined into the calling loop so that LLVM can vectorize it.

@njit(inline="always")
def _rotl32(x, r):
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _mix4(x0, x1, r0, r1, r2, r3):
    """Apply four Threefry rounds with rotation constants r0..r3."""
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl32(x1, r0) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl32(x1, r1) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl32(x1, r2) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl32(x1, r3) ^ x0)
    return x0, x1


@njit(inline="always")
def threefry2x32(c0, c1, k0, k1):
    """Return the two uint32 output words of Threefry-2x32-20 for counter (c0, c1) and key (k0, k1)."""
    k2 = np.uint32(_PARITY_U32 ^ k0 ^ k1)
    x0 = np.uint32(c0 + k0)
    x1 = np.uint32(c1 + k1)
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0 = np.uint32(x0 + k1)
    x1 = np.uint32(x1 + k2 + np.uint32(1))
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0 = np.uint32(x0 + k2)
    x1 = np.uint32(x1 + k0 + np.uint32(2))
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0 = np.uint32(x0 + k0)
    x1 = np.uint32(x1 + k1 + np.uint32(3))
    x0, x1 = _mix4(x0, x1, 17, 29, 16, 24)
    x0 = np.uint32(x0 + k1)
    x1 = np.uint32(x1 + k2 + np.uint32(4))
    x0, x1 = _mix4(x0, x1, 13, 15, 26, 6)
    x0 = np.uint32(x0 + k2)
    x1 = np.uint32(x1 + k0 + np.uint32(5))
    return x0, x1


@njit(inline="always")
def spectrum_key(sample_id, epoch_k0, epoch_k1):
    """Return the key words of one spectrum's draws from its int64 sample id and the epoch key."""
    bits = np.uint64(sample_id)  # two's complement for negative ids
    lo = np.uint32(bits & np.uint64(_U32_MASK))
    hi = np.uint32(bits >> np.uint64(32))
    return threefry2x32(lo, hi, epoch_k0, epoch_k1)


# NumPy version: uint32 arrays that broadcast against each other. uint32 array arithmetic wraps modulo 2**32.

def _rotl32_numpy(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32_numpy(c0, c1, k0, k1) -> tuple[np.ndarray, np.ndarray]:
    """Return Threefry-2x32-20 output words for uint32 arrays (broadcast) of counter and key words."""
    c0, c1, k0, k1 = (np.atleast_1d(np.asarray(v, dtype=np.uint32)) for v in (c0, c1, k0, k1))
    keys = (k0, k1, _PARITY_U32 ^ k0 ^ k1)
    x0 = c0 + k0
    x1 = c1 + k1
    for round_index in range(N_ROUNDS):
        x0 = x0 + x1
        x1 = _rotl32_numpy(x1, ROTATIONS[round_index % 8]) ^ x0
        if round_index % 4 == 3:
            injection = round_index // 4 + 1
            x0 = x0 + keys[injection % 3]
            x1 = x1 + keys[(injection + 1) % 3] + np.uint32(injection)
    return x0, x1


def split_u64(values) -> tuple[np.ndarray, np.ndarray]:
    """Split int64 or uint64 values (two's complement for negatives) into low and high uint32 words."""
    bits = np.atleast_1d(np.asarray(values)).astype(np.int64).view(np.uint64)
    return (bits & np.uint64(_U32_MASK)).astype(np.uint32), (bits >> np.uint64(32)).astype(np.uint32)


def epoch_key(seed: int, epoch: int) -> tuple[np.uint32, np.uint32]:
    """Return the key words shared by all spectra of one (seed, epoch), both already validated.

    `seed` is in [0, 2**64). `epoch` is >= 0, or -1 for the fixed validation/test draws, and is taken as uint64.
    """
    seed_bits = np.array([seed], dtype=np.uint64)
    epoch_bits = np.array([epoch % 2**64], dtype=np.uint64)
    seed_lo, seed_hi = (seed_bits & np.uint64(_U32_MASK)).astype(np.uint32), (seed_bits >> np.uint64(32)).astype(np.uint32)
    epoch_lo, epoch_hi = (epoch_bits & np.uint64(_U32_MASK)).astype(np.uint32), (epoch_bits >> np.uint64(32)).astype(np.uint32)
    k0, k1 = threefry2x32_numpy(epoch_lo, epoch_hi, seed_lo, seed_hi)
    return np.uint32(k0[0]), np.uint32(k1[0])


def spectrum_keys_numpy(sample_ids, epoch_k0, epoch_k1) -> tuple[np.ndarray, np.ndarray]:
    """Return the key words (batch,) uint32 of each spectrum's draws, like `spectrum_key` does for one."""
    lo, hi = split_u64(sample_ids)
    return threefry2x32_numpy(lo, hi, epoch_k0, epoch_k1)
