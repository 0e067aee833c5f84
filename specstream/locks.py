"""A lock that a forked child, such as a DataLoader worker, gets back unlocked."""

from __future__ import annotations

import os
import threading


class ForkSafeLock:
    """A threading.Lock, replaced by a fresh one in a forked child.

    A thread of the parent may hold the lock at the moment of the fork. That thread does not exist in the
    child, so the child would wait for it forever.
    """

    def __init__(self):
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> ForkSafeLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()
