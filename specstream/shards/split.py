"""Assign every global sample id to train, val or test, as a pure function of (seed, id).

Each id gets a 64-bit key from the SplitMix64 finaliser of (id + seed * golden ratio). For a fixed seed the
map from id to key is a bijection, so keys never tie. The `n_test` ids with the smallest keys form the test
split, the next `n_val` ids the val split, and every other id the train split. The assignment therefore does
not depend on chunking, on file boundaries, or on which rows are later dropped as invalid: a dropped row
leaves its split one sample short instead of pulling in another sample.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2  # split codes, in the order of format.SPLITS
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
KEY_SCAN_IDS = 1 << 22  # ids hashed per step while finding the split thresholds


def split_keys(seed: int, ids: np.ndarray) -> np.ndarray:
    """Return the uint64 split key of each id (SplitMix64 finaliser of id + (seed + 1) * golden ratio)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed + 1) * GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def resolve_size(value: float, n_total: int, name: str) -> int:
    """Return a split size as a count: values below 1 are fractions of `n_total`, others counts."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a count >= 1 or a fraction in [0, 1), got {value!r}")
    if value < 1:
        return int(round(value * n_total))
    if value != int(value):
        raise ValueError(f"{name} must be a whole number of samples when >= 1, got {value}")
    return int(value)


@dataclass(frozen=True)
class SplitRule:
    """Key thresholds that assign ids to splits; see the module docstring."""

    seed: int
    n_total: int
    n_test: int
    n_val: int
    test_max_key: int | None  # largest key of the test split, None when the split is empty
    val_max_key: int | None  # largest key of the val split, None when the split is empty

    @classmethod
    def build(cls, seed: int, n_total: int, n_test: int, n_val: int) -> SplitRule:
        """Find the thresholds by scanning the keys of ids 0 .. n_total - 1 in bounded memory."""
        if not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"split seed must be an integer in [0, 2**63), got {seed!r}")
        if n_test + n_val >= n_total:
            raise ValueError(f"test size {n_test} + val size {n_val} leaves no training samples out of "
                             f"{n_total} spectra; lower --test-size or --val-size")
        n_keep = n_test + n_val
        smallest = np.empty(0, dtype=np.uint64)
        for start in range(0, n_total, KEY_SCAN_IDS) if n_keep else ():
            ids = np.arange(start, min(start + KEY_SCAN_IDS, n_total), dtype=np.int64)
            candidates = np.concatenate([smallest, split_keys(seed, ids)])
            if len(candidates) > n_keep:
                candidates = np.partition(candidates, n_keep - 1)[:n_keep]
            smallest = candidates
        smallest = np.sort(smallest)
        test_max = int(smallest[n_test - 1]) if n_test else None
        val_max = int(smallest[n_keep - 1]) if n_val else None
        return cls(int(seed), n_total, n_test, n_val, test_max, val_max)

    def assign(self, ids: np.ndarray) -> np.ndarray:
        """Return the split code (TRAIN, VAL or TEST) of each id, as int8."""
        keys = split_keys(self.seed, ids)
        codes = np.full(len(ids), TRAIN, dtype=np.int8)
        in_test = np.zeros(len(ids), dtype=bool)
        if self.test_max_key is not None:
            in_test = keys <= np.uint64(self.test_max_key)
            codes[in_test] = TEST
        if self.val_max_key is not None:
            codes[~in_test & (keys <= np.uint64(self.val_max_key))] = VAL
        return codes

    def to_manifest(self) -> dict:
        """Return the fields the manifest records about the split assignment."""
        return {"seed": self.seed, "n_total_ids": self.n_total, "test_size": self.n_test, "val_size": self.n_val,
                "method": "the test_size smallest SplitMix64 keys of (id, seed) form test, the next val_size "
                          "form val, the rest train"}
