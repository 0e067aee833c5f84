"""Build windows ahead of use on a thread pool, reusing their memory across windows and epochs.

Fresh memory is expensive to write the first time (the kernel maps and zeroes every page), so the read
buffers and the inputs arrays of windows are kept and reused. A loader keeps one WindowMemory for all its
epochs when it builds windows in its own process.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from specstream.data.blocks import BlockReader
from specstream.data.manifest import ShardSource, SplitLayout
from specstream.data.schedule import EpochSchedule
from specstream.data.window import ReadBuffers, TransformSpec, WindowItem, build_window, make_row_transform


MAX_DEFAULT_THREADS = 8  # at about 0.1M noisy spectra/s per thread (2-core machine), an estimated 0.8M/s


def default_num_threads(num_workers: int) -> int:
    """Return the window-building threads per process: min(8, CPUs of this process) in-process, 1 per worker."""
    if num_workers:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_THREADS, cpus)


class WindowMemory:
    """Readers and read buffers (ReadBuffers) for building windows, and float32 window inputs, kept for reuse.

    Keeping the readers keeps their memory maps, so the page tables of the shard files are built once per
    process rather than once per epoch.

    A window's inputs tensor wraps a view of one kept array, and the view keeps a reference to the array.
    Once the consumer has dropped every batch of the window, only this object refers to the array, and its
    reference count shows that it is free. Batches the consumer keeps are therefore never overwritten: new
    arrays are allocated instead, and at most `max_outputs` arrays are kept.
    """

    def __init__(self, source: ShardSource, layout: SplitLayout, window_rows: int, *, max_buffer_sets: int,
                 max_outputs: int, cache_dir: Path | None = None, read_mode: str = "mmap"):
        self.source, self.layout, self.window_rows = source, layout, window_rows
        self.cache_dir, self.read_mode = cache_dir, read_mode
        self.max_buffer_sets, self.max_outputs = max_buffer_sets, max_outputs
        self._buffer_sets: list[ReadBuffers] = []
        self._outputs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take_buffers(self) -> ReadBuffers:
        """Return a reader and read buffers for building one window on this thread."""
        with self._lock:
            if self._buffer_sets:
                return self._buffer_sets.pop()
        reader = BlockReader(self.source, self.layout, self.cache_dir, self.read_mode)
        return ReadBuffers(reader, self.window_rows)

    def give_buffers(self, buffer_set: ReadBuffers) -> None:
        """Return buffers from take_buffers for reuse."""
        with self._lock:
            if len(self._buffer_sets) < self.max_buffer_sets:
                self._buffer_sets.append(buffer_set)
                return
        buffer_set.reader.close()

    def close(self) -> None:
        """Close the kept readers (their files and memory maps)."""
        with self._lock:
            buffer_sets, self._buffer_sets = self._buffer_sets, []
        for buffer_set in buffer_sets:
            buffer_set.reader.close()

    def take_output(self, n_rows: int) -> np.ndarray:
        """Return a float32 (n_rows, n_pixels) view of a free kept array, or of a new one."""
        with self._lock:
            for index in range(len(self._outputs)):
                if sys.getrefcount(self._outputs[index]) == 2:  # the list and getrefcount's own argument
                    return self._outputs[index][:n_rows]
            array = np.empty((self.window_rows, self.layout.n_pixels), dtype=np.float32)
            if len(self._outputs) < self.max_outputs:
                self._outputs.append(array)
            return array[:n_rows]


def iter_windows(source: ShardSource, schedule: EpochSchedule, transform: TransformSpec, *, windows: range,
                 num_threads: int, prefetch: int, on_corrupt: str, cache_dir: Path | None, memory: str,
                 read_mode: str = "mmap", timeout_s: float = 0.0,
                 window_memory: WindowMemory | None = None) -> Iterator[WindowItem]:
    """Build the windows of `windows` in order, up to `prefetch` ahead on `num_threads` threads.

    Reading and the Numba kernels release the GIL, so the threads run in parallel with each other and with
    the consumer. A building thread takes a reader and buffers from `window_memory` for each window, and
    with plain memory the inputs go to its arrays. Without a `window_memory`, a new one serves this call
    and is closed at its end. A window that takes longer than `timeout_s` seconds (when > 0) to arrive
    raises TimeoutError.
    """
    owned = window_memory is None
    if owned:
        # Windows in flight: `prefetch` queued, one being cut into batches, one whose last batch is still held.
        window_memory = WindowMemory(source, schedule.layout, schedule.window_rows, max_buffer_sets=num_threads,
                                     max_outputs=prefetch + 2, cache_dir=cache_dir, read_mode=read_mode)
    row_transform = make_row_transform(transform, schedule.layout.n_pixels)

    def build(index: int) -> WindowItem:
        window = schedule.window(index)
        inputs_array = window_memory.take_output(window.n_rows) if memory == "plain" else None
        buffers = window_memory.take_buffers()
        try:
            return build_window(window, row_transform, transform, buffers=buffers, on_corrupt=on_corrupt,
                                replace_unreadable=schedule.shuffle, memory=memory, inputs_array=inputs_array)
        finally:
            window_memory.give_buffers(buffers)

    try:
        if num_threads == 1 and prefetch <= 1:
            yield from (build(index) for index in windows)
        else:
            yield from _prefetched(build, windows, num_threads, prefetch, timeout_s, schedule.layout.split)
    finally:
        if owned:
            window_memory.close()


def _prefetched(build, windows: range, num_threads: int, prefetch: int, timeout_s: float,
                split: str) -> Iterator[WindowItem]:
    """Yield build(index) for each window in order, keeping `prefetch` builds queued on a thread pool."""
    pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="specstream-window")
    pending: collections.deque = collections.deque()
    upcoming = iter(windows)
    failed = False
    try:
        for index in itertools.islice(upcoming, prefetch):
            pending.append(pool.submit(build, index))
        while pending:
            future = pending.popleft()
            try:
                item = future.result(timeout=timeout_s or None)
            except concurrent.futures.TimeoutError as exc:
                raise TimeoutError(f"a window of {split!r} was not built within {timeout_s} s; check that the "
                                   "shard source responds, or raise timeout_s") from exc
            for index in itertools.islice(upcoming, 1):
                pending.append(pool.submit(build, index))
            yield item
    except GeneratorExit:  # the consumer stopped early: the queued builds finish normally
        raise
    except BaseException:
        failed = True
        raise
    finally:
        # After a failed or stalled window, do not wait for builds that may never finish. Their readers
        # close their files when the threads let go of them.
        pool.shutdown(wait=not failed, cancel_futures=True)
