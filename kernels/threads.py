"""Run a row kernel over contiguous blocks of rows on a small thread pool.

The Numba kernels release the GIL, so Python threads run them in parallel. Unlike Numba's own threading
layers this is safe after fork() and when several threads call the kernels at once: a forked child never
touches its parent's pool and starts a fresh one when it needs threads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

logger = logging.getLogger(__name__)

MIN_ROWS_PER_THREAD = 8  # below this, a thread costs more than it saves
THREADS_ENV_VAR = "SPECSTREAM_KERNEL_THREADS"

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_in_forked_child = False


def _reset_after_fork() -> None:
    """Forget the parent's pool in a forked child: its threads do not exist there."""
    global _lock, _pool, _pool_workers, _in_forked_child
    _lock = threading.Lock()
    _pool = None
    _pool_workers = 0
    _in_forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def default_num_threads() -> int:
    """Return the thread count used when a call gives none.

    The count is SPECSTREAM_KERNEL_THREADS where set. Otherwise a forked child, such as a DataLoader worker,
    gets 1 because its parent already runs one process per worker, and any other process gets the number of
    CPUs it may run on.
    """
    configured = os.environ.get(THREADS_ENV_VAR)
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{THREADS_ENV_VAR}={configured!r} is invalid; expected an integer >= 1")
        return int(configured)
    if _in_forked_child:
        return 1
    # Limitation: a spawned (not forked) DataLoader worker gets every CPU here; pass num_threads=1 there.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _get_pool(n_workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers < n_workers:
            # The old pool is not shut down: another thread may still be submitting to it. Its idle threads
            # exit once the last reference to it is gone.
            _pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="specstream-kernels")
            _pool_workers = n_workers
            logger.debug("started a kernel thread pool with %d workers", n_workers)
        return _pool


def run_in_row_blocks(process_rows: Callable[[int, int], None], n_rows: int, num_threads: int | None) -> None:
    """Call `process_rows(start, stop)` on contiguous blocks covering rows [0, n_rows), in parallel.

    Returns once every block is done, and re-raises the first exception that a block raised.
    """
    if num_threads is None:
        num_threads = default_num_threads()
    elif isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"invalid num_threads {num_threads!r}; expected an integer >= 1 or None")
    n_blocks = max(1, min(num_threads, n_rows // MIN_ROWS_PER_THREAD))
    if n_blocks == 1:
        process_rows(0, n_rows)
        return

    bounds = [n_rows * k // n_blocks for k in range(n_blocks + 1)]
    pool = _get_pool(n_blocks - 1)
    futures: list[Future] = [pool.submit(process_rows, bounds[k], bounds[k + 1]) for k in range(1, n_blocks)]
    try:
        process_rows(bounds[0], bounds[1])  # the calling thread takes the first block
    finally:
        wait(futures)  # other blocks still write to the output; never return before they finish
    for future in futures:
        future.result()
