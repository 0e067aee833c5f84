"""SpectraLoader under real torch.distributed (gloo) processes on this machine.

Every rank runs a collective per batch, so ranks with unequal batch counts would hang. The process group
timeout and the join deadline turn such a hang into a test failure.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from specstream.data import SpectraLoader, load_split_arrays
from specstream.shards import ShardOptions, write_shards
from tests.conftest import make_arrays, make_labels, write_survey_file

pytestmark = pytest.mark.distributed

GROUP_TIMEOUT_S = 60
JOIN_DEADLINE_S = 240
SMALL = dict(shuffle_window=40, unit_rows=4)


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory):
    """The same 220 train samples in 5 shards of 48, 48, 48, 48, 28 samples, and in one shard."""
    root = tmp_path_factory.mktemp("ddp")
    flux, error, wave = make_arrays(263, 32, seed=3)
    path = write_survey_file(root / "in.h5", flux, error, wave, make_labels(263, seed=3))
    sets = {}
    for name, shard_size_mb in (("five_uneven_shards", 0.0125), ("one_shard", 100.0)):
        write_shards([path], root / name, ShardOptions(test_size=20, val_size=23, block_size=16,
                                                       shard_size_mb=shard_size_mb, fsync=False))
        sets[name] = root / name
    return sets


def run_epoch(loader: SpectraLoader, limit: int | None = None) -> list[np.ndarray]:
    """Iterate like a training loop, with one all_reduce per batch, and return the sample ids of each batch."""
    ids = []
    for batch in loader:
        count = torch.tensor([len(batch.sample_ids)], dtype=torch.int64)
        dist.all_reduce(count)
        ids.append(batch.sample_ids.numpy().copy())
        if limit is not None and len(ids) == limit:
            break
    return ids


def rank_main(rank: int, world_size: int, rendezvous: str, shard_dir: str, num_workers: int, context: str,
              out: str) -> None:
    # A file rendezvous needs no free TCP port, so parallel test runs cannot collide on one.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        settings = dict(batch_size=8, rank=rank, world_size=world_size, num_workers=num_workers, seed=1,
                        timeout_s=GROUP_TIMEOUT_S, multiprocessing_context=context if num_workers else None,
                        **SMALL)
        result = {}
        for split in ("train", "test"):
            loader = SpectraLoader(shard_dir, split, **settings)
            loader.set_epoch(1)
            result[split] = {"len": len(loader), "ids": [b.tolist() for b in run_epoch(loader)]}

        # Resume on every rank after 3 batches of epoch 1; the next batches must match the full epoch.
        first = SpectraLoader(shard_dir, "train", **settings)
        first.set_epoch(1)
        run_epoch(first, limit=3)
        resumed = SpectraLoader(shard_dir, "train", **settings)
        resumed.load_state_dict(first.state_dict())
        result["resumed_train"] = [b.tolist() for b in run_epoch(resumed)]

        gathered = [None] * world_size
        dist.all_gather_object(gathered, result)
        if rank == 0:
            with open(out, "w") as handle:
                json.dump(gathered, handle)
    finally:
        dist.destroy_process_group()


def run_ranks(world_size: int, shard_dir, num_workers: int, out, worker_context: str = "fork") -> list[dict]:
    """Run `world_size` spawned ranks; their DataLoader workers start with `worker_context`."""
    rendezvous = out.with_suffix(".rendezvous")
    context = mp.start_processes(rank_main, args=(world_size, str(rendezvous), str(shard_dir), num_workers,
                                                  worker_context, str(out)),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + JOIN_DEADLINE_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks did not finish within {JOIN_DEADLINE_S} s (a hang)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return json.loads(out.read_text())


def check_results(results: list[dict], shard_dir, world_size: int) -> None:
    train_ids = set(load_split_arrays(shard_dir, "train").ids.tolist())
    test_ids = load_split_arrays(shard_dir, "test").ids

    # Training split: equal batch counts, full batches, disjoint ranks, remainder below world_size * batch_size.
    lengths = [r["train"]["len"] for r in results]
    assert len(set(lengths)) == 1
    assert [len(r["train"]["ids"]) for r in results] == lengths
    per_rank = [np.concatenate(r["train"]["ids"]) for r in results]
    everything = np.concatenate(per_rank)
    assert all(len(batch) == 8 for r in results for batch in r["train"]["ids"])
    assert len(np.unique(everything)) == len(everything)
    assert set(everything.tolist()) <= train_ids
    assert len(train_ids) - len(everything) < world_size * 8

    # Test split: equal batch counts, every sample exactly once, padding marked with -1.
    assert len({r["test"]["len"] for r in results}) == 1
    test_everything = np.concatenate([np.concatenate(r["test"]["ids"]) for r in results])
    np.testing.assert_array_equal(np.sort(test_everything[test_everything >= 0]), test_ids)
    assert np.count_nonzero(test_everything == -1) == world_size * -(-20 // world_size) - 20

    # Resume: after 3 batches each rank continues exactly where the uninterrupted epoch went on.
    for r in results:
        assert r["resumed_train"] == r["train"]["ids"][3:]


@pytest.mark.parametrize("world_size, num_workers, shard_set", [
    (2, 0, "five_uneven_shards"), (2, 2, "five_uneven_shards"), (3, 0, "five_uneven_shards"),
    (3, 2, "five_uneven_shards"), (3, 2, "one_shard"),
])
def test_ranks_under_gloo(tmp_path, shard_sets, world_size, num_workers, shard_set):
    results = run_ranks(world_size, shard_sets[shard_set], num_workers, tmp_path / "result.json")
    check_results(results, shard_sets[shard_set], world_size)


@pytest.mark.slow
def test_ranks_under_gloo_spawned_workers(tmp_path, shard_sets):
    shard_dir = shard_sets["five_uneven_shards"]
    results = run_ranks(2, shard_dir, 2, tmp_path / "result.json", worker_context="spawn")
    check_results(results, shard_dir, 2)
