"""Streaming statistics gathered while shards are written: per-pixel moments, label moments, float16 loss.

All accumulators merge one block at a time in float64, with the pairwise update of count, mean and sum of
squared deviations (the parallel form of Welford's method). The result therefore depends only on the
sequence of blocks, never on how the input was chunked. Each accumulator exports its state as a dict of
NumPy arrays, so an interrupted run can resume with exactly the same numbers.
"""

from __future__ import annotations

import numba
import numpy as np

FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # 6.1e-5: smallest normal float16
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def _merge_moments(count, mean, m2, block_count, block_mean, block_m2):
    """Return (count, mean, m2) of the union of two sample sets, elementwise.

    m2 is the sum of squared deviations: m2 = m2_a + m2_b + delta**2 * n_a * n_b / n, delta = mean_b - mean_a.
    """
    total = count + block_count
    safe_total = np.maximum(total, 1)
    delta = block_mean - mean
    new_mean = mean + delta * (block_count / safe_total)
    new_m2 = m2 + block_m2 + delta * delta * (count * block_count / safe_total)
    return total, new_mean, new_m2


@numba.njit(cache=True, nogil=True)
def _block_moments(values, good, use_good):  # pragma: no cover - compiled
    """Return per-pixel (count, mean, sum of squared deviations) of a block (n, n_pixels), in float64."""
    n, n_pixels = values.shape
    count = np.zeros(n_pixels, dtype=np.int64)
    total = np.zeros(n_pixels, dtype=np.float64)
    for i in range(n):
        for j in range(n_pixels):
            if not use_good or good[i, j]:
                count[j] += 1
                total[j] += values[i, j]
    mean = total / np.maximum(count, 1)
    m2 = np.zeros(n_pixels, dtype=np.float64)
    for i in range(n):
        for j in range(n_pixels):
            if not use_good or good[i, j]:
                deviation = values[i, j] - mean[j]
                m2[j] += deviation * deviation
    return count, mean, m2


@numba.njit(cache=True, nogil=True)
def _rounding_error(exact, rounded, error):  # pragma: no cover - compiled
    """Return max and sum of squares of |rounded - exact| / error, the max relative error over values of at
    least FLOAT16_TINY in magnitude, and the count of non-zero values below it; all in float64."""
    max_over_error = 0.0
    sum_sq = 0.0
    max_relative = 0.0
    n_subnormal = 0
    n, n_pixels = exact.shape
    for i in range(n):
        for j in range(n_pixels):
            before = np.float64(exact[i, j])
            difference = abs(np.float64(rounded[i, j]) - before)
            over_error = difference / np.float64(error[i, j])
            max_over_error = max(max_over_error, over_error)
            sum_sq += over_error * over_error
            magnitude = abs(before)
            if magnitude >= FLOAT16_TINY:
                max_relative = max(max_relative, difference / magnitude)
            elif magnitude > 0.0:
                n_subnormal += 1
    return max_over_error, sum_sq, max_relative, n_subnormal


class PixelMoments:
    """Per-pixel count, mean and sum of squared deviations of one array (flux or error) over samples."""

    def __init__(self, n_pixels: int):
        self.count = np.zeros(n_pixels, dtype=np.int64)
        self.mean = np.zeros(n_pixels, dtype=np.float64)
        self.m2 = np.zeros(n_pixels, dtype=np.float64)

    def update(self, values: np.ndarray, good: np.ndarray | None) -> None:
        """Add a block (n, n_pixels); `good` (n, n_pixels) bool selects unmasked pixels, None means all."""
        use_good = good is not None
        block_count, block_mean, block_m2 = _block_moments(values, good if use_good else np.ones((1, 1), bool),
                                                           use_good)
        self.count, self.mean, self.m2 = _merge_moments(self.count, self.mean, self.m2, block_count, block_mean,
                                                        block_m2)

    def std(self) -> np.ndarray:
        """Return the population standard deviation per pixel (0 where no sample was unmasked)."""
        return np.sqrt(self.m2 / np.maximum(self.count, 1))

    def state(self, prefix: str) -> dict:
        return {f"{prefix}_count": self.count, f"{prefix}_mean": self.mean, f"{prefix}_m2": self.m2}

    def load_state(self, state: dict, prefix: str) -> None:
        self.count = np.array(state[f"{prefix}_count"], dtype=np.int64)
        self.mean = np.array(state[f"{prefix}_mean"], dtype=np.float64)
        self.m2 = np.array(state[f"{prefix}_m2"], dtype=np.float64)


class TrainStats:
    """Per-pixel flux and error moments and per-label moments and ranges of the training split."""

    def __init__(self, n_pixels: int, label_names: list[str]):
        self.label_names = list(label_names)
        self.flux = PixelMoments(n_pixels)
        self.error = PixelMoments(n_pixels)
        n_labels = len(label_names)
        self.label_count = np.zeros(n_labels, dtype=np.int64)
        self.label_mean = np.zeros(n_labels, dtype=np.float64)
        self.label_m2 = np.zeros(n_labels, dtype=np.float64)
        self.label_min = np.full(n_labels, np.inf)
        self.label_max = np.full(n_labels, -np.inf)

    def update(self, flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None, labels: np.ndarray) -> None:
        """Add one block as stored: flux, error (n, n_pixels), mask (n, n_pixels) or None, labels (n, n_labels)."""
        good = None if mask is None or not mask.any() else (mask == 0)
        self.flux.update(flux, good)
        self.error.update(error, good)

        finite = np.isfinite(labels)
        block_count = finite.sum(axis=0, dtype=np.int64)
        zeroed = np.where(finite, labels, 0.0)
        block_mean = zeroed.sum(axis=0) / np.maximum(block_count, 1)
        deviation = np.where(finite, labels - block_mean, 0.0)
        block_m2 = (deviation * deviation).sum(axis=0)
        self.label_count, self.label_mean, self.label_m2 = _merge_moments(
            self.label_count, self.label_mean, self.label_m2, block_count, block_mean, block_m2)
        self.label_min = np.minimum(self.label_min, np.where(finite, labels, np.inf).min(axis=0, initial=np.inf))
        self.label_max = np.maximum(self.label_max, np.where(finite, labels, -np.inf).max(axis=0, initial=-np.inf))

    def pixel_stats(self) -> dict:
        """Return the manifest's `stats`: per-pixel flux_mean, flux_std, error_mean, error_std (lists of floats)."""
        return {"flux_mean": self.flux.mean.tolist(), "flux_std": self.flux.std().tolist(),
                "error_mean": self.error.mean.tolist(), "error_std": self.error.std().tolist(),
                "min_unmasked_count": int(self.flux.count.min(initial=0)),
                "definition": "per pixel over unmasked training pixels of the stored values; std is the "
                              "population standard deviation (ddof=0)"}

    def label_stats(self) -> dict:
        """Return the manifest's `label_stats`: {name: {count, mean, std, min, max}} over finite values."""
        result = {}
        for i, name in enumerate(self.label_names):
            count = int(self.label_count[i])
            result[name] = {
                "count": count,
                "mean": float(self.label_mean[i]) if count else None,
                "std": float(np.sqrt(self.label_m2[i] / count)) if count else None,
                "min": float(self.label_min[i]) if count else None,
                "max": float(self.label_max[i]) if count else None,
            }
        return result

    def state(self) -> dict:
        return {**self.flux.state("flux"), **self.error.state("error"), "label_count": self.label_count,
                "label_mean": self.label_mean, "label_m2": self.label_m2, "label_min": self.label_min,
                "label_max": self.label_max}

    def load_state(self, state: dict) -> None:
        self.flux.load_state(state, "flux")
        self.error.load_state(state, "error")
        for name in ("label_count", "label_mean", "label_m2", "label_min", "label_max"):
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))


class Float16Loss:
    """Rounding error of storing flux and error as float16, in units of each pixel's 1-sigma error."""

    ARRAYS = ("flux", "error")

    def __init__(self):
        self.max_over_error = np.zeros(2)  # max |stored - exact| / error, for flux and error
        self.sum_sq_over_error = np.zeros(2)
        self.max_relative = np.zeros(2)  # max |stored - exact| / |exact| over values >= FLOAT16_TINY
        self.n_subnormal = np.zeros(2, dtype=np.int64)  # non-zero values below FLOAT16_TINY
        self.n_values = np.zeros(1, dtype=np.int64)

    def update(self, exact: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray]) -> None:
        """Add one block: `exact` (flux, error) before and `stored` (flux, error) after rounding, all float32."""
        for i, (before, after) in enumerate(zip(exact, stored)):
            max_over_error, sum_sq, max_relative, n_subnormal = _rounding_error(before, after, exact[1])
            self.max_over_error[i] = max(self.max_over_error[i], max_over_error)
            self.sum_sq_over_error[i] += sum_sq
            self.max_relative[i] = max(self.max_relative[i], max_relative)
            self.n_subnormal[i] += n_subnormal
        self.n_values[0] += exact[0].size

    def report(self) -> dict:
        """Return the manifest's `float16_loss`: per array, max and rms error over sigma, max relative error."""
        n = max(int(self.n_values[0]), 1)
        return {name: {"max_abs_over_error": float(self.max_over_error[i]),
                       "rms_abs_over_error": float(np.sqrt(self.sum_sq_over_error[i] / n)),
                       "max_relative_normal": float(self.max_relative[i]),
                       "n_subnormal": int(self.n_subnormal[i])}
                for i, name in enumerate(self.ARRAYS)} | {"n_values_per_array": int(self.n_values[0])}

    def merge(self, other: Float16Loss) -> None:
        """Add the counts and extremes of another accumulator (another split)."""
        self.max_over_error = np.maximum(self.max_over_error, other.max_over_error)
        self.sum_sq_over_error = self.sum_sq_over_error + other.sum_sq_over_error
        self.max_relative = np.maximum(self.max_relative, other.max_relative)
        self.n_subnormal = self.n_subnormal + other.n_subnormal
        self.n_values = self.n_values + other.n_values

    def state(self, prefix: str) -> dict:
        return {f"{prefix}_{name}": getattr(self, name) for name in
                ("max_over_error", "sum_sq_over_error", "max_relative", "n_subnormal", "n_values")}

    def load_state(self, state: dict, prefix: str) -> None:
        for name in ("max_over_error", "sum_sq_over_error", "max_relative", "n_subnormal", "n_values"):
            setattr(self, name, np.array(state[f"{prefix}_{name}"], dtype=getattr(self, name).dtype))
