"""Read a whole split into NumPy arrays: for the classic baselines and for training from device memory."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from specstream.data.blocks import BlockReader, allocate
from specstream.data.manifest import SplitLayout, read_manifest, resolve_source

ARRAY_DTYPES = ("float16", "float32", "float64")


class SplitArrays(NamedTuple):
    """A split in ascending sample-id order. Masked pixels hold flux 0 and a large error, as stored."""

    flux: np.ndarray  # (n, n_pixels) noise-free flux
    error: np.ndarray  # (n, n_pixels) 1-sigma error
    labels: pd.DataFrame  # n rows, the manifest's label columns
    ids: np.ndarray  # (n,) int64 global sample ids


def load_split_arrays(source, split: str, dtype: str = "float32", max_samples: int | None = None,
                      cache_dir: str | Path | None = None) -> SplitArrays:
    """Read the first `max_samples` samples (all by default) of `split` as arrays of `dtype`.

    `source` is what SpectraLoader accepts. Memory: n * n_pixels * 2 * itemsize bytes for flux and error,
    plus one block of the stored dtype while converting. Raises CorruptShardError (a ValueError) naming a
    corrupt shard.
    """
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"dtype must be one of {ARRAY_DTYPES}, got {dtype!r}")
    shard_source = resolve_source(source)
    layout = SplitLayout.from_manifest(read_manifest(shard_source), split, max_samples)
    n = layout.n_samples
    flux = np.empty((n, layout.n_pixels), dtype=dtype)
    error = np.empty_like(flux)
    labels = np.empty((n, len(layout.label_names)), dtype=np.float64)
    ids = np.empty(n, dtype=np.int64)
    reader = BlockReader(shard_source, layout, cache_dir)
    block_buffers = allocate(layout, int(layout.block_rows.max(initial=0)))
    block_buffers.pop("mask", None)
    same_dtype = np.dtype(dtype) == layout.dtype
    try:
        position = 0
        for block, rows in enumerate(layout.block_rows):
            rows = int(rows)
            shard = int(layout.block_shard[block])
            if same_dtype:
                # Read straight into the output arrays.
                dest = {"flux": flux, "error": error, "labels": labels, "ids": ids}
                reader.read_shard(shard, [(block, 0, rows, position)], dest)
            else:
                reader.read_shard(shard, [(block, 0, rows, 0)], block_buffers)
                flux[position:position + rows] = block_buffers["flux"][:rows]
                error[position:position + rows] = block_buffers["error"][:rows]
                labels[position:position + rows] = block_buffers["labels"][:rows]
                ids[position:position + rows] = block_buffers["ids"][:rows]
            position += rows
    finally:
        reader.close()
    return SplitArrays(flux, error, pd.DataFrame(labels, columns=layout.label_names), ids)
