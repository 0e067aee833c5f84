"""The resident data path: rank parts, batch order, inputs identical to the streaming loader's, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specstream.data import SpectraLoader, load_split_arrays
from specstream.kernels import FIXED_EPOCH, make_inputs
from specstream.resident import ResidentLoader, SplitPart, load_rank_part, resident_bytes

from train_data import N_PIXELS, learnable_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return learnable_shards(tmp_path_factory.mktemp("resident"), n=300, n_val=40, n_test=40)


@pytest.fixture(scope="module")
def masked_shards(tmp_path_factory):
    return learnable_shards(tmp_path_factory.mktemp("resident_mask"), n=200, n_val=30, n_test=30,
                            with_mask=True, dtype="float16")


def _loader(part, **overrides):
    options = dict(targets=("log_g",), batch_size=16, device="cpu", mode="flux_only", seed=3, shuffle=True)
    options.update(overrides)
    return ResidentLoader(part, **options)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_parts_partition_split(shards, world_size):
    whole = load_split_arrays(shards, "train")
    parts = [load_rank_part(shards, "train", rank=rank, world_size=world_size) for rank in range(world_size)]
    for rank, part in enumerate(parts):
        np.testing.assert_array_equal(part.sample_ids, whole.ids[rank::world_size])
        np.testing.assert_array_equal(part.flux, whole.flux[rank::world_size])
        np.testing.assert_array_equal(part.error, whole.error[rank::world_size])
        np.testing.assert_array_equal(part.labels, whole.labels.to_numpy()[rank::world_size])
        assert part.mask is None
    assert sum(len(part.sample_ids) for part in parts) == len(whole.ids)


def test_rank_part_max_samples(shards):
    part = load_rank_part(shards, "train", rank=1, world_size=2, max_samples=101)
    whole = load_split_arrays(shards, "train", max_samples=101)
    np.testing.assert_array_equal(part.sample_ids, whole.ids[1::2])


def test_rank_part_keeps_mask_and_dtype(masked_shards):
    part = load_rank_part(masked_shards, "train", rank=0, world_size=2)
    assert part.flux.dtype == np.float16
    assert part.mask is not None
    assert part.mask.shape == part.flux.shape
    assert part.mask.any()


def test_eval_inputs_match_streaming_loader(masked_shards):
    """Same sample ids give the same inputs on both data paths (fixed draw, mask applied)."""
    part = load_rank_part(masked_shards, "val")
    resident = _loader(part, shuffle=False, mode="whitening", batch_size=7)
    streaming = SpectraLoader(masked_shards, "val", batch_size=7, seed=3, mode="whitening")
    resident_batches, streaming_batches = list(resident), list(streaming)
    assert len(resident_batches) == len(streaming_batches) == len(resident)
    for ours, theirs in zip(resident_batches, streaming_batches):
        torch.testing.assert_close(ours.sample_ids, theirs.sample_ids, rtol=0, atol=0)
        torch.testing.assert_close(ours.inputs, theirs.inputs, rtol=0, atol=0)
        torch.testing.assert_close(ours.labels, theirs.labels, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(ours.extra["mag"], theirs.extra["mag"], rtol=0, atol=0)


def test_train_inputs_use_epoch_noise(shards):
    part = load_rank_part(shards, "train")
    loader = _loader(part)
    loader.set_epoch(4)
    batch = next(iter(loader))
    rows = np.searchsorted(part.sample_ids, batch.sample_ids.numpy())
    expected = make_inputs(part.flux[rows], part.error[rows], mode="flux_only", seed=3, epoch=4,
                           sample_ids=batch.sample_ids.numpy())
    np.testing.assert_array_equal(batch.inputs.numpy(), expected)
    np.testing.assert_array_equal(batch.labels.numpy()[:, 0], part.labels[rows, 1].astype(np.float32))


def test_eval_uses_fixed_draw_in_id_order(shards):
    part = load_rank_part(shards, "test")
    loader = _loader(part, shuffle=False, batch_size=64)
    loader.set_epoch(7)
    batches = list(loader)
    ids = torch.cat([batch.sample_ids for batch in batches]).numpy()
    np.testing.assert_array_equal(ids, part.sample_ids)
    expected = make_inputs(part.flux, part.error, mode="flux_only", seed=3, epoch=FIXED_EPOCH, sample_ids=ids)
    np.testing.assert_array_equal(torch.cat([batch.inputs for batch in batches]).numpy(), expected)
    assert [len(batch.sample_ids) for batch in batches] == [40]  # one short batch


def test_eval_loader_limits_samples(shards):
    part = load_rank_part(shards, "test")
    loader = _loader(part, shuffle=False, batch_size=4, samples_per_epoch=10)
    batches = list(loader)
    assert [len(batch.sample_ids) for batch in batches] == [4, 4, 2]
    np.testing.assert_array_equal(torch.cat([b.sample_ids for b in batches]).numpy(), part.sample_ids[:10])


def test_torch_twin_backend_matches_numba(shards):
    """The CUDA backend (torch twin, index_select) run on the CPU gives the Numba backend's batches."""
    part = load_rank_part(shards, "val", max_samples=None)
    small = SplitPart(flux=part.flux[:12, :], error=part.error[:12], mask=None, labels=part.labels[:12],
                      sample_ids=part.sample_ids[:12], label_names=part.label_names)
    numba_loader = _loader(small, batch_size=5, mode="whitening")
    twin_loader = _loader(small, batch_size=5, mode="whitening", use_torch_twin=True)
    for loader in (numba_loader, twin_loader):
        loader.set_epoch(2)
    for ours, theirs in zip(twin_loader, numba_loader, strict=True):
        torch.testing.assert_close(ours.sample_ids, theirs.sample_ids, rtol=0, atol=0)
        torch.testing.assert_close(ours.inputs, theirs.inputs, rtol=0, atol=0)
        torch.testing.assert_close(ours.labels, theirs.labels, rtol=0, atol=0)


def _epoch_ids(loader, epoch):
    loader.set_epoch(epoch)
    return [batch.sample_ids.numpy().copy() for batch in loader]


def test_train_order_per_epoch(shards):
    part = load_rank_part(shards, "train")
    loader = _loader(part, samples_per_epoch=192)
    first = _epoch_ids(loader, 0)
    assert len(first) == len(loader) == 12
    assert all(len(ids) == 16 for ids in first)
    visited = np.concatenate(first)
    assert len(np.unique(visited)) == 192
    assert set(visited) <= set(part.sample_ids)
    np.testing.assert_array_equal(np.concatenate(_epoch_ids(loader, 0)), visited)
    assert not np.array_equal(np.concatenate(_epoch_ids(loader, 1)), visited)


def test_ranks_disjoint_equal_batches(shards):
    n_train = len(load_split_arrays(shards, "train").ids)
    per_rank = n_train // 2 // 16 * 16
    loaders = [_loader(load_rank_part(shards, "train", rank=rank, world_size=2), rank=rank,
                       samples_per_epoch=per_rank) for rank in range(2)]
    ids = [np.concatenate(_epoch_ids(loader, 5)) for loader in loaders]
    assert len(loaders[0]) == len(loaders[1])
    assert len(ids[0]) == len(ids[1]) == per_rank
    assert not set(ids[0]) & set(ids[1])


def test_mid_epoch_resume_same_batches(shards):
    part = load_rank_part(shards, "train")
    loader = _loader(part)
    loader.set_epoch(2)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    rest = [batch.sample_ids.numpy() for batch in iterator]

    resumed = _loader(part)
    resumed.load_state_dict(state)
    assert state == {"epoch": 2, "batches_done": 3}
    again = [batch.sample_ids.numpy() for batch in resumed]
    assert len(again) == len(rest) == len(loader) - 3
    for ours, theirs in zip(again, rest):
        np.testing.assert_array_equal(ours, theirs)


def test_load_state_rejects_bad_position(shards):
    loader = _loader(load_rank_part(shards, "val"))
    with pytest.raises(ValueError, match=r"batches_done=99 is outside \[0, 3\] for this loader"):
        loader.load_state_dict({"epoch": 0, "batches_done": 99})


def test_loader_rejects_unknown_target(shards):
    part = load_rank_part(shards, "val")
    with pytest.raises(ValueError, match=r"target labels \['nope'\] are not in the data's label columns"):
        _loader(part, targets=("nope",))


def test_loader_rejects_too_many_samples(shards):
    part = load_rank_part(shards, "val")
    with pytest.raises(ValueError, match=r"samples_per_epoch=41 is outside \[0, 40\]"):
        _loader(part, samples_per_epoch=41)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_loader_rejects_bad_batch_size(shards, batch_size):
    part = load_rank_part(shards, "val")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        _loader(part, batch_size=batch_size)


def test_split_part_rejects_mismatched_rows():
    flux = np.zeros((4, N_PIXELS), np.float32)
    with pytest.raises(ValueError, match=r"error has shape \(3, 128\); expected \(4, \.\.\.\)"):
        SplitPart(flux=flux, error=flux[:3], mask=None, labels=np.zeros((4, 2)), sample_ids=np.arange(4),
                  label_names=("a", "b"))
    with pytest.raises(ValueError, match="labels has 2 columns but label_names has 1 names"):
        SplitPart(flux=flux, error=flux, mask=None, labels=np.zeros((4, 2)), sample_ids=np.arange(4),
                  label_names=("a",))


def test_resident_bytes():
    # 1M spectra of 4096 float16 pixels, flux and error, 8 labels: about 16 GB.
    assert resident_bytes(1_000_000, 4096, 2, False, 8) == 1_000_000 * (4096 * 4 + 32 + 8)
    assert resident_bytes(10, 100, 4, True, 1) == 10 * (100 * 9 + 4 + 8)
