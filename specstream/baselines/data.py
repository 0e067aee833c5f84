"""Batches of network inputs for the classic baselines, drawn with the same noise protocol as the NN runs.

A baseline reads a split as a stream of `InputBatch`es: float32 inputs made by `specstream.kernels.make_inputs`
(or by the shard loader, which calls the same kernels), the labels it needs, and the global sample ids. The
training split takes a fresh noise draw per epoch (epoch 0, 1, ... = one noise realisation each); the
validation and test splits always use the kernels' FIXED_EPOCH draw, so baseline and NN numbers are measured on
identical noisy spectra for the same seed, input mode and noise level.

`ArraySplits` serves spectra that are already in memory (tests, the stand-in generator); `ShardSplits` streams a
shard directory through `specstream.data.SpectraLoader`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from specstream.kernels import FIXED_EPOCH, make_inputs, validate_mode

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_BATCH_SIZE = 2048


@dataclass
class InputBatch:
    """One batch of a split: network inputs, the requested labels and the global sample ids."""

    inputs: np.ndarray  # (batch, n_pixels) float32
    labels: dict[str, np.ndarray]  # label name -> (batch,) float64
    sample_ids: np.ndarray  # (batch,) int64


def noise_epoch(split: str, realisation: int) -> int:
    """Return the kernels' epoch value for a split: `realisation` for train, FIXED_EPOCH for val and test."""
    check_split(split)
    return realisation if split == "train" else FIXED_EPOCH


def check_split(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(f"invalid split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
    return split


# The shard writer assigns splits by the SplitMix64 key of (seed, id), the smallest keys going to test and val
# (specstream.shards.split). Hashing that key once more with this salt makes the subsample draw independent of
# the split assignment. Without the salt, equal seeds would leave no training id with a hash below the
# val + test fraction, so a training subsample would come out far smaller than requested.
SUBSAMPLE_SALT = np.uint64(0xD1B54A32D192ED03)


def _splitmix64_finalise(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(sample_ids: np.ndarray, seed: int) -> np.ndarray:
    """Return a uniform number in [0, 1) per sample id, a pure function of (seed, id) (SplitMix64 finaliser).

    The numbers are independent of the shard split assignment, also when the split used the same seed.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(sample_ids).astype(np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = _splitmix64_finalise(_splitmix64_finalise(z) ^ SUBSAMPLE_SALT)
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def _with_margin(count: float) -> int:
    """Return `count` plus 5 binomial standard deviations and 16, a bound that a binomial count exceeds rarely."""
    return int(count + 5 * math.sqrt(count) + 16)


class ArraySplits:
    """Train/val/test splits of in-memory spectra, turned into inputs batch by batch with the kernels.

    Args:
        flux, error: (n, n_pixels) float16/32/64 noise-free flux and 1-sigma error.
        labels: mapping (or DataFrame) label name -> (n,) values.
        splits: split name -> integer row indices into the arrays.
        mode, noise_level, seed: the kernels' input mode, noise scale and noise seed.
        stats: per-pixel training statistics for mode "standardized" (flux_mean, flux_std, error_mean,
            error_std); computed from the training rows when omitted.
        sample_ids: (n,) int64 global ids that key the noise draws; default 0 .. n - 1.
        mask: optional (n, n_pixels), non-zero = bad pixel.
        train_size: keep only the first `train_size` training samples in sample id order (as the NN
            runs' --train-size does); None keeps all.
    """

    def __init__(self, flux, error, labels, splits: Mapping[str, Sequence[int]], *, mode: str = "flux_only",
                 noise_level: float = 1.0, seed: int = 0, stats: Mapping | None = None, sample_ids=None,
                 mask=None, batch_size: int = DEFAULT_BATCH_SIZE, train_size: int | None = None):
        self.flux = np.asarray(flux)
        self.error = np.asarray(error)
        self.mask = None if mask is None else np.asarray(mask)
        if self.flux.ndim != 2 or self.error.shape != self.flux.shape:
            raise ValueError(f"flux and error must both be (n, n_pixels); got {self.flux.shape} and "
                             f"{self.error.shape}")
        n = self.flux.shape[0]
        self.labels = {name: np.asarray(labels[name], dtype=np.float64) for name in labels}
        for name, values in self.labels.items():
            if values.shape != (n,):
                raise ValueError(f"label {name!r} has shape {values.shape}; expected ({n},), one per spectrum")
        self.sample_ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, np.int64)
        self.splits = {name: np.asarray(check_index(splits[name], n, name), dtype=np.int64) for name in splits}
        if train_size is not None and "train" in self.splits:
            if train_size < 1:
                raise ValueError(f"train_size must be >= 1 or None, got {train_size}")
            train_rows = self.splits["train"]
            self.splits["train"] = train_rows[np.argsort(self.sample_ids[train_rows], kind="stable")][:train_size]
        self.mode = validate_mode(mode)
        self.noise_level = noise_level
        self.seed = seed
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        if stats is None and self.mode == "standardized":
            stats = pixel_stats(self.flux[self.splits["train"]], self.error[self.splits["train"]])
        self.stats = stats

    @property
    def n_pixels(self) -> int:
        return self.flux.shape[1]

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def n_samples(self, split: str) -> int:
        return len(self._rows(split))

    def label_range(self, split: str, name: str) -> tuple[float, float]:
        """Return the (min, max) of a label over a split's finite values."""
        values = self._label(name)[self._rows(split)]
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError(f"label {name!r} has no finite value in split {split!r}")
        return float(values.min()), float(values.max())

    def batches(self, split: str, *, labels: Sequence[str], realisation: int = 0,
                start_batch: int = 0) -> Iterator[InputBatch]:
        """Yield the split's batches in row order, from batch `start_batch` on.

        `realisation` picks the training noise draw (the kernels' epoch); val and test ignore it.
        """
        rows = self._rows(split)
        epoch = noise_epoch(split, realisation)
        for name in labels:
            self._label(name)
        for start in range(start_batch * self.batch_size, len(rows), self.batch_size):
            index = rows[start:start + self.batch_size]
            ids = self.sample_ids[index]
            inputs = make_inputs(
                self.flux[index], self.error[index], mode=self.mode, noise_level=self.noise_level,
                seed=self.seed, epoch=epoch, sample_ids=ids, stats=self.stats,
                mask=None if self.mask is None else self.mask[index],
            )
            yield InputBatch(inputs, {name: self.labels[name][index] for name in labels}, ids)

    def _rows(self, split: str) -> np.ndarray:
        check_split(split)
        if split not in self.splits:
            raise ValueError(f"split {split!r} is missing; available splits: {', '.join(self.splits)}")
        return self.splits[split]

    def _label(self, name: str) -> np.ndarray:
        if name not in self.labels:
            raise ValueError(f"label {name!r} is missing; available labels: {', '.join(self.labels)}")
        return self.labels[name]


def check_index(index, n: int, split: str) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise ValueError(f"rows of split {split!r} must be a 1-D integer array, got {index.dtype} {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"rows of split {split!r} must lie in [0, {n}), got [{index.min()}, {index.max()}]")
    return index


def pixel_stats(flux: np.ndarray, error: np.ndarray) -> dict[str, np.ndarray]:
    """Return the kernels' per-pixel statistics (flux_mean, flux_std, error_mean, error_std) of some spectra."""
    flux = np.asarray(flux, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    return {"flux_mean": flux.mean(axis=0), "flux_std": flux.std(axis=0),
            "error_mean": error.mean(axis=0), "error_std": error.std(axis=0)}


def random_splits(n: int, *, n_val: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Assign rows 0 .. n - 1 to train/val/test at random (seeded); each split's rows come out sorted."""
    if n_val < 0 or n_test < 0 or n_val + n_test >= n:
        raise ValueError(f"n_val {n_val} + n_test {n_test} must be >= 0 and leave training rows out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


def collect_subsample(data, split: str, *, labels: Sequence[str], max_samples: int | None, seed: int,
                      realisation: int = 0, transform=None) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Stream a split and keep a random subsample of `max_samples` spectra in memory as float32.

    A sample's hash of (seed, sample id) decides whether it is kept, so the subsample is the same whatever the
    batch order and is not biased by how the input files were sorted. The stream keeps each sample with a
    probability that gives about max_samples + 5 sqrt(max_samples) + 16 candidates, and the `max_samples`
    candidates with the smallest hashes are returned in stream order. Fewer come back only when the split has
    fewer samples, or when the candidates fall 5 standard deviations short (about 3e-7 by the normal approximation).
    `transform` (e.g. pixel rebinning) is applied to each batch of inputs before it is kept.
    Returns (inputs (n_kept, n_features) float32, labels, sample_ids).
    """
    n_split = data.n_samples(split)
    keep_all = max_samples is None or max_samples >= n_split
    if keep_all:
        probability, capacity = 1.0, n_split
    else:
        expected = _with_margin(max_samples)
        probability = min(1.0, expected / n_split)
        capacity = min(n_split, _with_margin(expected))
    inputs = None
    kept_labels = {name: np.empty(capacity) for name in labels}
    kept_ids = np.empty(capacity, dtype=np.int64)
    n_kept = 0
    for batch in data.batches(split, labels=labels, realisation=realisation):
        chosen = np.flatnonzero(hash_uniform(batch.sample_ids, seed) < probability) if not keep_all else None
        values = batch.inputs if chosen is None else batch.inputs[chosen]
        values = values if transform is None else transform(values)
        if inputs is None:
            inputs = np.empty((capacity, values.shape[1]), dtype=np.float32)
        take = min(len(values), capacity - n_kept)
        if take < len(values):
            logger.warning("subsample of split %s is full at %d samples; dropped %d more", split, capacity,
                           len(values) - take)
        inputs[n_kept:n_kept + take] = values[:take]
        ids = batch.sample_ids if chosen is None else batch.sample_ids[chosen]
        kept_ids[n_kept:n_kept + take] = ids[:take]
        for name in labels:
            column = batch.labels[name] if chosen is None else batch.labels[name][chosen]
            kept_labels[name][n_kept:n_kept + take] = column[:take]
        n_kept += take
    if inputs is None or n_kept == 0:
        raise ValueError(f"split {split!r} gave no samples for the subsample (n_split {n_split}, "
                         f"max_samples {max_samples}); check the data directory and --max-train")
    if not keep_all and n_kept > max_samples:
        hashes = hash_uniform(kept_ids[:n_kept], seed)
        smallest = np.sort(np.argpartition(hashes, max_samples - 1)[:max_samples])
        inputs = _compact_rows(inputs, smallest)
        kept_labels = {name: values[smallest] for name, values in kept_labels.items()}
        kept_ids = kept_ids[smallest]
        n_kept = max_samples
    return inputs[:n_kept], {name: values[:n_kept] for name, values in kept_labels.items()}, kept_ids[:n_kept]


def _compact_rows(array: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Move `array[rows]` to the front of `array` in place and return that part; `rows` must be ascending.

    Moving in place keeps the peak memory at one copy of the subsample. It is safe because rows[i] >= i, so a
    chunk reads only rows that no earlier chunk has overwritten.
    """
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        array[start:start + len(part)] = array[part]
    return array[:len(rows)]
