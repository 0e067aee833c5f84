"""The oracle gate: assigns each sample to an expert by its true labels (a grid of label bins).

Gating with true labels is what makes the oracle mixture of experts an upper bound rather than a deployable
model, because a real survey does not know a star's labels before estimating them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gate:
    """A grid of bins over some labels; bin edges are per label. No labels means a single expert."""

    names: tuple[str, ...]
    edges: tuple[np.ndarray, ...]  # per label: (n_bins + 1,) increasing edges

    def __post_init__(self):
        if len(self.names) != len(self.edges):
            raise ValueError(f"gate has {len(self.names)} labels but {len(self.edges)} edge arrays")
        for name, edges in zip(self.names, self.edges):
            if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
                raise ValueError(f"gate edges of {name!r} must be >= 2 increasing values, got {edges.tolist()}")

    @classmethod
    def single(cls) -> Gate:
        return cls((), ())

    @classmethod
    def uniform(cls, ranges: Mapping[str, tuple[float, float]], n_bins: int) -> Gate:
        """Build a gate with `n_bins` equal-width bins per label over each (min, max) range."""
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        edges = []
        for name, (low, high) in ranges.items():
            if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
                raise ValueError(f"label {name!r} has range [{low}, {high}]; expected a finite range with "
                                 "max > min to place gate bins. Gate on another label")
            edges.append(np.linspace(low, high, n_bins + 1))
        return cls(tuple(ranges), tuple(edges))

    @property
    def n_experts(self) -> int:
        return int(np.prod([len(edges) - 1 for edges in self.edges], dtype=np.int64))

    def assign(self, labels: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return each sample's expert index (batch,) int64, or -1 where a gating label is NaN.

        Values outside the edges go to the first or last bin of that label.
        """
        if not self.names:
            first = next(iter(labels.values()), None)
            return np.zeros(0 if first is None else len(first), dtype=np.int64)
        index = None
        valid = None
        for name, edges in zip(self.names, self.edges):
            values = np.asarray(labels[name], dtype=np.float64)
            n_bins = len(edges) - 1
            bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
            index = bins if index is None else index * n_bins + bins
            valid = np.isfinite(values) if valid is None else valid & np.isfinite(values)
        return np.where(valid, index, -1).astype(np.int64)

    def describe(self, expert: int) -> str:
        """Return a readable label range of one expert, e.g. "T_eff [3750, 4500) M_H [-2.5, -1.5)"."""
        if not self.names:
            return "all samples"
        parts = []
        for name, edges in reversed(list(zip(self.names, self.edges))):
            n_bins = len(edges) - 1
            expert, bin_index = divmod(expert, n_bins)
            parts.append(f"{name} [{edges[bin_index]:.4g}, {edges[bin_index + 1]:.4g})")
        return " ".join(reversed(parts))


def parse_gate_labels(text: str | Sequence[str]) -> tuple[str, ...]:
    """Split "T_eff,M_H" into ("T_eff", "M_H"); raise ValueError on an empty or repeated name."""
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"invalid gate labels {text!r}; expected distinct comma-separated label names, "
                         "e.g. 'T_eff,M_H' or 'log_g'")
    return tuple(names)
