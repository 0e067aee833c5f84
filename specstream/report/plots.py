"""The report's figures as PNG files, drawn with matplotlib's object API (no pyplot, so no display is needed).

Each function takes the runs that have the data it needs and writes one PNG atomically. The caller decides
which runs to show and records why a figure was skipped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from specstream.atomic import atomic_write
from specstream.metrics import binned_r2, regression_metrics

from .runs import RunFiles, legend_labels

logger = logging.getLogger(__name__)

AXIS_LABELS = {
    "log_g": "log g [dex]",
    "T_eff": "T_eff [K]",
    "M_H": "[M/H] [dex]",
    "a_M": "[α/M] [dex]",
    "C_M": "[C/M] [dex]",
    "mag": "HSC i magnitude [AB mag]",
    "snr": "S/N per pixel (median)",
}
N_RESIDUAL_BINS = 8
N_R2_BINS = 6
PANEL_COLUMNS = 3
DPI = 120


def axis_label(name: str) -> str:
    return AXIS_LABELS.get(name, name)


def quantity_name(name: str) -> str:
    """Return a label's name without its unit, e.g. "log g" for log_g."""
    return AXIS_LABELS.get(name, name).split(" [")[0]


def _log_x_axis(ax) -> None:
    """Use a log x axis labelled with plain numbers (2, 3, 5, 10) rather than powers of ten."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG through a temporary file in the same directory."""
    with atomic_write(path, "wb") as stream:
        figure.savefig(stream, dpi=DPI, format="png")
    return path


def _colors(n: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def plot_predicted_vs_true(runs: list[RunFiles], path: Path) -> Path:
    """Draw one density panel (hexbin, log colour scale) of predicted against true target per run."""
    n_rows = math.ceil(len(runs) / PANEL_COLUMNS)
    n_columns = min(len(runs), PANEL_COLUMNS)
    figure = Figure(figsize=(4.2 * n_columns, 4.0 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax, run in zip(axes.flat, runs):
        frame = run.predictions
        finite = np.isfinite(frame["y_true"]) & np.isfinite(frame["y_pred"])
        true, predicted = frame["y_true"][finite], frame["y_pred"][finite]
        low = float(min(true.min(), np.percentile(predicted, 0.5)))
        high = float(max(true.max(), np.percentile(predicted, 99.5)))
        gridsize = int(np.clip(np.sqrt(len(true)) / 1.5, 15, 60))  # about 2 spectra per cell on average, or more
        cells = ax.hexbin(true, predicted, gridsize=gridsize, bins="log", mincnt=1, cmap="viridis",
                          extent=(low, high, low, high))
        ax.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="1:1")
        metrics = regression_metrics(true, predicted)
        ax.text(0.03, 0.97, f"R² = {metrics['r2']:.3f}\nMAE = {metrics['mae']:.3f}\nn = {metrics['n']}",
                transform=ax.transAxes, va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8})
        ax.set(xlim=(low, high), ylim=(low, high), xlabel=f"true {axis_label(run.target)}",
               ylabel=f"predicted {axis_label(run.target)}")
        ax.set_title(f"{run.label}\n{run.experiment_id}", fontsize=9)
        colorbar = figure.colorbar(cells, ax=ax, label="spectra per cell")
        colorbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    return save_figure(figure, path)


def _binned_quantiles(x: np.ndarray, y: np.ndarray, edges: np.ndarray):
    """Return bin centres and the 16th, 50th and 84th percentiles of y per bin of x (NaN for bins under 5)."""
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    quantiles = np.full((len(edges) - 1, 3), np.nan)
    for i in range(len(edges) - 1):
        values = y[inside & (index == i)]
        if values.size >= 5:
            quantiles[i] = np.percentile(values, [16, 50, 84])
    return quantiles


def _edges(values: np.ndarray, n_bins: int, log: bool) -> np.ndarray:
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    return np.geomspace(low, high, n_bins + 1) if log else np.linspace(low, high, n_bins + 1)


def plot_residuals(runs: list[RunFiles], columns: list[str], path: Path) -> Path:
    """Draw the median residual (predicted - true) and its 16-84 % band against each of `columns`."""
    figure = Figure(figsize=(6.0 * len(columns), 4.2), layout="constrained")
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        log = column == "snr"
        pooled = np.concatenate([run.predictions[column].to_numpy() for run in runs if column in run.predictions])
        edges = _edges(pooled, N_RESIDUAL_BINS, log)
        centres = np.sqrt(edges[:-1] * edges[1:]) if log else 0.5 * (edges[:-1] + edges[1:])
        for run, label, color in zip(runs, legend_labels(runs), _colors(len(runs))):
            if column not in run.predictions:
                continue
            frame = run.predictions
            residual = (frame["y_pred"] - frame["y_true"]).to_numpy()
            keep = np.isfinite(residual) & np.isfinite(frame[column].to_numpy())
            quantiles = _binned_quantiles(frame[column].to_numpy()[keep], residual[keep], edges)
            ax.fill_between(centres, quantiles[:, 0], quantiles[:, 2], color=color, alpha=0.12, linewidth=0)
            ax.plot(centres, quantiles[:, 1], marker="o", color=color, label=label)
        ax.axhline(0.0, color="0.3", linewidth=1, linestyle="--")
        if log:
            _log_x_axis(ax)
        target = runs[0].target
        ax.set(xlabel=axis_label(column), ylabel=f"residual {axis_label(target)} (predicted − true)")
        ax.set_title(f"Residuals against {axis_label(column)}: median and 16–84 % band", fontsize=10)
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)


def _r2_edges(column: str, pooled: np.ndarray) -> np.ndarray:
    """Return bin edges with about equal counts: quantiles of the pooled values, duplicates removed."""
    finite = pooled[np.isfinite(pooled)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_R2_BINS + 1)))
    return edges if edges.size >= 2 else np.array([finite.min(), finite.min() + 1.0])


def plot_binned_r2(runs: list[RunFiles], columns: list[str], path: Path) -> Path:
    """Draw test R^2 per bin of each of `columns` (equal-count bins), one line per run."""
    figure = Figure(figsize=(6.0 * len(columns), 4.2), layout="constrained")
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        pooled = np.concatenate([run.predictions[column].to_numpy() for run in runs if column in run.predictions])
        edges = _r2_edges(column, pooled)
        for run, label, color in zip(runs, legend_labels(runs), _colors(len(runs))):
            if column not in run.predictions:
                continue
            frame = run.predictions
            table = binned_r2(frame["y_true"], frame["y_pred"], frame[column], edges)
            log = column == "snr" and edges[0] > 0
            centres = np.sqrt(table["lo"] * table["hi"]) if log else 0.5 * (table["lo"] + table["hi"])
            ax.plot(centres, table["r2"], marker="o", color=color, label=label)
        if column == "snr" and edges[0] > 0:
            _log_x_axis(ax)
        ax.set(xlabel=axis_label(column), ylabel=f"test R² of {quantity_name(runs[0].target)}")
        ax.set_title(f"Test R² in {len(edges) - 1} equal-count bins of {quantity_name(column)}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)


def plot_learning_curves(runs: list[RunFiles], path: Path) -> Path:
    """Draw training and validation loss, and validation R^2, against epoch for runs with an epoch log."""
    figure = Figure(figsize=(12.0, 4.2), layout="constrained")
    loss_axis, r2_axis = figure.subplots(1, 2)
    all_positive = True
    for run, label, color in zip(runs, legend_labels(runs), _colors(len(runs))):
        epochs = run.epochs
        loss_axis.plot(epochs["epoch"], epochs["train_loss"], color=color, label=f"{label} train")
        loss_axis.plot(epochs["epoch"], epochs["val_loss"], color=color, linestyle="--", label=f"{label} val")
        r2_axis.plot(epochs["epoch"], epochs["val_r2"], color=color, marker=".", label=label)
        losses = np.concatenate([epochs["train_loss"].to_numpy(), epochs["val_loss"].to_numpy()])
        all_positive &= bool(np.all(losses[np.isfinite(losses)] > 0))
    if all_positive:
        loss_axis.set_yscale("log")
        loss_axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        loss_axis.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    loss_axis.set(xlabel="epoch", ylabel="loss (MSE of standardised labels)",
                  title="Training (solid) and validation (dashed) loss")
    r2_axis.set(xlabel="epoch", ylabel="validation R²", title="Validation R² per epoch")
    for ax in (loss_axis, r2_axis):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    loss_axis.legend(fontsize=7)
    return save_figure(figure, path)
