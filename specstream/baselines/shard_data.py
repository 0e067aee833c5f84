"""Baseline batches from a shard directory, read with the NN runs' SpectraLoader.

Reading through `specstream.data.SpectraLoader` gives the baselines exactly the NN runs' inputs. They share the
kernels, the noise seed, the training split's per-epoch draws and the fixed validation/test draw. The
`train_size` rule is the same too: the first N training samples in sample id order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from .data import DEFAULT_BATCH_SIZE, InputBatch, check_split

logger = logging.getLogger(__name__)


class ShardSplits:
    """The splits of a shard set as streams of `InputBatch`es (same interface as `ArraySplits`).

    Args:
        source: shard directory (with manifest.json) or URL, as SpectraLoader takes it.
        mode, noise_level, seed: input mode, noise scale and noise seed, as for the NN run to compare with.
        train_size: use only the first N training samples in sample id order; None uses all.
        batch_size: spectra per batch (memory: batch_size * n_pixels * 8 bytes for the float64 copy).
        num_workers: SpectraLoader worker processes; 0 reads in this process with threads.
    """

    def __init__(self, source, *, mode: str = "flux_only", noise_level: float = 1.0, seed: int = 0,
                 train_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int = 0):
        from specstream.data import read_manifest

        self.source = source
        self.manifest = read_manifest(source)
        self.mode, self.noise_level, self.seed = mode, noise_level, seed
        if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int)
                                       or train_size < 1):
            raise ValueError(f"train_size must be an integer >= 1 or None, got {train_size!r}")
        self.train_size = train_size
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["label_names"])

    @property
    def n_pixels(self) -> int:
        return int(self.manifest["n_pixels"])

    def n_samples(self, split: str) -> int:
        check_split(split)
        n = int(self.manifest["splits"][split]["n_samples"])
        return min(n, self.train_size) if split == "train" and self.train_size is not None else n

    def label_range(self, split: str, name: str) -> tuple[float, float]:
        """Return the (min, max) of a label from the manifest's training-split label statistics."""
        if split != "train":
            raise ValueError(f"label ranges are stored for the training split only, not {split!r}")
        stats = self.manifest.get("label_stats", {}).get(name)
        if not stats or stats.get("min") is None or stats.get("max") is None:
            raise ValueError(f"the manifest of {self.source} has no label_stats min/max for {name!r}; "
                             "rewrite the shards with specstream shard, or gate on another label")
        return float(stats["min"]), float(stats["max"])

    def batches(self, split: str, *, labels: Sequence[str], realisation: int = 0,
                start_batch: int = 0) -> Iterator[InputBatch]:
        """Yield a split's batches; `realisation` is the training epoch whose noise the training split gets."""
        from specstream.data import SpectraLoader

        check_split(split)
        missing = [name for name in labels if name not in self.label_names]
        if missing:
            raise ValueError(f"labels {missing} are missing from {self.source} "
                             f"(labels: {', '.join(self.label_names)})")
        loader = SpectraLoader(
            self.source, split, batch_size=self.batch_size, num_workers=self.num_workers, seed=self.seed,
            mode=self.mode, noise_level=self.noise_level, targets=(labels[0],),
            max_samples=self.train_size if split == "train" else None,
            drop_last=False,  # every sample counts; on one rank this adds no repeated or padding rows
        )
        if split == "train":
            loader.set_epoch(realisation)
        if start_batch:
            loader.load_state_dict({**loader.state_dict(), "batches_done": start_batch})
        for batch in loader:
            sample_ids = batch.sample_ids.numpy()
            keep = sample_ids >= 0  # -1 marks padding rows, which a single rank does not get
            inputs = batch.inputs.numpy()
            if not keep.all():
                inputs, sample_ids = inputs[keep], sample_ids[keep]
            columns = {name: batch.extra[name].numpy().astype(np.float64)[keep] for name in labels}
            yield InputBatch(inputs, columns, sample_ids)
