"""Write one split's samples into tar shards, one block of rows at a time, in bounded memory.

A SplitWriter buffers one block. When the block is full, it goes to the split's open shard, a file with a
temporary name. When the shard contains `blocks_per_shard` blocks, it is closed, synced to disk and renamed
to its final name. A shard file therefore either is complete or does not exist under its final name.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from specstream.atomic import fsync_directory
from specstream.shards import format as fmt
from specstream.shards.half import round_to_float16
from specstream.shards.inputs import Rows
from specstream.shards.stats import Float16Loss, TrainStats

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".partial"
HASH_READ_BYTES = 16 << 20


def sha256_file(path: Path) -> str:
    """Return the SHA-256 hex digest of a file, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(HASH_READ_BYTES):
            digest.update(piece)
    return digest.hexdigest()


class ShardFinalizer:
    """Sync, close and rename finished shards on one background thread, each followed by its checkpoint.

    The next shard is written while the previous one is synced to disk. Tasks run in submission order. A
    shard is renamed only after its data is on disk, and its checkpoint is saved only after the rename. A
    crash therefore leaves each shard either complete under its final name or under its temporary name.
    """

    def __init__(self, out_dir: Path, fsync: bool):
        self.out_dir, self.fsync = out_dir, fsync
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specstream-shard-sync")
        self._futures: collections.deque = collections.deque()

    def submit(self, handle, tmp: Path, final: Path, entry: dict, after: Callable[[], None] | None) -> None:
        """Queue the finalisation of one shard whose bytes are all written to `handle`; raise earlier failures.

        The task stores the shard's SHA-256 in `entry` before it renames the file and calls `after`.
        """
        self.check()
        self._futures.append(self._pool.submit(self._finalize, handle, tmp, final, entry, after))

    def _finalize(self, handle, tmp: Path, final: Path, entry: dict, after: Callable[[], None] | None) -> None:
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())
        handle.close()
        # Hashing the file read back from the page cache here keeps SHA-256 off the writing thread.
        entry["sha256"] = sha256_file(tmp)
        os.replace(tmp, final)
        if self.fsync:
            fsync_directory(self.out_dir)
        if after is not None:
            after()

    def check(self) -> None:
        """Raise the error of the first failed task that has finished, if any."""
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()

    def wait(self) -> None:
        """Wait for every queued task; raise the first error."""
        while self._futures:
            self._futures.popleft().result()

    def shutdown(self) -> None:
        """Wait for the queued tasks, log their errors, and stop the thread (after a failure elsewhere)."""
        for future in self._futures:
            if future.exception() is not None:
                logger.error("finishing a shard failed: %s", future.exception())
        self._futures.clear()
        self._pool.shutdown(wait=True)


class SplitWriter:
    """Buffer the samples of one split in id order and write them as blocks in shards."""

    def __init__(self, out_dir: Path, split: str, *, block_size: int, blocks_per_shard: int, dtype: str,
                 n_pixels: int, n_labels: int, has_mask: bool, stats: TrainStats | None = None,
                 finalizer: ShardFinalizer,
                 on_shard: Callable[[SplitWriter], Callable[[], None] | None] | None = None):
        self.out_dir, self.split = out_dir, split
        self.block_size, self.blocks_per_shard = block_size, blocks_per_shard
        self.dtype = np.dtype(dtype)
        self.finalizer = finalizer
        self.on_shard = on_shard  # called at each shard close; returns the checkpoint to save after the rename
        self.stats = stats
        self.float16_loss = Float16Loss() if self.dtype == np.float16 else None
        self.flux = np.empty((block_size, n_pixels), dtype=np.float32)
        self.error = np.empty_like(self.flux)
        self.mask = np.zeros((block_size, n_pixels), dtype=np.int8) if has_mask else None
        self.labels = np.empty((block_size, n_labels), dtype=np.float64)
        self.ids = np.empty(block_size, dtype=np.int64)
        self.n_buffered = 0
        self.finished: list[dict] = []  # manifest entries of the shards closed so far
        self.n_blocks_finished = 0
        self.fed_through = -1  # every id <= this that belongs to the split has been added
        self.snapshot: dict = {}  # accumulator states as of the last closed shard
        self._open_blocks: list[dict] = []
        self._open_ids: list[np.ndarray] = []
        self._handle = None
        self._offset = 0

    @property
    def n_samples(self) -> int:
        """Samples in closed shards."""
        return sum(entry["n_samples"] for entry in self.finished)

    def pending_ids(self) -> np.ndarray:
        """Return the ids added but not yet in a closed shard, ascending."""
        return np.concatenate(self._open_ids + [self.ids[:self.n_buffered]]).astype(np.int64)

    def add(self, rows: Rows, index: np.ndarray | None = None) -> None:
        """Append `rows` (or the rows at positions `index`); their ids must be ascending and above earlier ones."""
        if index is None:
            index = np.arange(len(rows.ids))
        position = 0
        while position < len(index):
            count = min(self.block_size - self.n_buffered, len(index) - position)
            source, target = index[position:position + count], slice(self.n_buffered, self.n_buffered + count)
            # mode="clip" lets np.take write straight into the buffer; the indices are valid anyway.
            np.take(rows.flux, source, axis=0, out=self.flux[target], mode="clip")
            np.take(rows.error, source, axis=0, out=self.error[target], mode="clip")
            if self.mask is not None:
                if rows.mask is None:
                    self.mask[target] = 0
                else:
                    np.take(rows.mask, source, axis=0, out=self.mask[target], mode="clip")
            self.labels[target] = rows.labels[source]
            self.ids[target] = rows.ids[source]
            self.n_buffered += count
            position += count
            self.fed_through = int(rows.ids[index[position - 1]])
            if self.n_buffered == self.block_size:
                self._write_block()

    def finish(self) -> None:
        """Write the last partial block and close the last shard."""
        if self.n_buffered:
            self._write_block()
        if self._handle is not None:
            self._close_shard()

    def _stored(self, n: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Return flux and error in the storage dtype, and the same values as float32."""
        flux, error = self.flux[:n], self.error[:n]
        if self.dtype == np.float32:
            return (flux, error), (flux, error)
        (flux16, flux_wide, flux_overflow), (error16, error_wide, error_overflow) = (
            round_to_float16(flux), round_to_float16(error))
        stored, widened = (flux16, error16), (flux_wide, error_wide)
        for name, exact, overflow in (("flux", flux, flux_overflow), ("error", error, error_overflow)):
            if overflow is not None:
                row, pixel = overflow
                raise ValueError(f"{name} value {exact[row, pixel]:.6g} of sample id {self.ids[row]} (pixel "
                                 f"{pixel}) exceeds the float16 range (max {np.finfo(np.float16).max:.0f}); "
                                 "write the shards with --dtype float32 or store flux in smaller units")
        self.float16_loss.update((flux, error), widened)
        return stored, widened

    def _write_block(self) -> None:
        n = self.n_buffered
        (flux, error), widened = self._stored(n)
        mask = None if self.mask is None else self.mask[:n]
        if self.stats is not None:
            # The statistics describe the stored values, and `widened` contains them as float32.
            self.stats.update(widened[0], widened[1], mask, self.labels[:n])
        if self._handle is None:
            self._open_shard()
        key = fmt.block_key(self.n_blocks_finished + len(self._open_blocks))
        arrays = {"flux": flux, "error": error, "mask": mask, "labels": self.labels[:n], "ids": self.ids[:n]}
        members = {}
        for role in fmt.ROLES:
            if arrays[role] is not None:
                members[role] = self._write_member(fmt.member_name(key, role), arrays[role])
        self._open_blocks.append({"key": key, "n_samples": n, "first_id": int(self.ids[0]),
                                  "last_id": int(self.ids[n - 1]), "members": members})
        self._open_ids.append(self.ids[:n].copy())
        self.n_buffered = 0
        if len(self._open_blocks) == self.blocks_per_shard:
            self._close_shard()

    def _write(self, data) -> None:
        self._handle.write(data)
        self._offset += len(data)

    def _write_member(self, name: str, array: np.ndarray) -> list[int]:
        array = np.ascontiguousarray(array)
        header = fmt.npy_header(array)
        size = len(header) + array.nbytes
        self._write(fmt.tar_header(name, size))
        data_offset = self._offset
        self._write(header)
        self._write(memoryview(array).cast("B"))
        self._write(fmt.padding_after(size))
        return [data_offset, size]

    def _paths(self) -> tuple[Path, Path]:
        name = fmt.shard_name(self.split, len(self.finished))
        return self.out_dir / name, self.out_dir / f".{name}{TMP_SUFFIX}"

    def _open_shard(self) -> None:
        _, tmp = self._paths()
        self._handle = open(tmp, "wb")
        self._offset = 0

    def _close_shard(self) -> None:
        final, tmp = self._paths()
        self._write(fmt.end_of_archive(self._offset))
        entry = {"name": final.name, "n_samples": sum(b["n_samples"] for b in self._open_blocks),
                 "size_bytes": self._offset, "sha256": None, "blocks": self._open_blocks}  # sha256: set by finalizer
        self.finished.append(entry)
        self.n_blocks_finished += len(self._open_blocks)
        self._open_blocks, self._open_ids = [], []
        self.snapshot = self._accumulator_state()
        logger.debug("closed shard %s: %d samples, %d bytes", final.name, entry["n_samples"], entry["size_bytes"])
        checkpoint = self.on_shard(self) if self.on_shard is not None else None
        handle, self._handle = self._handle, None
        self.finalizer.submit(handle, tmp, final, entry, checkpoint)

    def _accumulator_state(self) -> dict:
        state = {}
        if self.stats is not None:
            state.update({f"stats_{k}": np.array(v, copy=True) for k, v in self.stats.state().items()})
        if self.float16_loss is not None:
            state.update({k: np.array(v, copy=True) for k, v in self.float16_loss.state("f16").items()})
        return state

    def restore(self, finished: list[dict], snapshot: dict) -> None:
        """Take the closed shards and accumulator states of an interrupted run, before replaying its pending ids."""
        self.finished = list(finished)
        self.n_blocks_finished = sum(len(entry["blocks"]) for entry in finished)
        self.snapshot = dict(snapshot)
        if self.stats is not None and snapshot:
            self.stats.load_state({k[len("stats_"):]: v for k, v in snapshot.items() if k.startswith("stats_")})
        if self.float16_loss is not None and snapshot:
            self.float16_loss.load_state(snapshot, "f16")

    def abort(self) -> None:
        """Close the open shard file without renaming it (it stays under its temporary name)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
