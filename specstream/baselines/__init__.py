"""Classic baselines on the NN runs' data and noise protocol: streaming ridge, LightGBM, oracle mixture of experts.

The oracle mixture of experts gates its ridge experts with the true labels of each spectrum. It is an upper
bound on what label-dependent linear models can reach, not a deployable model.
"""

from .boosting import BoostingModel, BoostingSettings, fit_lightgbm, rebin_pixels
from .data import ArraySplits, InputBatch, collect_subsample, random_splits
from .gate import Gate, parse_gate_labels
from .linear import LinearExperts, accumulate, select_on_validation, solve_paths
from .ridge import DEFAULT_RELATIVE_ALPHAS, GramAccumulator, RidgePath
from .run import BASELINE_MODELS, PREDICTIONS_NAME, BaselineConfig, run_baseline

__all__ = [
    "ArraySplits",
    "BASELINE_MODELS",
    "BaselineConfig",
    "BoostingModel",
    "BoostingSettings",
    "DEFAULT_RELATIVE_ALPHAS",
    "Gate",
    "GramAccumulator",
    "InputBatch",
    "LinearExperts",
    "PREDICTIONS_NAME",
    "RidgePath",
    "accumulate",
    "collect_subsample",
    "fit_lightgbm",
    "parse_gate_labels",
    "random_splits",
    "rebin_pixels",
    "run_baseline",
    "select_on_validation",
    "solve_paths",
]
