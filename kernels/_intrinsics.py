"""Bit-level conversions that Numba does not offer as functions, written as LLVM intrinsics.

Each one lowers to a single LLVM instruction, so loops that use them still vectorize.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def f32_from_bits(typingctx, bits):
    """Reinterpret a uint32 as the float32 with the same bit pattern."""
    if bits != types.uint32:
        return None
    signature = types.float32(types.uint32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


@intrinsic
def f32_to_bits(typingctx, value):
    """Reinterpret a float32 as the uint32 with the same bit pattern."""
    if value != types.float32:
        return None
    signature = types.uint32(types.float32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return signature, codegen


@intrinsic
def f32_from_f16_bits(typingctx, bits):
    """Convert the IEEE half-precision value stored in a uint16 to float32 (exact).

    Numba 0.68 has no float16 type on the CPU, so callers pass float16 arrays viewed as uint16.
    """
    if bits != types.uint16:
        return None
    signature = types.float32(types.uint16)

    def codegen(context, builder, sig, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return signature, codegen


@intrinsic
def f16_bits_from_f32(typingctx, value):
    """Round a float32 to IEEE half precision (nearest, ties to even) and return its bits as a uint16."""
    if value != types.float32:
        return None
    signature = types.uint16(types.float32)

    def codegen(context, builder, sig, args):
        half = builder.fptrunc(args[0], ir.HalfType())
        return builder.bitcast(half, ir.IntType(16))

    return signature, codegen
