"""Turn one scheduled window into tensors: read its pieces, handle corrupt shards, apply the input transform.

This runs in DataLoader workers, or on the threads of the main process with num_workers=0. All work is
vectorised over rows: one read per piece and member, then one `make_inputs` call and one gather per window,
with no Python work per sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from specstream.data.blocks import BlockReader, CorruptShardError
from specstream.data.schedule import Window
from specstream.kernels import FIXED_EPOCH, make_inputs

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
    kernel_threads: int | None = None  # threads of one make_inputs call; None: the kernels' default


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


def _read_pieces(reader: BlockReader, window: Window, buffers: dict, on_corrupt: str) -> np.ndarray:
    """Read the window's pieces into `buffers`; return a bool (n_rows,) of rows that could not be read."""
    unreadable = np.zeros(window.n_rows, dtype=bool)
    unreadable[window.n_rows - window.n_padding:] = True
    by_shard: dict[int, list] = {}
    for piece in window.pieces:
        by_shard.setdefault(int(reader.layout.block_shard[piece[0]]), []).append(piece)
    for shard, pieces in by_shard.items():
        try:
            reader.read_shard(shard, pieces, buffers)
        except CorruptShardError as exc:
            if on_corrupt == "raise":
                raise
            logger.warning("skipping %d samples: %s", sum(p[2] - p[1] for p in pieces), exc)
            for _, row0, row1, dst0 in pieces:
                unreadable[dst0:dst0 + row1 - row0] = True
    return unreadable


def _fill_unreadable(buffers: dict, unreadable: np.ndarray, padding_rows: np.ndarray, replace: bool) -> None:
    """Replace unreadable rows by readable ones (`replace`), or blank them as padding with id -1."""
    bad = np.flatnonzero(unreadable & ~padding_rows)
    if replace and len(bad):
        good = np.flatnonzero(~unreadable)
        if not len(good):
            raise CorruptShardError("(every shard of one window)", "no sample of the window could be read")
        source = good[np.arange(len(bad)) % len(good)]
        for array in buffers.values():
            array[bad] = array[source]
        unreadable = unreadable & padding_rows
    blank = np.flatnonzero(unreadable)
    if len(blank):
        buffers["flux"][blank] = 0
        buffers["error"][blank] = 1
        if "mask" in buffers:
            buffers["mask"][blank] = 1
        buffers["labels"][blank] = np.nan
        buffers["ids"][blank] = -1


def _transform(buffers: dict, order: np.ndarray | None, transform: TransformSpec, scratch: np.ndarray,
               out: np.ndarray) -> None:
    """Write the inputs of the window's rows, in `order` (None keeps stored order), to `out` (n_rows, n_pixels).

    The kernels run over the rows in stored order, into `scratch` when a gather follows. Gathering the
    float32 output moves half the bytes of gathering float32 flux and error.
    """
    target = out if order is None else scratch[:len(out)]
    make_inputs(buffers["flux"], buffers["error"], mode=transform.mode, noise_level=transform.noise_level,
                seed=transform.noise_seed, epoch=transform.epoch, sample_ids=np.maximum(buffers["ids"], 0),
                stats=transform.stats, mask=buffers.get("mask"), out=target, num_threads=transform.kernel_threads)
    if order is not None:
        # mode="clip" lets np.take write straight into `out`; the indices are valid anyway.
        np.take(target, order, axis=0, out=out, mode="clip")


def build_window(reader: BlockReader, window: Window, transform: TransformSpec, *, buffers: dict,
                 scratch: np.ndarray, on_corrupt: str, replace_unreadable: bool, memory: str,
                 inputs_array: np.ndarray | None = None) -> WindowItem:
    """Read, transform and order one window.

    `buffers` (role -> array) and `scratch` (float32, n_pixels columns) are reusable arrays of at least
    n_rows rows.
    `memory` is where the output tensors go: "shared", "pinned" or "plain" (see _empty_output).
    `inputs_array`, a float32 (n_rows, n_pixels) array, receives the inputs in place of a new tensor.
    """
    buffers = {role: array[:window.n_rows] for role, array in buffers.items()}
    unreadable = _read_pieces(reader, window, buffers, on_corrupt)
    padding_rows = np.zeros(window.n_rows, dtype=bool)
    padding_rows[window.n_rows - window.n_padding:] = True
    n_skipped = int(np.count_nonzero(unreadable & ~padding_rows))
    _fill_unreadable(buffers, unreadable, padding_rows, replace_unreadable)

    order = window.order
    ids = buffers["ids"] if order is None else buffers["ids"][order]
    if inputs_array is not None:
        inputs = torch.from_numpy(inputs_array)
    else:
        inputs = _empty_output((window.n_rows, reader.layout.n_pixels), torch.float32, memory)
    _transform(buffers, order, transform, scratch, inputs.numpy())
    padding = ids < 0
    if padding.any():
        inputs.numpy()[padding] = 0.0

    labels = _empty_output(buffers["labels"].shape, torch.float32, memory)  # (n_rows, n_labels)
    labels.numpy()[:] = buffers["labels"] if order is None else buffers["labels"][order]
    targets = _empty_output((window.n_rows, len(transform.target_columns)), torch.float32, memory)
    targets.numpy()[:] = labels.numpy()[:, list(transform.target_columns)]
    extra = {name: labels[:, column] for column, name in enumerate(transform.label_names)}
    sample_ids = _empty_output((window.n_rows,), torch.int64, memory)
    sample_ids.numpy()[:] = ids
    return WindowItem(Batch(inputs, targets, sample_ids, extra), window.index, n_skipped)
