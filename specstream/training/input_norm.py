"""Per-pixel standardisation of the network input, estimated once from the first training batches.

Raw noisy flux (of order 0.1-1 in 1e-17 erg/s/cm^2/A, scaled by a factor of about 6 across 20.5-22.5 mag)
and whitened flux (of order the S/N) can leave an MLP at R^2 ~ 0 for hundreds of steps. Subtracting each
pixel's mean and dividing by its standard deviation, as Ridge does, removed that plateau for the demo's small
MLP, but lowered mlp_3L_1024's R^2 at batch 256 on 20k stand-in spectra, so it is off unless `--input-norm`
turns it on. The statistics come from the epoch-0 training batches of every rank (averaged across ranks), so
they are the same on every rank and after a resume.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from specstream.world import World

STATS_BATCHES = 20  # batches per rank used to estimate the statistics


class InputStandardizer(nn.Module):
    """A model whose input is standardised per pixel with fixed buffers: model((x - mean) / std)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().to(torch.float32).clone())
        self.register_buffer("std", std.detach().to(torch.float32).clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model((inputs - self.mean) / self.std)  # (batch, n_outputs)


@torch.no_grad()
def estimate_input_stats(loader, n_pixels: int, device: torch.device, world: World,
                         n_batches: int = STATS_BATCHES) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-pixel mean and std, (n_pixels,) float32, of the epoch-0 training inputs.

    Padding rows (sample id -1) are left out. A pixel whose inputs are all equal gets std 1. The loader is
    set back to epoch 0 afterwards, so training starts from its first batch.
    """
    total = torch.zeros(n_pixels, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    count = torch.zeros(1, dtype=torch.float64, device=device)
    loader.set_epoch(0)
    for index, batch in enumerate(loader):
        if index >= n_batches:
            break
        keep = batch.sample_ids >= 0
        inputs = batch.inputs[keep.to(batch.inputs.device)].to(device, torch.float64)
        total += inputs.sum(dim=0)
        total_sq += (inputs * inputs).sum(dim=0)
        count += inputs.shape[0]
    loader.set_epoch(0)
    if world.is_distributed:
        for tensor in (total, total_sq, count):
            dist.all_reduce(tensor)
    if count.item() < 2:
        raise ValueError("too few training samples to estimate the input statistics; "
                         "add training data or pass --no-input-norm")
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean * mean, min=0.0))
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.to(torch.float32), std.to(torch.float32)


def model_from_checkpoint(state: dict) -> nn.Module:
    """Rebuild the trained model of a checkpoint (best.pt or checkpoint.pt), input standardisation included."""
    from specstream.models import build_model

    model = build_model(state["model_name"], n_pixels=state["n_pixels"], n_outputs=len(state["targets"]))
    weights = state["model"]
    if "mean" in weights and "std" in weights:  # written by a run with input standardisation
        model = InputStandardizer(model, weights["mean"], weights["std"])
    model.load_state_dict(weights)
    return model
