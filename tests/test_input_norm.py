"""Input standardisation: statistics from the first training batches, applied as fixed buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from specstream.data.window import Batch
from specstream.training.input_norm import InputStandardizer, estimate_input_stats
from specstream.world import World


class ListLoader:
    """A loader over fixed batches that records set_epoch calls."""

    def __init__(self, batches):
        self.batches = batches
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(self.batches)


def make_batch(inputs, ids):
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    return Batch(inputs, torch.zeros(len(inputs), 1), torch.as_tensor(ids), {})


def test_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, (60, 8))
    loader = ListLoader([make_batch(data[i:i + 20], np.arange(i, i + 20)) for i in range(0, 60, 20)])
    mean, std = estimate_input_stats(loader, 8, torch.device("cpu"), World())
    np.testing.assert_allclose(mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), data.std(0), rtol=1e-5)
    assert loader.epochs == [0, 0]


def test_stats_skip_padding_and_limit_batches():
    first = np.ones((4, 3))
    padded = make_batch(np.vstack([first, np.full((2, 3), 100.0)]), [0, 1, 2, 3, -1, -1])
    ignored = make_batch(np.full((4, 3), 50.0), [4, 5, 6, 7])
    mean, std = estimate_input_stats(ListLoader([padded, ignored]), 3, torch.device("cpu"), World(), n_batches=1)
    np.testing.assert_allclose(mean.numpy(), 1.0)
    np.testing.assert_allclose(std.numpy(), 1.0)  # constant pixels get std 1


def test_stats_need_samples():
    loader = ListLoader([make_batch(np.ones((1, 3)), [0])])
    with pytest.raises(ValueError, match="too few training samples .* --no-input-norm"):
        estimate_input_stats(loader, 3, torch.device("cpu"), World())


def test_standardizer_applies_buffers():
    model = InputStandardizer(nn.Identity(), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
    out = model(torch.tensor([[3.0, 10.0]]))
    np.testing.assert_allclose(out.numpy(), [[1.0, 2.0]])
    assert set(model.state_dict()) == {"mean", "std"}
    assert sum(p.numel() for p in model.parameters()) == 0
