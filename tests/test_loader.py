"""SpectraLoader on one process: coverage, order, determinism, resume, corrupt shards, sources."""

from __future__ import annotations

import os
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from specstream.data import CorruptShardError, SpectraLoader, load_split_arrays, read_manifest
from specstream.data.blocks import BlockReader
from specstream.data.manifest import SplitLayout, resolve_source, stats_arrays
from specstream.data.pipeline import WindowMemory
from specstream.data.schedule import EpochSchedule
from specstream.kernels import FIXED_EPOCH, make_inputs
from specstream.shards import ShardOptions, write_shards
from specstream.shards import format as fmt
from tests.conftest import make_arrays, make_labels, write_survey_file

N_PIXELS = 32
SMALL = dict(shuffle_window=40, unit_rows=4)  # several windows and units even on a tiny set


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """Shards of two files (150 + 113 spectra): 220 train, 23 val, 20 test, blocks of 16, 3 blocks per shard."""
    root = tmp_path_factory.mktemp("shards")
    paths = []
    for i, n in enumerate((150, 113)):
        flux, error, wave = make_arrays(n, N_PIXELS, seed=10 + i)
        paths.append(write_survey_file(root / f"in{i}.h5", flux, error, wave, make_labels(n, seed=10 + i)))
    options = ShardOptions(test_size=20, val_size=23, block_size=16, shard_size_mb=0.0125, fsync=False)
    write_shards(paths, root / "shards", options)
    return root / "shards"


def collect(loader, limit=None):
    """Return the batches of one pass as lists of numpy arrays."""
    batches = []
    for batch in loader:
        batches.append({"inputs": batch.inputs.numpy().copy(), "labels": batch.labels.numpy().copy(),
                        "ids": batch.sample_ids.numpy().copy()})
        if limit is not None and len(batches) == limit:
            break
    return batches


def ids_of(batches):
    return np.concatenate([b["ids"] for b in batches])


def test_train_epoch_covers_split_once(shard_dir):
    train_ids = load_split_arrays(shard_dir, "train").ids
    loader = SpectraLoader(shard_dir, "train", batch_size=16, **SMALL)
    batches = collect(loader)
    assert len(batches) == len(loader) == 220 // 16
    assert all(len(b["ids"]) == 16 for b in batches)
    ids = ids_of(batches)
    assert len(np.unique(ids)) == len(ids)
    assert set(ids) <= set(train_ids)
    assert len(set(train_ids) - set(ids)) == 220 - 13 * 16


def test_train_order_changes_each_epoch(shard_dir):
    loader = SpectraLoader(shard_dir, "train", batch_size=16, **SMALL)
    first = ids_of(collect(loader))
    loader.set_epoch(1)
    second = ids_of(collect(loader))
    loader.set_epoch(0)
    again = ids_of(collect(loader))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_train_order_is_shuffled(shard_dir):
    ids = ids_of(collect(SpectraLoader(shard_dir, "train", batch_size=16, **SMALL)))
    positions = np.arange(len(ids))
    correlation = np.corrcoef(positions, ids)[0, 1]
    assert abs(correlation) < 0.3


@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_labels_and_inputs_match_samples(shard_dir, read_mode):
    arrays = load_split_arrays(shard_dir, "train")
    row_of = {int(i): k for k, i in enumerate(arrays.ids)}
    loader = SpectraLoader(shard_dir, "train", batch_size=16, targets=("log_g", "T_eff"), seed=3,
                           read_mode=read_mode, **SMALL)
    batch = next(iter(loader))
    rows = [row_of[int(i)] for i in batch.sample_ids]
    np.testing.assert_allclose(batch.labels.numpy()[:, 0], arrays.labels["log_g"].to_numpy()[rows], rtol=1e-6)
    np.testing.assert_allclose(batch.labels.numpy()[:, 1], arrays.labels["T_eff"].to_numpy()[rows], rtol=1e-6)
    np.testing.assert_allclose(batch.extra["mag"].numpy(), arrays.labels["mag"].to_numpy()[rows], rtol=1e-6)
    expected = make_inputs(arrays.flux[rows], arrays.error[rows], mode="flux_only", seed=3, epoch=0,
                           sample_ids=batch.sample_ids.numpy())
    np.testing.assert_array_equal(batch.inputs.numpy(), expected)


@pytest.mark.parametrize("split, read_mode", [("val", "mmap"), ("test", "mmap"), ("val", "pread")])
def test_eval_order_complete_and_fixed_noise(shard_dir, split, read_mode):
    arrays = load_split_arrays(shard_dir, split)
    loader = SpectraLoader(shard_dir, split, batch_size=8, read_mode=read_mode, **SMALL)
    batches = collect(loader)
    assert len(batches) == len(loader) == -(-len(arrays.ids) // 8)
    np.testing.assert_array_equal(ids_of(batches), arrays.ids)
    expected = make_inputs(arrays.flux, arrays.error, mode="flux_only", seed=0, epoch=FIXED_EPOCH,
                           sample_ids=arrays.ids)
    np.testing.assert_array_equal(np.concatenate([b["inputs"] for b in batches]), expected)
    loader.set_epoch(5)
    np.testing.assert_array_equal(np.concatenate([b["inputs"] for b in collect(loader)]), expected)


@pytest.mark.parametrize("num_workers, num_threads", [(0, 1), (0, 3), (2, 1), (1, 2)])
def test_batches_identical_for_any_worker_count(shard_dir, num_workers, num_threads):
    reference = collect(SpectraLoader(shard_dir, "train", batch_size=16, seed=4, num_threads=1, **SMALL))
    loader = SpectraLoader(shard_dir, "train", batch_size=16, seed=4, num_workers=num_workers,
                           num_threads=num_threads, timeout_s=60, **SMALL)
    batches = collect(loader)
    assert len(batches) == len(reference)
    for ours, theirs in zip(batches, reference):
        np.testing.assert_array_equal(ours["ids"], theirs["ids"])
        np.testing.assert_array_equal(ours["inputs"], theirs["inputs"])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_disjoint_and_equal_length(shard_dir, world_size, drop_last):
    loaders = [SpectraLoader(shard_dir, "train", batch_size=8, rank=r, world_size=world_size, drop_last=drop_last,
                             **SMALL) for r in range(world_size)]
    lengths = {len(loader) for loader in loaders}
    per_rank = [ids_of(collect(loader)) for loader in loaders]
    assert len(lengths) == 1
    assert {len(ids) for ids in per_rank} == {len(per_rank[0])}
    assert len(per_rank[0]) == (220 // world_size // 8 * 8 if drop_last else -(-220 // world_size))
    everything = np.concatenate(per_rank)
    if drop_last:
        assert len(np.unique(everything)) == len(everything)
        assert 220 - len(everything) < world_size * 8
    else:
        assert set(everything) == set(load_split_arrays(shard_dir, "train").ids)
        assert len(everything) - 220 < world_size


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_eval_ranks_padding_marked(shard_dir, world_size):
    test_ids = load_split_arrays(shard_dir, "test").ids
    loaders = [SpectraLoader(shard_dir, "test", batch_size=3, rank=r, world_size=world_size, **SMALL)
               for r in range(world_size)]
    assert len({len(loader) for loader in loaders}) == 1
    batches = [collect(loader) for loader in loaders]
    everything = np.concatenate([ids_of(b) for b in batches])
    real = everything[everything >= 0]
    np.testing.assert_array_equal(np.sort(real), test_ids)
    assert np.count_nonzero(everything == -1) == world_size * -(-20 // world_size) - 20
    for rank_batches in batches:
        for batch in rank_batches:
            padding = batch["ids"] == -1
            assert np.all(batch["inputs"][padding] == 0)
            assert np.all(np.isnan(batch["labels"][padding]))


@pytest.mark.parametrize("stop_after", [1, 2, 5, 10])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_exact(shard_dir, stop_after, num_workers):
    settings = dict(batch_size=8, seed=9, num_workers=num_workers, timeout_s=60, **SMALL)
    uninterrupted = SpectraLoader(shard_dir, "train", **settings)
    uninterrupted.set_epoch(2)
    expected = collect(uninterrupted)

    first = SpectraLoader(shard_dir, "train", **settings)
    first.set_epoch(2)
    collect(first, limit=stop_after)
    state = first.state_dict()
    assert state["epoch"] == 2
    assert state["batches_done"] == stop_after

    resumed = SpectraLoader(shard_dir, "train", **{**settings, "num_workers": 2 - num_workers})
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop calls set_epoch again; the resume position survives
    rest = collect(resumed)
    assert len(rest) == len(expected) - stop_after
    for ours, theirs in zip(rest, expected[stop_after:]):
        np.testing.assert_array_equal(ours["ids"], theirs["ids"])
        np.testing.assert_array_equal(ours["inputs"], theirs["inputs"])


def test_state_of_other_loader_rejected(shard_dir):
    state = SpectraLoader(shard_dir, "train", batch_size=8, **SMALL).state_dict()
    other = SpectraLoader(shard_dir, "train", batch_size=16, **SMALL)
    with pytest.raises(ValueError, match="batch_size: saved 8, now 16"):
        other.load_state_dict(state)


def test_set_epoch_other_epoch_drops_resume(shard_dir):
    loader = SpectraLoader(shard_dir, "train", batch_size=8, **SMALL)
    state = {**loader.state_dict(), "batches_done": 3}
    loader.load_state_dict(state)
    loader.set_epoch(1)
    assert len(collect(loader)) == len(loader)


def test_max_samples(shard_dir):
    loader = SpectraLoader(shard_dir, "val", batch_size=4, max_samples=10)
    ids = ids_of(collect(loader))
    np.testing.assert_array_equal(ids, load_split_arrays(shard_dir, "val").ids[:10])
    arrays = load_split_arrays(shard_dir, "val", max_samples=10, dtype="float64")
    assert arrays.flux.dtype == np.float64
    np.testing.assert_array_equal(arrays.ids, ids)


def test_standardized_mode_uses_manifest_stats(shard_dir):
    manifest = read_manifest(shard_dir)
    arrays = load_split_arrays(shard_dir, "test")
    batch = next(iter(SpectraLoader(shard_dir, "test", batch_size=20, mode="standardized")))
    stats = {key: np.asarray(manifest["stats"][key], np.float32)
             for key in ("flux_mean", "flux_std", "error_mean", "error_std")}
    expected = make_inputs(arrays.flux, arrays.error, mode="standardized", seed=0, epoch=FIXED_EPOCH,
                           sample_ids=arrays.ids, stats=stats)
    np.testing.assert_array_equal(batch.inputs.numpy(), expected)


def test_readers_share_memory_maps(shard_dir):
    layout = SplitLayout.from_manifest(read_manifest(shard_dir), "train")
    first, second = (BlockReader(resolve_source(shard_dir), layout, read_mode="mmap") for _ in range(2))
    view = first.member_view(0, 0, "flux")
    assert not view.flags.writeable
    other = second.member_view(0, 0, "flux")
    assert other.ctypes.data == view.ctypes.data  # one map of the file for both readers
    first.close()
    np.testing.assert_array_equal(view, second.member_view(0, 0, "flux"))  # still mapped for the other reader


def test_argument_errors(shard_dir):
    with pytest.raises(ValueError, match="targets must be a non-empty tuple of label names"):
        SpectraLoader(shard_dir, "train", batch_size=8, targets=("logg",))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        SpectraLoader(shard_dir, "dev", batch_size=8)
    with pytest.raises(ValueError, match="rank must be an integer in"):
        SpectraLoader(shard_dir, "train", batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than world_size \\* batch_size = 2 \\* 200"):
        SpectraLoader(shard_dir, "train", batch_size=200, world_size=2)
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        SpectraLoader(shard_dir, "train", batch_size=8, on_corrupt="ignore")
    with pytest.raises(ValueError, match="invalid input mode"):
        SpectraLoader(shard_dir, "train", batch_size=8, mode="noisy")
    with pytest.raises(ValueError, match="read_mode must be one of \\('mmap', 'pread'\\), got 'mapped'"):
        SpectraLoader(shard_dir, "train", batch_size=8, read_mode="mapped")


def test_manifest_errors(tmp_path, shard_dir):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    manifest = (copy / fmt.MANIFEST_NAME).read_text().replace('"format_version": 1', '"format_version": 99')
    (copy / fmt.MANIFEST_NAME).write_text(manifest)
    with pytest.raises(ValueError, match="format_version is 99, this specstream reads version 1"):
        read_manifest(copy)
    (copy / fmt.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest"):
        read_manifest(copy)


def test_manifest_counts_checked(tmp_path, shard_dir):
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    manifest = json.loads((copy / fmt.MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["n_samples"] += 30
    (copy / fmt.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="splits.train.n_samples is .*, but its shards contain"):
        read_manifest(copy)
    manifest["splits"]["train"]["n_samples"] -= 30
    manifest["splits"]["val"]["shards"][0]["n_samples"] -= 1
    (copy / fmt.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shard val-000000.tar has n_samples .*, but its blocks contain"):
        read_manifest(copy)


def test_manifest_stats_checked(shard_dir):
    manifest = read_manifest(shard_dir)
    manifest["stats"]["flux_std"][3] = -1.0
    with pytest.raises(ValueError, match=r"stats.flux_std has 1 invalid value \(first at pixel 3: -1.0\)"):
        stats_arrays(manifest)
    manifest["stats"]["flux_std"] = manifest["stats"]["flux_std"][:5]
    with pytest.raises(ValueError, match=r"stats.flux_std has shape \(5,\), expected"):
        stats_arrays(manifest)


# Corrupt shards

def damaged_copy(tmp_path, shard_dir, damage):
    copy = tmp_path / "damaged"
    shutil.copytree(shard_dir, copy)
    name = read_manifest(copy)["splits"]["train"]["shards"][1]["name"]
    damage(copy / name)
    return copy, name


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def overwrite_header(path):
    data = bytearray(path.read_bytes())
    data[:100] = b"x" * 100  # the first member's tar header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [(truncate, "the file has .* bytes but the manifest records"),
                                             (overwrite_header, "member .*flux.npy at byte 512 has an invalid header \\(bad checksum\\)"),
                                             (lambda p: p.unlink(), "cannot open it")])
@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_corrupt_shard_named(tmp_path, shard_dir, damage, message, read_mode):
    copy, name = damaged_copy(tmp_path, shard_dir, damage)
    loader = SpectraLoader(copy, "train", batch_size=8, shuffle=False, read_mode=read_mode, **SMALL)
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{name}: ({message})"):
        collect(loader)


@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_corrupt_shard_skipped_in_train(tmp_path, shard_dir, read_mode):
    copy, name = damaged_copy(tmp_path, shard_dir, truncate)
    shard = read_manifest(copy)["splits"]["train"]["shards"][1]
    loader = SpectraLoader(copy, "train", batch_size=8, on_corrupt="skip", read_mode=read_mode, **SMALL)
    batches = collect(loader)
    assert len(batches) == len(loader)
    assert all(len(b["ids"]) == 8 for b in batches)
    ids = ids_of(batches)
    bad_ids = set(range(shard["blocks"][0]["first_id"], shard["blocks"][-1]["last_id"] + 1))
    assert not bad_ids & set(ids)
    assert 0 < loader.n_skipped <= shard["n_samples"]
    assert np.all(ids >= 0)


@pytest.mark.parametrize("on_corrupt", ["raise", "skip"])
def test_shard_truncated_while_mapped(tmp_path, shard_dir, on_corrupt):
    copy, name = damaged_copy(tmp_path, shard_dir, lambda path: None)
    loader = SpectraLoader(copy, "train", batch_size=8, on_corrupt=on_corrupt, **SMALL)
    collect(loader)  # maps every shard of the split
    truncate(copy / name)  # reading the lost pages through the old maps would kill the process (SIGBUS)
    loader.set_epoch(1)
    if on_corrupt == "raise":
        with pytest.raises(CorruptShardError, match=f"corrupt shard .*{name}: the file now has .* bytes but the "
                           "manifest records .* \\(truncated or rewritten while in use\\)"):
            collect(loader)
    else:
        assert len(collect(loader)) == len(loader)
        assert loader.n_skipped > 0


def test_corrupt_shard_skipped_in_eval_is_marked(tmp_path, shard_dir):
    copy = tmp_path / "damaged"
    shutil.copytree(shard_dir, copy)
    shard = read_manifest(copy)["splits"]["val"]["shards"][0]
    truncate(copy / shard["name"])
    loader = SpectraLoader(copy, "val", batch_size=8, on_corrupt="skip")
    ids = ids_of(collect(loader))
    assert len(ids) == 23
    assert np.count_nonzero(ids == -1) == shard["n_samples"]
    assert loader.n_skipped == shard["n_samples"]


# Sources

def test_pipe_source_matches_local(shard_dir):
    local = collect(SpectraLoader(shard_dir, "train", batch_size=16, seed=2, **SMALL))
    piped = collect(SpectraLoader(f"pipe:cat {shard_dir}/{{name}}", "train", batch_size=16, seed=2, **SMALL))
    assert len(piped) == len(local)
    for ours, theirs in zip(piped, local):
        np.testing.assert_array_equal(ours["ids"], theirs["ids"])
        np.testing.assert_array_equal(ours["inputs"], theirs["inputs"])


def test_pipe_source_with_cache(tmp_path, shard_dir):
    local = collect(SpectraLoader(shard_dir, "val", batch_size=8))
    cached = collect(SpectraLoader(f"pipe:cat {shard_dir}/{{name}}", "val", batch_size=8, cache_dir=tmp_path))
    np.testing.assert_array_equal(ids_of(cached), ids_of(local))
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        s["name"] for s in read_manifest(shard_dir)["splits"]["val"]["shards"]]


def test_pipe_source_truncated_shard(tmp_path, shard_dir):
    copy, name = damaged_copy(tmp_path, shard_dir, truncate)
    loader = SpectraLoader(f"pipe:cat {copy}/{{name}}", "train", batch_size=8, shuffle=False, **SMALL)
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{name}"):
        collect(loader)


def test_pipe_source_needs_placeholder(shard_dir):
    with pytest.raises(ValueError, match="has no \\{name\\} placeholder"):
        read_manifest(f"pipe:cat {shard_dir}/manifest.json")


def test_manifest_path_as_source(shard_dir):
    assert read_manifest(shard_dir / fmt.MANIFEST_NAME) == read_manifest(shard_dir)


def test_pinned_memory_request_without_cuda(shard_dir):
    loader = SpectraLoader(shard_dir, "test", batch_size=8, pin_memory=True)
    batch = next(iter(loader))
    assert batch.inputs.dtype == torch.float32
    assert loader.pin_memory == torch.cuda.is_available()


# Schedule

def test_schedule_windows_tile_rank_positions(shard_dir):
    layout = SplitLayout.from_manifest(read_manifest(shard_dir), "train")
    schedule = EpochSchedule(layout=layout, batch_size=8, rank=1, world_size=3, seed=0, epoch=0, shuffle=True,
                             drop_last=False, pad_mode="wrap", window_rows=24, unit_rows=5)
    total = 0
    for index in range(schedule.n_windows):
        window = schedule.window(index)
        covered = sum(row1 - row0 for _, row0, row1, _ in window.pieces)
        assert covered + window.n_padding == window.n_rows
        assert sorted(window.order.tolist()) == list(range(window.n_rows))
        total += window.n_rows
    assert total == schedule.per_rank == -(-220 // 3)


@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_float16_shards_with_mask(tmp_path, read_mode):
    flux, error, wave = make_arrays(60, N_PIXELS, seed=5)
    mask = (np.random.default_rng(5).random((60, N_PIXELS)) < 0.2).astype(np.int8)
    path = write_survey_file(tmp_path / "masked.h5", flux, error, wave, make_labels(60, seed=5), mask)
    write_shards([path], tmp_path / "shards", ShardOptions(test_size=10, val_size=10, block_size=8, dtype="float16",
                                                           shard_size_mb=0.01, fsync=False))
    batches = collect(SpectraLoader(tmp_path / "shards", "train", batch_size=8, seed=1, read_mode=read_mode, **SMALL))
    ids = ids_of(batches)
    inputs = np.concatenate([b["inputs"] for b in batches])
    expected = make_inputs(flux[ids].astype(np.float16), error[ids].astype(np.float16), mode="flux_only", seed=1,
                           epoch=0, sample_ids=ids, mask=mask[ids])
    np.testing.assert_array_equal(inputs, expected)
    assert np.all(inputs[mask[ids] != 0] == 0)


def test_list_of_locations_as_source(shard_dir):
    manifest = read_manifest(shard_dir)
    names = [fmt.MANIFEST_NAME] + [s["name"] for s in manifest["splits"]["val"]["shards"]]
    locations = [f"pipe:cat {shard_dir / name}" for name in names]
    listed = collect(SpectraLoader(locations, "val", batch_size=8))
    np.testing.assert_array_equal(ids_of(listed), load_split_arrays(shard_dir, "val").ids)
    with pytest.raises(FileNotFoundError, match=r"train-\d{6}.tar is missing from the list of shard locations"):
        collect(SpectraLoader(locations, "train", batch_size=8, **SMALL))
    with pytest.raises(ValueError, match="has no manifest.json"):
        read_manifest(locations[1:])


def test_cache_copy_checks_sha256(tmp_path, shard_dir):
    def flip_last_byte(path):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # inside the end-of-archive padding: the tar still parses, the checksum differs
        path.write_bytes(bytes(data))

    copy, name = damaged_copy(tmp_path, shard_dir, flip_last_byte)
    loader = SpectraLoader(f"pipe:cat {copy}/{{name}}", "train", batch_size=8, shuffle=False,
                           cache_dir=tmp_path / "cache", **SMALL)
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{name}: the copy has SHA-256 [0-9a-f]{{64}}, "
                                                "the manifest records"):
        collect(loader)
    assert not (tmp_path / "cache" / name).exists()


def test_kept_batches_never_overwritten(shard_dir):
    loader = SpectraLoader(shard_dir, "train", batch_size=8, num_threads=2, **SMALL)
    kept, copies = [], []
    for batch in loader:
        kept.append(batch)
        copies.append(batch.inputs.numpy().copy())
    loader.set_epoch(1)
    for _ in loader:  # a second epoch allocates windows while the first epoch's batches are alive
        pass
    for batch, copy in zip(kept, copies):
        np.testing.assert_array_equal(batch.inputs.numpy(), copy)


def test_window_memory_reuses_free_outputs(shard_dir):
    layout = SplitLayout.from_manifest(read_manifest(shard_dir), "train")
    memory = WindowMemory(resolve_source(shard_dir), layout, window_rows=16, max_buffer_sets=1, max_outputs=2)
    first = memory.take_output(10)
    base_id = id(first.base)  # an id, not a reference, so that the array can become free
    del first
    again = memory.take_output(16)
    assert id(again.base) == base_id
    held = memory.take_output(8)
    assert id(held.base) != base_id
    buffer_set = memory.take_buffers()
    memory.give_buffers(buffer_set)
    assert memory.take_buffers() is buffer_set
    other = memory.take_buffers()  # a second thread's set: not kept beyond max_buffer_sets, its reader closed
    other.reader.member_view(0, 0, "flux")
    memory.give_buffers(buffer_set)
    memory.give_buffers(other)
    assert memory.take_buffers() is buffer_set
    assert not other.reader._maps
    assert not other.reader._fds


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_pinned_batches_copy_to_gpu(shard_dir, num_workers):
    loader = SpectraLoader(shard_dir, "train", batch_size=16, pin_memory=True, num_workers=num_workers, **SMALL)
    reference = collect(SpectraLoader(shard_dir, "train", batch_size=16, **SMALL))
    for batch, expected in zip(loader, reference):
        assert batch.inputs.is_pinned()
        on_gpu = batch.to("cuda", non_blocking=True)
        np.testing.assert_array_equal(on_gpu.inputs.cpu().numpy(), expected["inputs"])
        np.testing.assert_array_equal(on_gpu.sample_ids.cpu().numpy(), expected["ids"])


def test_stalled_source_times_out(shard_dir):
    # The manifest arrives at once, the shards 3 s late.
    source = f"pipe:case {{name}} in *.tar) sleep 3;; esac; cat {shard_dir}/{{name}}"
    loader = SpectraLoader(source, "val", batch_size=8, timeout_s=1)
    with pytest.raises(TimeoutError, match="a window of 'val' was not built within 1.0 s"):
        collect(loader)


def test_skip_with_no_readable_training_shard(tmp_path):
    flux, error, wave = make_arrays(60, N_PIXELS, seed=8)
    path = write_survey_file(tmp_path / "one.h5", flux, error, wave, make_labels(60, seed=8))
    write_shards([path], tmp_path / "shards", ShardOptions(test_size=10, val_size=10, block_size=8, fsync=False))
    (name,) = [s["name"] for s in read_manifest(tmp_path / "shards")["splits"]["train"]["shards"]]
    truncate(tmp_path / "shards" / name)
    loader = SpectraLoader(tmp_path / "shards", "train", batch_size=8, on_corrupt="skip")
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{name}: no sample of a training window could "
                       "be read, so nothing is left to replace the skipped samples with. Copy the shard again, "
                       "or rewrite the set with `specstream shard`$"):
        collect(loader)


def test_verify_finds_changed_bytes(tmp_path, shard_dir):
    from typer.testing import CliRunner

    from specstream.cli import app

    def flip_bytes(path):
        data = bytearray(path.read_bytes())
        data[2000:2008] = b"\xff" * 8  # inside the first flux member: the size and headers stay valid
        path.write_bytes(bytes(data))

    copy, name = damaged_copy(tmp_path, shard_dir, flip_bytes)
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1
    assert f"{name} (train): has SHA-256 " in result.output
    assert "the manifest records" in result.output
    n_shards = sum(len(split["shards"]) for split in read_manifest(copy)["splits"].values())
    assert f"{n_shards - 1} of {n_shards} shards match the manifest" in result.output
    assert CliRunner().invoke(app, ["verify", str(shard_dir)]).exit_code == 0
    only_val = CliRunner().invoke(app, ["verify", str(copy), "--split", "val"])
    assert only_val.exit_code == 0
    unknown = CliRunner().invoke(app, ["verify", str(copy), "--split", "dev"])
    assert "invalid --split 'dev'; the manifest has the splits train, val, test" in unknown.output


def test_more_shards_than_open_files(shard_dir, monkeypatch):
    from specstream.data import blocks

    expected = collect(SpectraLoader(shard_dir, "train", batch_size=16, seed=6, **SMALL))
    monkeypatch.setattr(blocks, "MAX_OPEN_SHARDS", 1)  # every new shard closes the previous file
    for read_mode in ("mmap", "pread"):
        batches = collect(SpectraLoader(shard_dir, "train", batch_size=16, seed=6, read_mode=read_mode, **SMALL))
        assert len(batches) == len(expected)
        for ours, theirs in zip(batches, expected):
            np.testing.assert_array_equal(ours["inputs"], theirs["inputs"])


def test_descriptor_exhaustion_not_corrupt(tmp_path):
    flux, error, wave = make_arrays(120, N_PIXELS, seed=9)
    path = write_survey_file(tmp_path / "many.h5", flux, error, wave, make_labels(120, seed=9))
    options = ShardOptions(test_size=10, val_size=10, block_size=4, shard_size_mb=0.0005, fsync=False)
    write_shards([path], tmp_path / "shards", options)
    assert len(read_manifest(tmp_path / "shards")["splits"]["train"]["shards"]) > 20
    code = f"""
import os, resource
from specstream.data import SpectraLoader
loader = SpectraLoader({str(tmp_path / "shards")!r}, "train", batch_size=4, on_corrupt="skip", num_threads=1)
limit = len(os.listdir("/proc/self/fd")) + 8
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    for batch in loader:
        pass
except OSError as exc:
    print(type(exc).__name__, exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OSError [Errno 24] cannot open or map" in result.stdout, result.stdout + result.stderr
    assert "raise the open-file limit (ulimit -n)" in result.stdout
    assert "corrupt shard" not in result.stdout + result.stderr  # skip must not drop healthy shards


def test_fork_safe_lock_free_in_child():
    from specstream.locks import ForkSafeLock

    lock = ForkSafeLock()
    with lock:  # held by this thread while the child is forked
        pid = os.fork()
        if pid == 0:  # the child: entering the lock must not wait for the parent's thread
            with lock:
                os._exit(0)
    for _ in range(200):  # wait up to 10 s, then kill a child stuck on the lock
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child waited for a lock held by a thread of its parent")
    assert os.waitstatus_to_exitcode(status) == 0
