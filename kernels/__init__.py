"""Numba kernels for on-the-fly noise and input transforms (imported as specstream.kernels).

`make_inputs` draws flux + noise_level * error * N(0, 1) and turns it into network inputs ("flux_only",
"whitening", "standardized", or "noise_free" without a draw). The noise of pixel p of sample id s in an
epoch is a pure function of (seed, epoch, s, p), computed with the Threefry-2x32-20 counter-based generator.
It therefore does not depend on worker count, world size, batch composition or order. `reference` contains
the NumPy twin and `torch_twin` the torch one, with the same results to the bit (tested on CPU).
"""

if __name__ != "specstream.kernels":
    # Numba keys its cache in kernels/__pycache__ by source file, not by module name. Code cached under the
    # name "kernels" makes specstream.kernels fail later with "No module named 'kernels'".
    raise ImportError(
        f"specstream's kernels were imported as {__name__!r}; import them as specstream.kernels "
        "(pip install -e . from the repository root makes it importable)"
    )

from .arguments import (
    FIXED_EPOCH,
    INPUT_MODES,
    STANDARDIZED_CLIP,
    STANDARDIZED_STD_FLOOR,
    STATS_KEYS,
    WHITENING_CLIP,
    WHITENING_ERROR_FLOOR,
    validate_mode,
)
from .inputs import RowTransform, draw_normals, make_inputs
from .reference import draw_normals_reference, make_inputs_reference
from .threads import default_num_threads

__all__ = [
    "FIXED_EPOCH",
    "INPUT_MODES",
    "RowTransform",
    "STANDARDIZED_CLIP",
    "STANDARDIZED_STD_FLOOR",
    "STATS_KEYS",
    "WHITENING_CLIP",
    "WHITENING_ERROR_FLOOR",
    "default_num_threads",
    "draw_normals",
    "draw_normals_reference",
    "make_inputs",
    "make_inputs_reference",
    "validate_mode",
]
