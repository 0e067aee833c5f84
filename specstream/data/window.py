"""Turn one scheduled window into tensors: read its pieces, handle corrupt shards, apply the input transform.

This runs in DataLoader workers, or on the threads of the main process with num_workers=0. The kernels read
the pixels of local shards through memory maps (or CHUNK_ROWS rows at a time with read_mode "pread") and
write each row's inputs straight to its shuffled row of the output, so each window's pixels pass through
main memory once. The Python work is per piece or chunk of rows, never per sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from specstream.data.blocks import BlockReader, CorruptShardError, allocate
from specstream.data.schedule import Window
from specstream.kernels import FIXED_EPOCH, RowTransform

logger = logging.getLogger(__name__)

ON_CORRUPT_CHOICES = ("raise", "skip")


class Batch(NamedTuple):
    """One batch of samples. Rows with sample id -1 are padding (see SpectraLoader) and must be left out."""

    inputs: torch.Tensor  # (batch, n_pixels) float32 network inputs
    labels: torch.Tensor  # (batch, n_targets) float32 target labels; NaN in padding rows
    sample_ids: torch.Tensor  # (batch,) int64 global sample ids; -1 marks padding
    extra: dict  # label name -> (batch,) float32 tensor (a column view), every label column of the manifest

    def to(self, device, non_blocking: bool = False) -> Batch:
        """Return the batch on `device`; `non_blocking` overlaps the copy when the batch is in pinned memory."""
        def move(tensor):
            return tensor.to(device, non_blocking=non_blocking)

        return Batch(move(self.inputs), move(self.labels), move(self.sample_ids),
                     {name: move(value) for name, value in self.extra.items()})

    def slice(self, start: int, stop: int) -> Batch:
        """Return rows [start, stop) as views."""
        return Batch(self.inputs[start:stop], self.labels[start:stop], self.sample_ids[start:stop],
                     {name: value[start:stop] for name, value in self.extra.items()})


class WindowItem(NamedTuple):
    """A whole window as one Batch, the unit a worker hands to the main process."""

    batch: Batch
    index: int  # window index
    n_skipped: int  # samples of corrupt shards replaced (train) or marked as padding (val, test)


@dataclass(frozen=True, kw_only=True)
class TransformSpec:
    """Arguments of kernels.make_inputs that turn stored flux and error into network inputs."""

    mode: str
    noise_level: float
    noise_seed: int
    epoch: int  # training epoch, or FIXED_EPOCH for the fixed validation/test draw
    stats: dict | None  # per-pixel training statistics, for the "standardized" mode
    target_columns: tuple  # indices of the target labels among the manifest's label_names
    label_names: tuple


def fixed_or_training_epoch(shuffle_split: bool, epoch: int) -> int:
    """Return the noise epoch: the training epoch for the training split, FIXED_EPOCH otherwise."""
    return epoch if shuffle_split else FIXED_EPOCH


NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64}


def _empty_output(shape: tuple, dtype: torch.dtype, memory: str) -> torch.Tensor:
    """Allocate an output tensor in "shared" memory (DataLoader workers), "pinned" memory or plain memory."""
    if memory == "shared":
        return torch.empty(shape, dtype=dtype).share_memory_()
    if memory == "pinned":
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    # NumPy (>= 1.22 on Linux) advises the kernel to back large arrays with huge pages, which makes first
    # writes to a fresh window several times cheaper than to a torch.empty tensor on machines with THP in
    # madvise mode.
    return torch.from_numpy(np.empty(shape, dtype=NUMPY_DTYPES[dtype]))


CHUNK_ROWS = 32  # rows read and transformed together: 1 MiB of float32 flux and error, about one core's L2 cache
SMALL_ROLES = ("labels", "ids")  # members read for the whole window at once
PIXEL_ROLES = ("flux", "error", "mask")  # members read CHUNK_ROWS rows at a time from local files


class ReadBuffers:
    """A reader and its reusable read buffers, used by one building thread at a time.

    `small` is for the labels and ids of a whole window, and `chunk` for the pixel members of CHUNK_ROWS
    rows, the only pixel memory that read_mode "pread" needs. `whole`, for the pixel members of a whole
    window, is allocated on first use by shards without a local file (streamed sources without cache_dir).
    """

    def __init__(self, reader: BlockReader, window_rows: int):
        self.reader, self.layout, self.window_rows = reader, reader.layout, window_rows
        self.small = allocate(self.layout, window_rows, SMALL_ROLES)
        self.chunk = allocate(self.layout, CHUNK_ROWS, PIXEL_ROLES)
        self._whole: dict | None = None

    @property
    def whole(self) -> dict:
        """Buffers for the pixel members of a whole window, allocated on first use."""
        if self._whole is None:
            self._whole = allocate(self.layout, self.window_rows, PIXEL_ROLES)
        return self._whole


def make_row_transform(transform: TransformSpec, n_pixels: int) -> RowTransform:
    """Return the kernels' RowTransform for a TransformSpec."""
    return RowTransform(mode=transform.mode, noise_level=transform.noise_level, seed=transform.noise_seed,
                        epoch=transform.epoch, n_pixels=n_pixels, stats=transform.stats)


def _transform_rows(row_transform: RowTransform, pixels: dict, start: int, stop: int, ids: np.ndarray,
                    out: np.ndarray, out_rows: np.ndarray) -> None:
    """Transform rows [start, stop) of the `pixels` arrays into rows out_rows of `out`.

    The window is built so that the arrays fit (out_rows is a permutation of the window's rows), so the
    per-call argument checks of RowTransform are skipped.
    """
    mask = pixels.get("mask")
    row_transform.run_unchecked(pixels["flux"][start:stop], pixels["error"][start:stop], ids, out, out_rows,
                                None if mask is None else mask[start:stop].view(np.uint8))


def _read_shard_rows(reader: BlockReader, shard: int, pieces: list, buffers: ReadBuffers, labels: np.ndarray,
                     ids: np.ndarray, row_transform: RowTransform, out: np.ndarray, out_row: np.ndarray) -> None:
    """Read one shard's pieces: labels and ids into window rows, inputs into out[out_row[window row]].

    With read_mode "mmap" the kernels read local files through memory maps, with no copy. With "pread"
    they are read CHUNK_ROWS rows at a time, each chunk transformed while it is still in cache. Streamed
    shards are read whole, in one pass per shard, then transformed.
    """
    if reader.local_file(shard) is None:
        whole = buffers.whole
        reader.read_shard(shard, pieces, {**whole, "labels": labels, "ids": ids})
        for _, row0, row1, dst0 in pieces:
            stop = dst0 + row1 - row0
            _transform_rows(row_transform, whole, dst0, stop, ids[dst0:stop], out, out_row[dst0:stop])
        return
    if reader.read_mode == "mmap":
        reader.check_size(shard)
        for block, row0, row1, dst0 in pieces:
            stop = dst0 + row1 - row0
            labels[dst0:stop] = reader.member_view(shard, block, "labels")[row0:row1]
            ids[dst0:stop] = reader.member_view(shard, block, "ids")[row0:row1]
            pixels = {role: reader.member_view(shard, block, role)[row0:row1] for role in buffers.chunk}
            _transform_rows(row_transform, pixels, 0, row1 - row0, ids[dst0:stop], out, out_row[dst0:stop])
        return
    reader.read_shard(shard, pieces, {"labels": labels, "ids": ids})
    for block, row0, row1, dst0 in pieces:
        for first in range(row0, row1, CHUNK_ROWS):
            n = min(row1, first + CHUNK_ROWS) - first
            chunk = {role: array[:n] for role, array in buffers.chunk.items()}
            reader.read_shard(shard, [(block, first, first + n, 0)], chunk)
            dst = dst0 + first - row0
            _transform_rows(row_transform, chunk, 0, n, ids[dst:dst + n], out, out_row[dst:dst + n])


def _read_window(reader: BlockReader, window: Window, buffers: ReadBuffers, labels: np.ndarray, ids: np.ndarray,
                 row_transform: RowTransform, out: np.ndarray, out_row: np.ndarray,
                 on_corrupt: str) -> tuple[np.ndarray, list[str]]:
    """Read and transform the window's pieces; return a bool (n_rows,) of unread rows and the failed shards."""
    unreadable = np.zeros(window.n_rows, dtype=bool)
    unreadable[window.n_rows - window.n_padding:] = True
    failed: list[str] = []
    by_shard: dict[int, list] = {}
    for piece in window.pieces:
        by_shard.setdefault(int(reader.layout.block_shard[piece[0]]), []).append(piece)
    for shard, pieces in by_shard.items():
        try:
            _read_shard_rows(reader, shard, pieces, buffers, labels, ids, row_transform, out, out_row)
        except CorruptShardError as exc:
            if on_corrupt == "raise":
                raise
            logger.warning("skipping %d samples: %s", sum(p[2] - p[1] for p in pieces), exc)
            failed.append(exc.shard)
            for _, row0, row1, dst0 in pieces:
                unreadable[dst0:dst0 + row1 - row0] = True
    return unreadable, failed


def _fill_unreadable(out: np.ndarray, out_row: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                     unreadable: np.ndarray, padding_rows: np.ndarray, replace: bool, failed: list[str]) -> None:
    """Replace unreadable rows by readable ones (`replace`), or blank them as padding with id -1.

    A replacement copies another row's inputs, labels and id. The noise is a function of the sample id, so
    this equals reading the other sample twice.
    """
    bad = np.flatnonzero(unreadable & ~padding_rows)
    if replace and len(bad):
        good = np.flatnonzero(~unreadable)
        if not len(good):
            raise CorruptShardError(", ".join(failed), "no sample of a training window could be read, so nothing "
                                    "is left to replace the skipped samples with", skip_hint=False)
        source = good[np.arange(len(bad)) % len(good)]
        out[out_row[bad]] = out[out_row[source]]
        labels[bad] = labels[source]
        ids[bad] = ids[source]
        unreadable = unreadable & padding_rows
    blank = np.flatnonzero(unreadable)
    if len(blank):
        out[out_row[blank]] = 0.0
        labels[blank] = np.nan
        ids[blank] = -1


def build_window(window: Window, row_transform: RowTransform, transform: TransformSpec, *, buffers: ReadBuffers,
                 on_corrupt: str, replace_unreadable: bool, memory: str,
                 inputs_array: np.ndarray | None = None) -> WindowItem:
    """Read, transform and order one window.

    Window row r (storage order) becomes output row out_row[r], where out_row inverts `window.order`, so
    every row is written once, in its final place.
    `memory` is where the output tensors go: "shared", "pinned" or "plain" (see _empty_output).
    `inputs_array`, a float32 (n_rows, n_pixels) array, receives the inputs in place of a new tensor.
    """
    reader, n_rows = buffers.reader, window.n_rows
    labels, ids = buffers.small["labels"][:n_rows], buffers.small["ids"][:n_rows]
    if inputs_array is not None:
        inputs = torch.from_numpy(inputs_array)
    else:
        inputs = _empty_output((n_rows, reader.layout.n_pixels), torch.float32, memory)
    out = inputs.numpy()
    order = window.order
    out_row = np.arange(n_rows, dtype=np.int64)
    if order is not None:
        out_row[order] = out_row.copy()
    unreadable, failed = _read_window(reader, window, buffers, labels, ids, row_transform, out, out_row,
                                      on_corrupt)
    padding_rows = np.zeros(n_rows, dtype=bool)
    padding_rows[n_rows - window.n_padding:] = True
    n_skipped = int(np.count_nonzero(unreadable & ~padding_rows))
    _fill_unreadable(out, out_row, labels, ids, unreadable, padding_rows, replace_unreadable, failed)

    labels_out = _empty_output(labels.shape, torch.float32, memory)  # (n_rows, n_labels)
    labels_out.numpy()[:] = labels if order is None else labels[order]
    targets = _empty_output((n_rows, len(transform.target_columns)), torch.float32, memory)
    targets.numpy()[:] = labels_out.numpy()[:, list(transform.target_columns)]
    extra = {name: labels_out[:, column] for column, name in enumerate(transform.label_names)}
    sample_ids = _empty_output((n_rows,), torch.int64, memory)
    sample_ids.numpy()[:] = ids if order is None else ids[order]
    return WindowItem(Batch(inputs, targets, sample_ids, extra), window.index, n_skipped)
