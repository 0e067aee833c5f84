"""Evaluation on the validation and test splits, exact under DDP.

Each rank predicts its own part of the split. The predictions of all ranks are gathered to every rank and
sorted by sample id. Every rank then computes the same metrics on the whole split, whatever the world size.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from specstream.metrics import binned_r2, regression_metrics

logger = logging.getLogger(__name__)

EXTRA_COLUMNS = ("mag", "snr")  # label columns kept with the predictions for binned metrics
MAG_BINS = (20.5, 21.0, 21.5, 22.0, 22.5)  # HSC i magnitude (AB), the survey's faint-star range
SNR_BINS = (0.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 50.0)  # median S/N per pixel


@dataclass
class Predictions:
    """Predictions for a whole split, in ascending sample id order, in label units."""

    sample_ids: np.ndarray  # (n,) int64
    y_true: np.ndarray  # (n, n_targets) float64, NaN where a label is unset
    y_pred: np.ndarray  # (n, n_targets) float64
    extra: dict[str, np.ndarray]  # column name -> (n,) float64, e.g. mag, snr


@torch.no_grad()
def predict_part(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable,
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    extra_names: Sequence[str] = EXTRA_COLUMNS,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Predict every batch of this rank's part; return sample_ids (n,), values (n, k) and extra names.

    The value columns are the model outputs (standardized label units), the labels, and the columns of
    `extra_names` that the batches have, in that order. The third item lists those extra names. The
    caller sets eval mode.
    """
    id_blocks, value_blocks = [], []
    present: list[str] = []
    for batch in batches:
        present = [name for name in extra_names if name in batch.extra]
        inputs = batch.inputs.to(device, non_blocking=True)  # (batch, n_pixels)
        with autocast():
            outputs = forward(inputs)  # (batch, n_targets)
        columns = [outputs.float(), batch.labels.to(device, non_blocking=True).float()]
        columns += [batch.extra[name].to(device, non_blocking=True).float()[:, None] for name in present]
        value_blocks.append(torch.cat(columns, dim=1))
        id_blocks.append(batch.sample_ids.to(device, non_blocking=True))
    if not value_blocks:
        raise ValueError("the evaluation loader yielded no batches because this rank's part of the split is "
                         "empty; use fewer ranks than the split has samples")
    return torch.cat(id_blocks), torch.cat(value_blocks), present


def gather_rows(sample_ids: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Gather (sample_ids (n,), values (n, k)) of every rank to every rank, sorted by sample id.

    Ranks hold different numbers of rows, so each pads to the largest count with sample id -1.
    Rows with sample id -1, this padding or the loader's own, are dropped.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world_size = dist.get_world_size()
        count = torch.tensor([len(sample_ids)], device=sample_ids.device, dtype=torch.int64)
        counts = [torch.zeros_like(count) for _ in range(world_size)]
        dist.all_gather(counts, count)
        n_max = int(max(int(c.item()) for c in counts))  # one sync per evaluation
        padded_ids = torch.full((n_max,), -1, dtype=torch.int64, device=sample_ids.device)
        padded_ids[: len(sample_ids)] = sample_ids
        padded_values = torch.zeros((n_max, values.shape[1]), dtype=values.dtype, device=values.device)
        padded_values[: len(values)] = values
        all_ids = [torch.empty_like(padded_ids) for _ in range(world_size)]
        all_values = [torch.empty_like(padded_values) for _ in range(world_size)]
        dist.all_gather(all_ids, padded_ids)
        dist.all_gather(all_values, padded_values)
        sample_ids, values = torch.cat(all_ids), torch.cat(all_values)
    ids = sample_ids.cpu().numpy()
    values = values.cpu().numpy().astype(np.float64)
    keep = ids >= 0  # drops this function's padding and the streaming loader's padding rows
    ids, values = ids[keep], values[keep]
    order = np.argsort(ids, kind="stable")
    return ids[order], values[order]


def to_predictions(
    sample_ids: np.ndarray, values: np.ndarray, *, label_mean: np.ndarray, label_std: np.ndarray,
    extra_names: Sequence[str],
) -> Predictions:
    """Split gathered rows into Predictions, turning standardized outputs back into label units."""
    n_targets = len(label_mean)
    outputs = values[:, :n_targets]
    y_true = values[:, n_targets:2 * n_targets]
    extra = {name: values[:, 2 * n_targets + i] for i, name in enumerate(extra_names)}
    return Predictions(sample_ids, y_true, outputs * label_std + label_mean, extra)


def standardized_loss(predictions: Predictions, label_mean: np.ndarray, label_std: np.ndarray) -> float:
    """Return the mean squared error in standardized label units over all set labels (the training loss)."""
    residual = (predictions.y_pred - predictions.y_true) / label_std  # (n, n_targets)
    residual = residual[np.isfinite(predictions.y_true)]
    return float(np.mean(residual**2)) if residual.size else float("nan")


def split_metrics(predictions: Predictions, targets: Sequence[str]) -> dict[str, float]:
    """Return r2, mae, rmse, bias and n of the first target, and "{metric}_{target}" for the others."""
    metrics: dict[str, float] = {}
    for column, target in enumerate(targets):
        values = regression_metrics(predictions.y_true[:, column], predictions.y_pred[:, column])
        suffix = "" if column == 0 else f"_{target}"
        metrics.update({f"{name}{suffix}": value for name, value in values.items()})
    return metrics


def binned_tables(predictions: Predictions) -> dict[str, pd.DataFrame]:
    """Return R^2 and MAE of the first target per magnitude bin and per S/N bin, where those labels exist."""
    tables = {}
    for name, bins in (("mag", MAG_BINS), ("snr", SNR_BINS)):
        if name in predictions.extra:
            tables[name] = binned_r2(predictions.y_true[:, 0], predictions.y_pred[:, 0],
                                     predictions.extra[name], bins)
    return tables
