"""LightGBM baseline: gradient-boosted trees on a float32 subsample of the training split.

The full training split does not fit in memory as a dense matrix at 1M spectra x 4096 pixels, so the trees
train on a random subsample of `max_train` spectra with one noise realisation (training epoch 0). Pixels can be
averaged in groups of `rebin` adjacent pixels first, which divides the feature count and the memory by `rebin`.
Early stopping and the choice of `num_leaves` use a subsample of the validation split with its fixed noise
draw. The test split is streamed in full for the predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from .data import collect_subsample

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """Return the number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(kw_only=True)
class BoostingSettings:
    """Subsample sizes and tree settings of the LightGBM baseline."""

    max_train: int | None = 100_000
    """Size of the random training subsample kept in memory (float32); None keeps the whole split. Spectra
    without a finite target are then left out, so the trees may see fewer."""
    max_val: int | None = 50_000
    """Size of the validation subsample for early stopping and the num_leaves choice; None keeps the whole
    split. Spectra without a finite target are left out too."""
    rebin: int = 1
    """Average this many adjacent pixels into one feature (1: every pixel is a feature)."""
    num_leaves: tuple[int, ...] = (31, 127)
    """Candidate leaf counts per tree; the one with the lowest validation error wins."""
    learning_rate: float = 0.05
    """Shrinkage of each tree. The command line has no option for it, so `specstream baseline` uses 0.05."""
    max_rounds: int = 2000
    """Maximum boosting rounds per candidate."""
    early_stopping_rounds: int = 50
    """Stop a candidate after this many rounds without a lower validation error."""
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.5
    """Fraction of features each tree considers."""
    max_bin: int = 255
    """Histogram bins per feature."""
    num_threads: int | None = None
    """LightGBM threads; None uses every CPU this process may run on."""
    seed: int = 0
    """Seed of the subsample choice and of LightGBM's feature sampling."""

    def __post_init__(self):
        for name in ("max_train", "max_val"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be >= 2 or None, got {value}")
        if self.rebin < 1:
            raise ValueError(f"rebin must be >= 1, got {self.rebin}")
        if not self.num_leaves or any(leaves < 2 for leaves in self.num_leaves):
            raise ValueError(f"num_leaves must be a non-empty list of integers >= 2, got {self.num_leaves}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.max_rounds < 1 or self.early_stopping_rounds < 1:
            raise ValueError(f"max_rounds ({self.max_rounds}) and early_stopping_rounds "
                             f"({self.early_stopping_rounds}) must be >= 1")
        if not 0 < self.feature_fraction <= 1:
            raise ValueError(f"feature_fraction must be in (0, 1], got {self.feature_fraction}")


def rebin_pixels(inputs: np.ndarray, factor: int) -> np.ndarray:
    """Average groups of `factor` adjacent pixels: (batch, n_pixels) -> (batch, ceil(n_pixels / factor)) float32.

    When `factor` does not divide n_pixels, the last feature averages the remaining pixels.
    """
    if factor == 1:
        return inputs
    n_pixels = inputs.shape[1]
    starts = np.arange(0, n_pixels, factor)
    widths = np.diff(np.append(starts, n_pixels)).astype(np.float32)
    return (np.add.reduceat(inputs, starts, axis=1, dtype=np.float64) / widths).astype(np.float32)


@dataclass
class BoostingModel:
    """A trained LightGBM booster with the pixel rebinning its features need."""

    booster: object  # lightgbm.Booster
    rebin: int
    summary: dict = field(default_factory=dict)

    def predict(self, inputs: np.ndarray, labels=None) -> np.ndarray:
        """Return predictions (batch,) float64 for network inputs (batch, n_pixels); labels are unused."""
        features = rebin_pixels(inputs, self.rebin)
        return self.booster.predict(features, num_iteration=self.booster.best_iteration or None)


def fit_lightgbm(data, *, target: str, settings: BoostingSettings) -> BoostingModel:
    """Train one booster per num_leaves candidate with early stopping; keep the best on validation."""
    import lightgbm

    # Limitation: the trees see one noise realisation of a subsample, and an interrupted fit starts over.
    def subsample(split, max_samples):
        inputs, labels, _ = collect_subsample(data, split, labels=(target,), max_samples=max_samples,
                                              seed=settings.seed, transform=lambda x: rebin_pixels(x, settings.rebin))
        has_target = np.isfinite(labels[target])
        n_without_target = len(has_target) - int(has_target.sum())
        if n_without_target:
            logger.info("LightGBM: left out %d of %d subsampled %s spectra without a finite %s", n_without_target,
                        len(has_target), split, target)
        return inputs[has_target], labels[target][has_target]

    train_x, train_y = subsample("train", settings.max_train)
    val_x, val_y = subsample("val", settings.max_val)
    logger.info("LightGBM: %d training spectra (of %d, max_train %s) and %d validation spectra (of %d, max_val "
                "%s), %d features (rebin %d), %d threads", len(train_x), data.n_samples("train"),
                settings.max_train, len(val_x), data.n_samples("val"), settings.max_val, train_x.shape[1],
                settings.rebin, settings.num_threads or available_cores())
    train_set = lightgbm.Dataset(train_x, label=train_y, params={"max_bin": settings.max_bin, "verbose": -1},
                                 free_raw_data=False)
    val_set = lightgbm.Dataset(val_x, label=val_y, reference=train_set)

    best = None
    for leaves in settings.num_leaves:
        params = {"objective": "regression", "metric": "l2", "learning_rate": settings.learning_rate,
                  "num_leaves": leaves, "min_data_in_leaf": settings.min_data_in_leaf,
                  "feature_fraction": settings.feature_fraction, "max_bin": settings.max_bin,
                  "num_threads": settings.num_threads or available_cores(), "seed": settings.seed,
                  "deterministic": True, "verbose": -1}
        booster = lightgbm.train(params, train_set, num_boost_round=settings.max_rounds, valid_sets=[val_set],
                                 valid_names=["val"],
                                 callbacks=[lightgbm.early_stopping(settings.early_stopping_rounds, verbose=False)])
        val_mse = float(booster.best_score["val"]["l2"])
        logger.info("LightGBM num_leaves %d: best iteration %d, validation MSE %.5g", leaves,
                    booster.best_iteration, val_mse)
        if booster.best_iteration >= settings.max_rounds:
            logger.warning("LightGBM num_leaves %d used all %d rounds and may be underfitted; raise --max-rounds",
                           leaves, settings.max_rounds)
        if best is None or val_mse < best[0]:
            best = (val_mse, leaves, booster)

    val_mse, leaves, booster = best
    val_variance = float(np.var(val_y))
    summary = {"num_leaves": leaves, "best_iteration": int(booster.best_iteration), "val_n": int(len(val_y)),
               "val_r2": 1.0 - val_mse / val_variance if val_variance > 0 else float("nan"),
               "train_size": int(len(train_y)), "n_features": int(train_x.shape[1]), "rebin": settings.rebin}
    return BoostingModel(booster, settings.rebin, summary)
