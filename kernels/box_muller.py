"""Two standard normals from two uint32 words (Box-Muller), in float32 arithmetic that vectorizes.

    u = float32(x0) * 2**-32 + 2**-33             in [2**-33, 1]
    radius = sqrt(-2 ln u)                        at most sqrt(66 ln 2) = 6.764
    angle = q * pi/2 + t, q = top 2 bits of x1, t = (next 24 bits of x1 / 2**24 - 1/2) * pi/2 in [-pi/4, pi/4)
    z0, z1 = radius * cos(angle), radius * sin(angle)

`ln`, `sin` and `cos` are polynomials written out here instead of libm calls. A libm call stops LLVM from
vectorizing the loop, and libm results differ between libraries. Written-out float32 operations give
bit-identical results in Numba, NumPy and torch, because the kernels compile without fastmath and so
without fused multiply-adds or reassociation.
ln uses ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, to the s**9 term (truncation below 1e-9).
The sin and cos use their Taylor series on [-pi/4, pi/4] to the t**9 and t**10 terms (truncation below 2e-9).
The rounding of float32 arithmetic (about 1e-7 relative) dominates both.

Limitation: |z| never exceeds 6.764, where a true normal does with probability 1.3e-11 per draw.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._intrinsics import f32_from_bits, f32_to_bits

_F32 = np.float32
_U32 = np.uint32

SCALE_32 = _F32(2.0**-32)
HALF_STEP_32 = _F32(2.0**-33)
SCALE_24 = _F32(2.0**-24)
HALF = _F32(0.5)
ONE = _F32(1.0)
TWO = _F32(2.0)
MINUS_TWO = _F32(-2.0)
QUARTER_TURN = _F32(np.pi / 2)
LN2 = _F32(np.log(2.0))
SQRT2 = _F32(np.sqrt(2.0))

# atanh series coefficients 1/3, 1/5, 1/7, 1/9
LOG_C3, LOG_C5, LOG_C7, LOG_C9 = _F32(1 / 3), _F32(1 / 5), _F32(1 / 7), _F32(1 / 9)
# Taylor coefficients of sin (t**3 .. t**9) and cos (t**2 .. t**10)
SIN_C3, SIN_C5, SIN_C7, SIN_C9 = _F32(-1 / 6), _F32(1 / 120), _F32(-1 / 5040), _F32(1 / 362880)
COS_C2, COS_C4, COS_C6, COS_C8, COS_C10 = (
    _F32(-1 / 2), _F32(1 / 24), _F32(-1 / 720), _F32(1 / 40320), _F32(-1 / 3628800)
)

_EXPONENT_BIAS = np.int32(127)
_MANTISSA_MASK = _U32(0x007FFFFF)
_ONE_BITS = _U32(0x3F800000)


# Numba version (scalar, inlined into the kernels).

@njit(inline="always", error_model="numpy")
def log_f32(u):
    """Return ln(u) for a positive, normal float32 `u`."""
    bits = f32_to_bits(u)
    exponent = np.int32(bits >> _U32(23)) - _EXPONENT_BIAS
    m = f32_from_bits(np.uint32((bits & _MANTISSA_MASK) | _ONE_BITS))  # mantissa in [1, 2)
    above = m > SQRT2
    m = m * HALF if above else m
    exponent = exponent + np.int32(1) if above else exponent
    s = (m - ONE) / (m + ONE)
    s2 = s * s
    p = LOG_C9
    p = p * s2 + LOG_C7
    p = p * s2 + LOG_C5
    p = p * s2 + LOG_C3
    p = p * s2 + ONE
    return TWO * s * p + _F32(exponent) * LN2


@njit(inline="always", error_model="numpy")
def box_muller(x0, x1):
    """Return two independent standard normals (float32) from two uint32 words."""
    u = _F32(x0) * SCALE_32 + HALF_STEP_32
    radius = np.sqrt(MINUS_TWO * log_f32(u))

    quadrant = x1 >> _U32(30)
    fraction = _F32((x1 >> _U32(6)) & _U32(0x00FFFFFF)) * SCALE_24
    t = (fraction - HALF) * QUARTER_TURN
    t2 = t * t
    ps = SIN_C9
    ps = ps * t2 + SIN_C7
    ps = ps * t2 + SIN_C5
    ps = ps * t2 + SIN_C3
    sin_t = t + (t * t2) * ps
    pc = COS_C10
    pc = pc * t2 + COS_C8
    pc = pc * t2 + COS_C6
    pc = pc * t2 + COS_C4
    pc = pc * t2 + COS_C2
    cos_t = ONE + t2 * pc

    # Rotate (cos t, sin t) by quadrant quarter turns: odd quadrants swap the pair, and the sign bits
    # follow the quadrant (q=1: (-s, c), q=2: (-c, -s), q=3: (s, -c)). Bit flips keep the loop branch-free.
    swap = (quadrant & _U32(1)) != _U32(0)
    c = sin_t if swap else cos_t
    s = cos_t if swap else sin_t
    c_sign = ((quadrant ^ (quadrant >> _U32(1))) & _U32(1)) << _U32(31)
    s_sign = (quadrant >> _U32(1)) << _U32(31)
    c = f32_from_bits(np.uint32(f32_to_bits(c) ^ c_sign))
    s = f32_from_bits(np.uint32(f32_to_bits(s) ^ s_sign))
    return radius * c, radius * s


# NumPy version (vectorized over arrays, same float32 operations in the same order).

def log_f32_numpy(u: np.ndarray) -> np.ndarray:
    """Return ln(u) for positive, normal float32 values, with the operations of `log_f32`."""
    bits = u.view(np.uint32)
    exponent = (bits >> _U32(23)).astype(np.int32) - _EXPONENT_BIAS
    m = ((bits & _MANTISSA_MASK) | _ONE_BITS).view(np.float32)
    above = m > SQRT2
    m = np.where(above, m * HALF, m)
    exponent = exponent + above.astype(np.int32)
    s = (m - ONE) / (m + ONE)
    s2 = s * s
    p = LOG_C9 * s2 + LOG_C7
    p = p * s2 + LOG_C5
    p = p * s2 + LOG_C3
    p = p * s2 + ONE
    return TWO * s * p + exponent.astype(np.float32) * LN2


def box_muller_numpy(x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return two float32 arrays of standard normals from uint32 arrays, with the operations of `box_muller`."""
    u = x0.astype(np.float32) * SCALE_32 + HALF_STEP_32
    radius = np.sqrt(MINUS_TWO * log_f32_numpy(u))

    quadrant = x1 >> _U32(30)
    fraction = ((x1 >> _U32(6)) & _U32(0x00FFFFFF)).astype(np.float32) * SCALE_24
    t = (fraction - HALF) * QUARTER_TURN
    t2 = t * t
    ps = SIN_C9 * t2 + SIN_C7
    ps = ps * t2 + SIN_C5
    ps = ps * t2 + SIN_C3
    sin_t = t + (t * t2) * ps
    pc = COS_C10 * t2 + COS_C8
    pc = pc * t2 + COS_C6
    pc = pc * t2 + COS_C4
    pc = pc * t2 + COS_C2
    cos_t = ONE + t2 * pc

    swap = (quadrant & _U32(1)) != 0
    c = np.where(swap, sin_t, cos_t)
    s = np.where(swap, cos_t, sin_t)
    c_sign = ((quadrant ^ (quadrant >> _U32(1))) & _U32(1)) << _U32(31)
    s_sign = (quadrant >> _U32(1)) << _U32(31)
    c = (c.view(np.uint32) ^ c_sign).view(np.float32)
    s = (s.view(np.uint32) ^ s_sign).view(np.float32)
    return radius * c, radius * s
