"""The epoch schedule: which samples each rank reads, in which windows and in which order.

Everything here is a pure function of (split layout, seed, epoch, rank, world_size, batch_size and the
schedule options), so every rank and worker computes it alone, and a resumed run recomputes it exactly.

1. The split's blocks are cut into units of at most `unit_rows` consecutive samples. The training split
   permutes the units with a generator seeded by (seed, epoch); val and test keep storage order (ascending
   sample id). Concatenated, the units form the epoch's stream of N samples.
2. Rank r takes stream positions [r * per_rank, (r + 1) * per_rank), so ranks see disjoint samples.
   With drop_last, per_rank = floor(N / world_size / batch_size) * batch_size, and fewer than
   world_size * batch_size samples at the end of the stream are left out this epoch (which samples
   changes with the permutation). Without drop_last, per_rank = ceil(N / world_size) and the positions past
   N are padding: "wrap" repeats samples from the start of the stream, "mark" gives empty samples with
   sample id -1.
3. A rank's positions are cut into windows of `window_rows` samples (a multiple of batch_size). The
   training split shuffles the samples inside each window with a generator seeded by
   (seed, epoch, world_size, rank, window index). Batches are consecutive slices of the shuffled window.
   Every rank gets ceil(per_rank / batch_size) batches, the same number on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from specstream.data.manifest import SplitLayout

UNIT_SHUFFLE_TAG = 0x756E6974  # "unit": separates the unit permutation's seed from the window's
WINDOW_SHUFFLE_TAG = 0x77696E64  # "wind"
PAD_MODES = ("wrap", "mark")


@dataclass(frozen=True)
class Window:
    """The samples of one window of one rank."""

    index: int  # window index within the rank's epoch
    first_batch: int  # index of the window's first batch in the rank's epoch
    n_rows: int  # samples in the window, padding included
    pieces: list  # (block, row0, row1, dst0): rows [row0, row1) of a block go to rows [dst0, ...) of the window
    n_padding: int  # rows at the end of the window that are padding with sample id -1 ("mark" mode)
    order: np.ndarray | None  # (n_rows,) row order of the output; None keeps the window's order


@dataclass(frozen=True, kw_only=True)
class EpochSchedule:
    """One rank's epoch; see the module docstring."""

    layout: SplitLayout
    batch_size: int
    rank: int
    world_size: int
    seed: int
    epoch: int
    shuffle: bool
    drop_last: bool
    pad_mode: str
    window_rows: int
    unit_rows: int

    def __post_init__(self) -> None:
        n = self.layout.n_samples
        if n == 0:
            raise ValueError(f"split {self.layout.split!r} has no samples; write it with a non-zero size")
        if self.drop_last and n // self.world_size < self.batch_size:
            raise ValueError(f"split {self.layout.split!r} has {n} samples, fewer than world_size * batch_size = "
                             f"{self.world_size} * {self.batch_size}, so drop_last=True leaves no batch; lower "
                             "batch_size or pass drop_last=False")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        unit_block, unit_row0, unit_len = self._units()
        order = np.arange(len(unit_len))
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, UNIT_SHUFFLE_TAG]))
            order = rng.permutation(len(unit_len))
        # The dataclass is frozen; derived arrays are set once here.
        object.__setattr__(self, "_unit_block", unit_block[order])
        object.__setattr__(self, "_unit_row0", unit_row0[order])
        object.__setattr__(self, "_unit_end", np.cumsum(unit_len[order]))

    def _units(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self.layout.block_rows
        per_block = -(-rows // self.unit_rows)
        unit_block = np.repeat(np.arange(len(rows)), per_block)
        first_unit = np.concatenate([[0], np.cumsum(per_block)[:-1]])
        unit_row0 = (np.arange(len(unit_block)) - np.repeat(first_unit, per_block)) * self.unit_rows
        unit_len = np.minimum(self.unit_rows, rows[unit_block] - unit_row0)
        return unit_block, unit_row0, unit_len

    @property
    def n_samples(self) -> int:
        return self.layout.n_samples

    @property
    def per_rank(self) -> int:
        """Samples (padding included) each rank gets this epoch."""
        if self.drop_last:
            return self.n_samples // self.world_size // self.batch_size * self.batch_size
        return math.ceil(self.n_samples / self.world_size)

    @property
    def n_batches(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    @property
    def batches_per_window(self) -> int:
        return self.window_rows // self.batch_size

    @property
    def n_windows(self) -> int:
        return math.ceil(self.per_rank / self.window_rows)

    def _pieces(self, start: int, stop: int, dst0: int) -> list:
        """Return the pieces of stream positions [start, stop) within [0, N), written from row dst0 on."""
        ends = self._unit_end
        pieces = []
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(ends, stop - 1, side="right"))
        for u in range(first, last + 1):
            unit_start = int(ends[u - 1]) if u else 0
            a, b = max(start, unit_start), min(stop, int(ends[u]))
            block, row0 = int(self._unit_block[u]), int(self._unit_row0[u]) + a - unit_start
            if pieces and pieces[-1][0] == block and pieces[-1][2] == row0:
                pieces[-1] = (block, pieces[-1][1], row0 + b - a, pieces[-1][3])
            else:
                pieces.append((block, row0, row0 + b - a, dst0))
            dst0 += b - a
        return pieces

    def window(self, index: int) -> Window:
        """Return window `index` (0 <= index < n_windows) of this rank."""
        if not 0 <= index < self.n_windows:
            raise IndexError(f"window {index} out of range [0, {self.n_windows})")
        rank_start = index * self.window_rows
        n_rows = min(self.window_rows, self.per_rank - rank_start)
        start = self.rank * self.per_rank + rank_start
        stop = start + n_rows
        n = self.n_samples
        pieces, position, n_padding = [], start, 0
        while position < stop:
            if position >= n and self.pad_mode == "mark":
                n_padding = stop - position
                break
            stream_position = position % n
            step = min(stop - position, n - stream_position)
            pieces += self._pieces(stream_position, stream_position + step, position - start)
            position += step
        order = None
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence(
                [self.seed, self.epoch, self.world_size, self.rank, index, WINDOW_SHUFFLE_TAG]))
            order = rng.permutation(n_rows)
        return Window(index, index * self.batches_per_window, n_rows, pieces, n_padding, order)
