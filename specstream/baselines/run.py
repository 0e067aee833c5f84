"""Run one classic baseline end to end: fit, predict the test split, save predictions and append a results row.

The row goes to the same results CSV as the NN runs, with the same columns (experiment_id, group, model, input,
target, test_r2, test_mae, test_rmse, test_bias, train_size, train_time in seconds, seed, code_revision,
run_dir) plus baseline-specific ones. Per-sample test predictions go to `<run_dir>/test_predictions.npz`
(`specstream.results.save_predictions`), where the report finds them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from specstream.atomic import atomic_write, make_folder, write_text_atomically
from specstream.metrics import regression_metrics
from specstream.results import append_result, code_revision, read_results, save_predictions

from .boosting import BoostingSettings, fit_lightgbm
from .gate import Gate
from .linear import (
    FALLBACK_FEW_TRAIN_ROWS,
    FALLBACK_NO_VALIDATION,
    FALLBACK_POOLED_BETTER,
    PassCheckpoint,
    accumulate,
    select_on_validation,
    solve_paths,
)
from .ridge import DEFAULT_RELATIVE_ALPHAS

logger = logging.getLogger(__name__)

BASELINE_MODELS = ("ridge", "lightgbm", "oracle_moe")
PREDICTIONS_NAME = "test_predictions.npz"
PASS_STATE_NAME = "training_pass_state.npz"
SUMMARY_NAME = "baseline.json"  # settings, fit summary and results row; written when the run has finished
PER_SAMPLE_COLUMNS = ("mag", "snr")  # label columns saved beside each prediction, when the data has them
ORACLE_NOTE = "oracle: experts gated by the true labels, an upper bound, not a deployable model"


@dataclasses.dataclass(kw_only=True)
class BaselineConfig:
    """Settings of one baseline run."""

    model: str
    """One of BASELINE_MODELS: ridge, lightgbm or oracle_moe."""
    target: str = "log_g"
    """Label column to predict."""
    input_mode: str = "flux_only"
    """Network input, as for the NN runs: flux_only, whitening, standardized or noise_free."""
    noise_level: float = 1.0
    """Noise scale: inputs use flux + noise_level * error * N(0, 1)."""
    seed: int = 0
    """Noise seed (the same as the NN run's seed gives the same validation and test draws)."""
    group: str = "baselines"
    """Experiment group written to the results row."""
    experiment_id: str | None = None
    """Run name and directory; default "{group}-{model}-{input_mode}-s{seed}"."""
    noise_passes: int = 1
    """Ridge and oracle: passes over the training split, each with a fresh noise realisation (epochs 0, 1, ...)."""
    alpha_grid: tuple[float, ...] = DEFAULT_RELATIVE_ALPHAS
    """Ridge and oracle: candidate alphas in units of the training row count (alpha = r * n_rows)."""
    gate_labels: tuple[str, ...] = ("T_eff", "M_H")
    """Oracle: true labels that choose the expert."""
    n_bins: int = 3
    """Oracle: equal-width bins per gating label over the training split's range (n_bins ** n_labels experts)."""
    min_expert_rows: int = 10
    """Oracle: an expert with fewer training rows than this uses the pooled ridge."""
    boosting: BoostingSettings = dataclasses.field(default_factory=BoostingSettings)
    """LightGBM: subsample sizes and tree settings."""
    checkpoint_interval_s: float = 600.0
    """Ridge and oracle: seconds between saves of the training-pass state, from which a rerun resumes."""

    def __post_init__(self):
        if self.model not in BASELINE_MODELS:
            raise ValueError(f"model must be one of {', '.join(BASELINE_MODELS)}; got {self.model!r}")
        if self.noise_passes < 1:
            raise ValueError(f"noise_passes must be >= 1, got {self.noise_passes}")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.model == "oracle_moe" and not self.gate_labels:
            raise ValueError("gate_labels must name at least one label for the oracle, e.g. ('T_eff', 'M_H')")
        self.alpha_grid = tuple(float(alpha) for alpha in self.alpha_grid)
        if not self.alpha_grid or any(not math.isfinite(alpha) or alpha < 0 for alpha in self.alpha_grid):
            raise ValueError(f"alpha_grid must be non-empty finite values >= 0, got {list(self.alpha_grid)}")
        if self.experiment_id is None:
            self.experiment_id = f"{self.group}-{self.model}-{self.input_mode}-s{self.seed}"
        if not self.experiment_id or "/" in self.experiment_id or self.experiment_id in (".", ".."):
            raise ValueError(f"experiment_id must be a plain directory name, got {self.experiment_id!r}")


def fit_linear(data, config: BaselineConfig, run_dir: Path):
    """Fit ridge (one expert) or the oracle mixture of experts.

    Returns (model, summary, training-pass spectra/s, path of the pass checkpoint).
    """
    if config.model == "oracle_moe":
        missing = [name for name in config.gate_labels if name not in data.label_names]
        if missing:
            raise ValueError(f"gate labels {missing} are missing from the data "
                             f"(labels: {', '.join(data.label_names)}); choose --gate from these")
        gate = Gate.uniform({name: data.label_range("train", name) for name in config.gate_labels}, config.n_bins)
    else:
        gate = Gate.single()
    fingerprint = {"model": config.model, "target": config.target, "input_mode": config.input_mode,
                   "noise_level": config.noise_level, "seed": config.seed, "noise_passes": config.noise_passes,
                   "gate": list(gate.names), "edges": [edges.tolist() for edges in gate.edges],
                   "n_train": data.n_samples("train")}
    checkpoint = PassCheckpoint(run_dir / PASS_STATE_NAME, fingerprint, config.checkpoint_interval_s)
    training = accumulate(data, target=config.target, gate=gate, noise_passes=config.noise_passes,
                          checkpoint=checkpoint)
    spectra_per_s = training.n_rows / training.seconds if training.seconds > 0 else float("nan")
    logger.info("training pass: %d rows (%d noise passes) in %.1f s, %.0f spectra/s", training.n_rows,
                config.noise_passes, training.seconds, spectra_per_s)
    solve_started = time.perf_counter()
    paths = solve_paths(training, gate, config.alpha_grid, min_rows=config.min_expert_rows)
    model, summary = select_on_validation(data, paths, target=config.target, gate=gate)
    # The pass time includes the time spent before a resume, so it is added rather than measured here.
    train_seconds = training.seconds + time.perf_counter() - solve_started
    summary.update(n_experts=gate.n_experts, train_rows=training.n_rows, pass_seconds=training.seconds,
                   train_seconds=train_seconds,
                   experts=[dict(choice, region=gate.describe(expert)) for expert, choice in enumerate(model.choices)])
    if config.model == "oracle_moe":
        summary["pooled_experts"] = sum(choice["source"] == "pooled" for choice in model.choices)
        summary["pooled_fallback"] = pooled_fallback_message(config, model.choices)
    return model, summary, spectra_per_s, checkpoint.path


def pooled_fallback_message(config: BaselineConfig, choices: list[dict]) -> str | None:
    """Describe how many oracle experts use the pooled ridge, why, and what to change, or return None if none do."""
    reasons = [choice["fallback"] for choice in choices if choice["source"] == "pooled"]
    if not reasons:
        return None
    n_experts = len(choices)
    if len(reasons) == n_experts:
        effect = ("every test spectrum is predicted by the pooled ridge and the test R^2 equals that of the ridge "
                  "baseline with the same input, noise passes and alpha grid")
    else:
        effect = "the test spectra in those bins are predicted by the pooled ridge"
    causes = []
    n_few_rows = reasons.count(FALLBACK_FEW_TRAIN_ROWS)
    if n_few_rows:
        causes.append(f"{n_few_rows} had fewer than min_expert_rows = {config.min_expert_rows} training rows "
                      f"(training spectra in the bin x {config.noise_passes} noise passes)")
    n_no_validation = reasons.count(FALLBACK_NO_VALIDATION)
    if n_no_validation:
        causes.append(f"{n_no_validation} had no validation spectra in their bin")
    n_pooled_better = reasons.count(FALLBACK_POOLED_BETTER)
    if n_pooled_better:
        causes.append(f"{n_pooled_better} had a larger validation error than the pooled ridge on their bin's "
                      "validation spectra")
    gate = ",".join(config.gate_labels)
    return (f"oracle {config.experiment_id}: {len(reasons)} of {n_experts} experts fell back to the pooled "
            f"ridge, so {effect}. Of those experts, {' and '.join(causes)}. Give each expert more spectra: use "
            f"fewer --n-bins (now {config.n_bins} per label of {gate}, so {n_experts} experts) or more training "
            "data. The experts field of baseline.json lists each expert's train_rows, val_n and fallback reason.")


def predict_test(data, model, target: str, label_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Stream the test split and return sample ids, true and predicted targets, and mag / snr when present."""
    extra = [name for name in PER_SAMPLE_COLUMNS if name in label_names and name != target]
    gate_names = getattr(getattr(model, "gate", None), "names", ())
    labels = tuple(dict.fromkeys((target, *gate_names, *extra)))
    parts = {"sample_id": [], "y_true": [], "y_pred": [], **{name: [] for name in extra}}
    for batch in data.batches("test", labels=labels):
        parts["sample_id"].append(batch.sample_ids)
        parts["y_true"].append(batch.labels[target])
        parts["y_pred"].append(model.predict(batch.inputs, batch.labels))
        for name in extra:
            parts[name].append(batch.labels[name])
    if not parts["sample_id"]:
        raise ValueError("the test split has no samples; write shards with a test split")
    return {name: np.concatenate(values) for name, values in parts.items()}


def run_baseline(data, config: BaselineConfig, *, out_dir: str | os.PathLike = "runs",
                 results_csv: str | os.PathLike | None = None) -> dict:
    """Fit the baseline on the training split, choose its settings on validation, score the test split.

    Writes `<out_dir>/<experiment_id>/` (test_predictions.npz, baseline.json, the fitted model) and appends one
    row to `results_csv` (default `<out_dir>/results.csv`). Returns the row.
    """
    run_dir = Path(out_dir) / config.experiment_id
    results_csv = Path(out_dir) / "results.csv" if results_csv is None else Path(results_csv)
    if (run_dir / SUMMARY_NAME).exists():
        return _finished_row(run_dir, results_csv)
    make_folder(run_dir)
    logger.info("baseline %s: %s on %s input, target %s, noise level %g, seed %d", config.experiment_id,
                config.model, config.input_mode, config.target, config.noise_level, config.seed)

    started = time.perf_counter()
    state_path = None
    if config.model == "lightgbm":
        model = fit_lightgbm(data, target=config.target, settings=config.boosting)
        summary, spectra_per_s = dict(model.summary), None
        train_time = time.perf_counter() - started
        _save_booster(model.booster, run_dir / "lightgbm_model.txt")
    else:
        model, summary, spectra_per_s, state_path = fit_linear(data, config, run_dir)
        train_time = summary["train_seconds"]
        _save_arrays(run_dir / "linear_model.npz", coefficients=model.coefficients, intercepts=model.intercepts)

    predictions = predict_test(data, model, config.target, data.label_names)
    metrics = regression_metrics(predictions["y_true"], predictions["y_pred"])
    extra = {name: values for name, values in predictions.items() if name in PER_SAMPLE_COLUMNS}
    save_predictions(run_dir / PREDICTIONS_NAME, predictions["sample_id"], predictions["y_true"],
                     predictions["y_pred"], extra)
    row = _result_row(config, data, metrics, summary, train_time, spectra_per_s, run_dir)
    # The summary first: a run killed between the two writes is finished, and its rerun appends the row.
    _save_json(run_dir / SUMMARY_NAME, {"config": _config_dict(config), "summary": summary, "row": row})
    append_result(results_csv, row)
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # no longer needed: 128 MiB per expert at 4096 pixels
    logger.info("baseline %s: test R^2 %.4f, MAE %.4f (%d spectra)", config.experiment_id, metrics["r2"],
                metrics["mae"], metrics["n"])
    if summary.get("pooled_fallback"):
        logger.warning("%s", summary["pooled_fallback"])
    return row


def _finished_row(run_dir: Path, results_csv: Path) -> dict:
    """Return the stored row of a finished run, appending it to `results_csv` if the CSV lacks it."""
    row = json.loads((run_dir / SUMMARY_NAME).read_text())["row"]
    if results_csv.is_file():
        frame = read_results(results_csv)
        if "experiment_id" in frame and (frame["experiment_id"].astype(str) == row["experiment_id"]).any():
            raise ValueError(
                f"run directory {run_dir} already contains a finished baseline (test R^2 {row['test_r2']:.4f}) "
                f"with a row in {results_csv}; choose another --experiment-id or --out, or delete the directory "
                "to fit again")
    logger.info("baseline %s had finished; appending its stored row to %s", row["experiment_id"], results_csv)
    append_result(results_csv, row)
    return row


def _result_row(config, data, metrics, summary, train_time, spectra_per_s, run_dir) -> dict:
    is_lightgbm = config.model == "lightgbm"
    notes = {"ridge": f"streaming ridge, {config.noise_passes} noise realisation(s) per training spectrum",
             "lightgbm": f"LightGBM on a {summary.get('train_size')}-spectrum subsample, one noise realisation, "
                         f"rebin {config.boosting.rebin}",
             "oracle_moe": f"{ORACLE_NOTE}; gate {','.join(config.gate_labels)} x {config.n_bins} bins, "
                           f"{config.noise_passes} noise realisation(s)"}
    if summary.get("pooled_experts"):
        notes["oracle_moe"] += (f"; {summary['pooled_experts']} of {summary['n_experts']} experts fell back to "
                                "the pooled ridge")
    return {
        "experiment_id": config.experiment_id, "group": config.group, "model": config.model,
        "input": config.input_mode, "target": config.target,
        "test_r2": metrics["r2"], "test_mae": metrics["mae"], "test_rmse": metrics["rmse"],
        "test_bias": metrics["bias"], "test_n": metrics["n"],
        "train_size": summary["train_size"] if is_lightgbm else data.n_samples("train"),
        "train_time": round(train_time, 3), "spectra_per_s": spectra_per_s, "seed": config.seed,
        "code_revision": code_revision(), "run_dir": str(run_dir), "noise_level": config.noise_level,
        "noise_passes": 1 if is_lightgbm else config.noise_passes, "val_r2": summary.get("val_r2"),
        "alpha_relative": summary.get("alpha_relative_pooled"), "n_experts": summary.get("n_experts"),
        "pooled_experts": summary.get("pooled_experts"),
        "notes": notes[config.model],
    }


def _config_dict(config: BaselineConfig) -> dict:
    values = dataclasses.asdict(config)
    values["alpha_grid"] = list(config.alpha_grid)
    return values


def _save_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, default=lambda value: value.item() if hasattr(value, "item") else str(value))
    write_text_atomically(path, text)


def _save_arrays(path: Path, **arrays) -> None:
    with atomic_write(path, "wb") as stream:
        np.savez(stream, **arrays)


def _save_booster(booster, path: Path) -> None:
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    write_text_atomically(path, text)


def parse_number_list(text: str, option: str, kind=float) -> tuple:
    """Parse "1e-3,1e-2" into a tuple of `kind`; raise ValueError naming the command-line option."""
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise ValueError(f"{option} must be a comma-separated list of numbers, got {text!r}")
    return values
