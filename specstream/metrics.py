"""Regression metrics for label predictions: R^2, MAE, RMSE, bias, and R^2 per bin of magnitude or S/N.

NaN handling, the same in every function here:
- A sample whose true label is NaN (an unset label in the data) is left out and not counted in `n`.
- A NaN or infinite prediction for a sample with a label makes every metric NaN, because a
  diverged model must not look good.
- With no samples left, every metric is NaN and `n` is 0. R^2 is also NaN with fewer than two
  samples or when the true labels are all equal, because it is undefined there.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def _as_1d_float64(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (n_samples,), got shape {array.shape}; "
            "pass one target column at a time"
        )
    return array


def _paired_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    true = _as_1d_float64(y_true, "y_true")
    pred = _as_1d_float64(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {true.size} and {pred.size}")
    return true, pred


def _metrics_of_labeled(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Compute the metrics for samples whose true labels are all finite."""
    n = int(true.size)
    nan = float("nan")
    if n == 0 or not np.all(np.isfinite(pred)):
        return {"r2": nan, "mae": nan, "rmse": nan, "bias": nan, "n": n}

    residual = pred - true
    sum_squares_residual = float(np.sum(residual**2))
    sum_squares_total = float(np.sum((true - true.mean()) ** 2))
    r2 = 1.0 - sum_squares_residual / sum_squares_total if n >= 2 and sum_squares_total > 0 else nan
    return {
        "r2": r2,
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(np.sqrt(sum_squares_residual / n)),
        "bias": float(np.mean(residual)),
        "n": n,
    }


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """Compute R^2, MAE, RMSE and bias (mean of pred - true) for one target label.

    Accepts array-likes or tensors of shape (n_samples,) or (n_samples, 1). Returns a dict with
    keys r2, mae, rmse, bias (floats, in the label's units except r2) and n (samples used).
    See the module docstring for NaN handling.
    """
    true, pred = _paired_arrays(y_true, y_pred)
    has_label = np.isfinite(true)
    metrics = _metrics_of_labeled(true[has_label], pred[has_label])
    n_dropped = int(true.size - has_label.sum())
    if n_dropped:
        logger.debug("left out %d samples with a non-finite true label", n_dropped)
    if metrics["n"] and np.isnan(metrics["mae"]):
        logger.warning("predictions contain NaN or infinity; all metrics are NaN")
    return metrics


def binned_r2(y_true, y_pred, by, bins) -> pd.DataFrame:
    """Compute R^2 and MAE per bin of `by` (e.g. magnitude or S/N), with `bins` as edges.

    Bins follow numpy.histogram: every bin is half-open [lo, hi) except the last, which is
    [lo, hi]. Samples whose `by` is NaN or outside the edges are left out. Returns one row per
    bin, in edge order, with columns bin (label such as "[20.5, 21)"), lo, hi, n, r2, mae.
    An empty bin has n = 0 and NaN metrics.
    """
    true, pred = _paired_arrays(y_true, y_pred)
    by_values = _as_1d_float64(by, "by")
    if by_values.shape != true.shape:
        raise ValueError(f"by must have one value per sample ({true.size}), got {by_values.size}")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"bins must be at least two finite, strictly increasing edges, got {edges.tolist()}; "
            "for example bins=[20.5, 21.0, 21.5, 22.0, 22.5]"
        )

    n_bins = edges.size - 1
    # side="right" puts a value equal to an edge into the bin that starts there.
    index = np.searchsorted(edges, by_values, side="right") - 1
    index[by_values == edges[-1]] = n_bins - 1  # the last bin includes its upper edge
    in_range = np.isfinite(by_values) & (index >= 0) & (index < n_bins)
    has_label = in_range & np.isfinite(true)

    rows = []
    for i in range(n_bins):
        selected = has_label & (index == i)
        metrics = _metrics_of_labeled(true[selected], pred[selected])
        closing = "]" if i == n_bins - 1 else ")"
        rows.append(
            {
                "bin": f"[{edges[i]:g}, {edges[i + 1]:g}{closing}",
                "lo": edges[i],
                "hi": edges[i + 1],
                "n": metrics["n"],
                "r2": metrics["r2"],
                "mae": metrics["mae"],
            }
        )
    return pd.DataFrame(rows, columns=["bin", "lo", "hi", "n", "r2", "mae"])
