"""The kernels in forked DataLoader workers and in several processes that compile at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from specstream.kernels import make_inputs, make_inputs_reference
from specstream.kernels.threads import default_num_threads

N_PIXELS = 4096
ROWS_PER_ITEM = 16


def _arrays(n=128):
    rng = np.random.default_rng(4)
    flux = rng.uniform(0.05, 1.5, (n, N_PIXELS)).astype(np.float32)
    error = rng.uniform(0.07, 0.6, (n, N_PIXELS)).astype(np.float32)
    return flux, error, np.arange(n, dtype=np.int64) * 3 + 11


class _NoisyBlocks(Dataset):
    """Each item is one block of rows made into whitened inputs inside the worker process."""

    def __init__(self, num_threads):
        self.flux, self.error, self.ids = _arrays()
        self.num_threads = num_threads

    def __len__(self):
        return len(self.ids) // ROWS_PER_ITEM

    def __getitem__(self, index):
        rows = slice(index * ROWS_PER_ITEM, (index + 1) * ROWS_PER_ITEM)
        inputs = make_inputs(self.flux[rows], self.error[rows], mode="whitening", seed=5, epoch=2,
                             sample_ids=self.ids[rows], num_threads=self.num_threads)
        return index, torch.from_numpy(inputs), default_num_threads(), os.getpid()


@pytest.mark.parametrize("num_threads", [None, 2])
def test_forked_dataloader_workers_match_reference(num_threads):
    flux, error, ids = _arrays()
    # The parent uses its thread pool (and compiles) before the fork, as a training process would.
    make_inputs(flux, error, mode="whitening", seed=0, epoch=0, sample_ids=ids, num_threads=2)
    expected = make_inputs_reference(flux, error, mode="whitening", seed=5, epoch=2, sample_ids=ids)

    loader = DataLoader(_NoisyBlocks(num_threads), batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    seen = set()
    worker_pids = set()
    for index, inputs, worker_default_threads, pid in loader:
        rows = slice(index * ROWS_PER_ITEM, (index + 1) * ROWS_PER_ITEM)
        assert np.array_equal(inputs.numpy(), expected[rows]), index
        assert worker_default_threads == 1  # a forked worker defaults to one thread
        seen.add(index)
        worker_pids.add(pid)
    assert seen == set(range(len(ids) // ROWS_PER_ITEM))
    assert os.getpid() not in worker_pids


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from specstream.kernels import make_inputs
    rng = np.random.default_rng(4)
    flux = rng.uniform(0.05, 1.5, (32, 4096)).astype(np.float32)
    error = rng.uniform(0.07, 0.6, (32, 4096)).astype(np.float32)
    mask = np.zeros((32, 4096), dtype=np.int8)
    mask[3, :10] = 1
    out = make_inputs(flux, error, mode="whitening", seed=3, epoch=1,
                      sample_ids=np.arange(32), mask=mask, num_threads=2)
    np.save(sys.argv[1], out)
    """
)


@pytest.mark.slow
def test_processes_compiling_at_once(tmp_path: Path):
    cache_dir = tmp_path / "numba_cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    script = tmp_path / "compile_and_run.py"
    script.write_text(_COMPILE_SCRIPT)

    # Three processes find an empty cache and compile the same kernel at the same time.
    processes = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / f"out{k}.npy")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()
    assert list(cache_dir.rglob("*.nbi")), "no cache index was written"

    # A fourth process starts after the cache is written and loads from it.
    late = subprocess.run([sys.executable, str(script), str(tmp_path / "out3.npy")], env=env,
                          capture_output=True, timeout=600)
    assert late.returncode == 0, late.stderr.decode()

    rng = np.random.default_rng(4)
    flux = rng.uniform(0.05, 1.5, (32, N_PIXELS)).astype(np.float32)
    error = rng.uniform(0.07, 0.6, (32, N_PIXELS)).astype(np.float32)
    mask = np.zeros((32, N_PIXELS), dtype=np.int8)
    mask[3, :10] = 1
    expected = make_inputs_reference(flux, error, mode="whitening", seed=3, epoch=1, sample_ids=np.arange(32),
                                     mask=mask)
    for k in range(4):
        assert np.array_equal(np.load(tmp_path / f"out{k}.npy"), expected), k
