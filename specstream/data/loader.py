"""SpectraLoader: batches of (inputs, labels, sample ids) from a shard set, correct under DDP, resumable.

Windows (see `schedule`) are built whole and cut into batches in the main process. With num_workers=0,
a pool of `num_threads` threads in this process builds them ahead of use. With worker processes, worker w
of num_workers builds windows w, w + num_workers, ... and torch's DataLoader returns them round-robin.
Either way the windows arrive in index order, so the batches of a rank are the same for every num_workers
and num_threads, and an (epoch, batches_done) state pins down the position exactly.

Limitation: worker processes put each window into fresh shared memory, which costs more than the window's
work on some machines (see benchmarks/bench_loader.py); num_workers=0 with threads avoids that copy.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from specstream.data.blocks import READ_MODES
from specstream.data.manifest import ShardSource, SplitLayout, read_manifest, resolve_source, stats_arrays
from specstream.data.pipeline import WindowMemory, default_num_threads, iter_windows
from specstream.data.schedule import EpochSchedule
from specstream.data.window import ON_CORRUPT_CHOICES, Batch, TransformSpec, WindowItem, fixed_or_training_epoch
from specstream.kernels import validate_mode

logger = logging.getLogger(__name__)

STATE_KEYS = ("split", "seed", "rank", "world_size", "batch_size", "n_samples", "shuffle", "drop_last",
              "window_rows", "unit_rows")


class _WindowDataset(IterableDataset):
    """Yields this rank's windows from `start_window` on, split across DataLoader worker processes."""

    def __init__(self, source: ShardSource, schedule: EpochSchedule, transform: TransformSpec, *, start_window: int,
                 num_threads: int, prefetch: int, on_corrupt: str, cache_dir: Path | None, read_mode: str):
        super().__init__()
        self.source, self.schedule, self.transform = source, schedule, transform
        self.start_window, self.num_threads, self.prefetch = start_window, num_threads, prefetch
        self.on_corrupt, self.cache_dir, self.read_mode = on_corrupt, cache_dir, read_mode

    def __iter__(self) -> Iterator[WindowItem]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        windows = range(self.start_window + worker, self.schedule.n_windows, num_workers)
        return iter_windows(self.source, self.schedule, self.transform, windows=windows,
                            num_threads=self.num_threads, prefetch=self.prefetch, on_corrupt=self.on_corrupt,
                            cache_dir=self.cache_dir, memory="shared" if info is not None else "plain",
                            read_mode=self.read_mode)


class SpectraLoader:
    """Iterate over batches of one split of a shard set, for one rank of a (possibly distributed) job.

    Args:
        source: shard directory, manifest path, URL template with "{name}", directory URL, or a list of
            the manifest's and the shards' locations (see `specstream.data.manifest`).
        split: "train", "val" or "test".
        batch_size: samples per batch on this rank.
        rank, world_size: this process among all training processes.
        num_workers: DataLoader worker processes; 0 builds windows in this process.
        seed: seed of the shuffle order (and of the noise unless `noise_seed` is given).
        mode, noise_level: input transform of `specstream.kernels.make_inputs`.
        targets: label columns returned in `Batch.labels`, in this order.
        pin_memory: put batches in page-locked memory (ignored without CUDA).
        drop_last: default True for the training split and False otherwise; see `schedule`.
        on_corrupt: "raise" stops at a corrupt shard with an error naming it. "skip" replaces its samples
            by other samples of the same window when shuffling (the training split's default), and marks
            them as padding (sample id -1) otherwise (val and test). `n_skipped` counts them.
        shuffle: default True for the training split only.
        shuffle_window: samples shuffled together, rounded up to a multiple of batch_size. It sets the
            memory: each output window in flight takes shuffle_window * n_pixels * 4 bytes (128 MiB with the
            defaults). Streamed shards without cache_dir add shuffle_window * n_pixels * 2 * itemsize bytes
            of read buffers per building thread, while local shards need only a few MiB.
        unit_rows: consecutive samples kept together when the split is permuted.
        max_samples: use only the first max_samples samples of the split (ascending sample id).
        noise_seed: seed of the noise draw; default `seed`.
        cache_dir: copy shards of a non-local source here on first use and read the copies.
        num_threads: threads that build windows in each process (this one when num_workers is 0, else each
            worker); default min(8, CPUs of this process) with num_workers=0, else 1.
        prefetch_factor: windows each thread prepares ahead.
        timeout_s: seconds to wait for a window (from a worker or a thread) before raising; 0 waits forever.
        multiprocessing_context: start method of the worker processes ("fork", "spawn", "forkserver");
            None uses the process default. Workers start anew every epoch, and spawned workers import
            torch first, so "fork" starts fastest where it is safe (the workers never touch CUDA).
        read_mode: how local shard files are read. "mmap" (default) lets the kernels read them through
            read-only memory maps, with no copy out of the page cache. "pread" copies a few rows at a time
            into a buffer. Use it where mapping files is unwise, such as a shared file system that may fail:
            a failed read of a mapped page kills the process with SIGBUS instead of raising an error.

    Padding: without drop_last each rank gets ceil(N / world_size) samples. The training split wraps around
    (repeats samples from the start of the epoch's order); val and test append padding rows with sample id
    -1, NaN labels and zero inputs. On one rank val/test have no padding and keep every sample in ascending
    sample-id order.
    """

    def __init__(self, source, split: str, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, seed: int = 0, mode: str = "flux_only", noise_level: float = 1.0,
                 targets: tuple = ("log_g",), pin_memory: bool = False, drop_last: bool | None = None,
                 on_corrupt: str = "raise", shuffle: bool | None = None, shuffle_window: int = 8192,
                 unit_rows: int = 32, max_samples: int | None = None, noise_seed: int | None = None,
                 cache_dir: str | Path | None = None, num_threads: int | None = None, prefetch_factor: int = 2,
                 timeout_s: float = 0.0, multiprocessing_context: str | None = None, read_mode: str = "mmap"):
        _check_int("batch_size", batch_size, 1)
        _check_int("world_size", world_size, 1)
        _check_int("num_workers", num_workers, 0)
        _check_int("shuffle_window", shuffle_window, 1)
        _check_int("unit_rows", unit_rows, 1)
        _check_int("prefetch_factor", prefetch_factor, 1)
        num_threads = default_num_threads(num_workers) if num_threads is None else num_threads
        _check_int("num_threads", num_threads, 1)
        _check_int("seed", seed, 0)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
        if on_corrupt not in ON_CORRUPT_CHOICES:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT_CHOICES}, got {on_corrupt!r}")
        if read_mode not in READ_MODES:
            raise ValueError(f"read_mode must be one of {READ_MODES}, got {read_mode!r}")
        validate_mode(mode)
        self.source = resolve_source(source)
        self.manifest = read_manifest(self.source)
        self.layout = SplitLayout.from_manifest(self.manifest, split, max_samples)
        missing = [name for name in targets if name not in self.layout.label_names]
        if isinstance(targets, str) or not targets or missing:
            raise ValueError(f"targets must be a non-empty tuple of label names from {self.layout.label_names}, "
                             f"got {targets!r}")
        self.split, self.batch_size, self.rank, self.world_size = split, batch_size, rank, world_size
        self.num_workers, self.seed, self.on_corrupt = num_workers, seed, on_corrupt
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.drop_last = split == "train" if drop_last is None else bool(drop_last)
        self.window_rows = math.ceil(shuffle_window / batch_size) * batch_size
        self.unit_rows = unit_rows
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.num_threads, self.prefetch_factor, self.timeout_s = num_threads, prefetch_factor, float(timeout_s)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.multiprocessing_context = multiprocessing_context
        self.read_mode = read_mode
        if self.source.local_dir is None and self.cache_dir is None and self.shuffle:
            logger.warning("%s is not local and has no cache_dir: each window streams its shards from the start "
                           "up to the blocks it needs; pass cache_dir to copy each shard once", self.source)
        self._transform_args = dict(mode=mode, noise_level=float(noise_level),
                                    noise_seed=seed if noise_seed is None else noise_seed,
                                    stats=stats_arrays(self.manifest) if mode == "standardized" else None,
                                    target_columns=tuple(self.layout.label_names.index(t) for t in targets),
                                    label_names=tuple(self.layout.label_names))
        self.epoch = 0
        self.n_skipped = 0  # samples of corrupt shards replaced or marked, counted as batches arrive
        self._batches_done = 0
        self._resume_at: int | None = None
        self._schedule = self._make_schedule()  # validates the sizes now, not at the first iteration
        # In-process windows reuse this memory across epochs: queued windows, one being cut, one still held.
        self._window_memory = WindowMemory(self.source, self.layout, self.window_rows, max_buffer_sets=num_threads,
                                           max_outputs=num_threads * prefetch_factor + 2, cache_dir=self.cache_dir,
                                           read_mode=read_mode)

    def _make_schedule(self) -> EpochSchedule:
        return EpochSchedule(layout=self.layout, batch_size=self.batch_size, rank=self.rank,
                             world_size=self.world_size, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
                             drop_last=self.drop_last, pad_mode="wrap" if self.shuffle else "mark",
                             window_rows=self.window_rows, unit_rows=self.unit_rows)

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return self._schedule.n_batches

    @property
    def n_samples(self) -> int:
        """Samples in the split (after max_samples)."""
        return self.layout.n_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration; a pending resume position survives only for the same epoch."""
        _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._resume_at = None
            self._batches_done = 0
        self.epoch = epoch
        self._schedule = self._make_schedule()

    def state_dict(self) -> dict:
        """Return the position: epoch and batches handed out so far in it, plus the settings it depends on."""
        return {"epoch": self.epoch, "batches_done": self._batches_done, "split": self.split, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "batch_size": self.batch_size,
                "n_samples": self.n_samples, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "window_rows": self.window_rows, "unit_rows": self.unit_rows}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict(): the next iteration yields the batches that followed it."""
        current = self.state_dict()
        mismatched = {key: (state.get(key), current[key]) for key in STATE_KEYS if state.get(key) != current[key]}
        if mismatched:
            details = ", ".join(f"{key}: saved {saved!r}, now {now!r}" for key, (saved, now) in mismatched.items())
            raise ValueError(f"loader state does not match this loader ({details}); resume with the same "
                             "settings, or start the epoch afresh without load_state_dict")
        batches_done = state["batches_done"]
        _check_int("batches_done", batches_done, 0)
        self.set_epoch(int(state["epoch"]))
        if batches_done > len(self):
            raise ValueError(f"batches_done {batches_done} exceeds the {len(self)} batches of an epoch")
        self._resume_at = batches_done
        self._batches_done = batches_done

    def __iter__(self) -> Iterator[Batch]:
        start = self._resume_at or 0
        self._resume_at = None
        schedule = self._schedule
        transform = TransformSpec(epoch=fixed_or_training_epoch(self.shuffle, self.epoch), **self._transform_args)
        first_window = start // schedule.batches_per_window
        prefetch = self.num_threads * self.prefetch_factor
        if self.num_workers == 0:
            loader = iter_windows(self.source, schedule, transform,
                                  windows=range(first_window, schedule.n_windows), num_threads=self.num_threads,
                                  prefetch=prefetch, on_corrupt=self.on_corrupt, cache_dir=self.cache_dir,
                                  memory="pinned" if self.pin_memory else "plain", read_mode=self.read_mode,
                                  timeout_s=self.timeout_s, window_memory=self._window_memory)
        else:
            dataset = _WindowDataset(self.source, schedule, transform, start_window=first_window,
                                     num_threads=self.num_threads, prefetch=self.num_threads,
                                     on_corrupt=self.on_corrupt, cache_dir=self.cache_dir,
                                     read_mode=self.read_mode)
            loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                prefetch_factor=self.prefetch_factor, timeout=self.timeout_s,
                                persistent_workers=False, multiprocessing_context=self.multiprocessing_context)
        self._batches_done = start
        expected_window = first_window
        for item in loader:
            if item.index != expected_window:
                raise RuntimeError(f"window {item.index} arrived where window {expected_window} was due")
            expected_window += 1
            self.n_skipped += item.n_skipped
            n_rows = len(item.batch.sample_ids)
            for j in range(math.ceil(n_rows / self.batch_size)):
                batch_index = item.index * schedule.batches_per_window + j
                if batch_index < start:
                    continue
                self._batches_done = batch_index + 1
                yield item.batch.slice(j * self.batch_size, min((j + 1) * self.batch_size, n_rows))


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
