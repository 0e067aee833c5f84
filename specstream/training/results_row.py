"""The end of a run: test metrics, per-sample predictions, the results row and result.json."""

from __future__ import annotations

import logging

from specstream.results import append_result, code_revision, read_results, save_predictions
from specstream.training import evaluation, run_files
from specstream.training.model_setup import use_bf16

logger = logging.getLogger(__name__)


def _bin_column(name: str, lo: float, hi: float) -> str:
    return f"test_r2_{name}_{lo:g}_{hi:g}"


def result_row(run, metrics: dict, tables: dict) -> dict:
    """Return the results row of a finished run (columns as in specstream.results.KNOWN_COLUMNS, then more)."""
    config, progress, data = run.config, run.progress, run.data
    phase_time = progress.train_phase_time_s
    row = {
        "experiment_id": config.experiment_id,
        "group": config.group,
        "model": config.model,
        "input": config.input_mode,
        "target": ",".join(config.targets),
        "test_r2": metrics["r2"],
        "test_mae": metrics["mae"],
        "test_rmse": metrics["rmse"],
        "test_bias": metrics["bias"],
        "test_n": metrics["n"],
        "train_size": data.n_train,
        "train_time": round(progress.train_time_s, 3),
        "epochs_run": progress.next_epoch,
        "best_epoch": progress.best_epoch,
        "val_loss": progress.best_val_loss,
        "params": run.bundle.n_parameters,
        "world_size": run.world.world_size,
        "device": str(run.device),
        "spectra_per_s": round(progress.samples_seen / phase_time, 1) if phase_time > 0 else None,
        "seed": config.seed,
        "code_revision": code_revision(),
        "run_dir": str(config.run_dir),
        "data_path": data.data_path,
        "compiled": run.bundle.compiled,
        "precision": "bf16" if use_bf16(run.config.precision, run.device) else "fp32",
        "noise_level": config.noise_level,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "stopped_early": progress.stopped_early,
    }
    for key, value in metrics.items():
        if key not in ("r2", "mae", "rmse", "bias", "n"):
            row[f"test_{key}"] = value  # metrics of the second and later targets
    if "mag" in tables:
        for bin_row in tables["mag"].itertuples():
            row[_bin_column("mag", bin_row.lo, bin_row.hi)] = bin_row.r2
    return row


def finish_run(run, predictions: evaluation.Predictions) -> dict:
    """Score the test predictions and, on rank 0, write the run's result files and the results row."""
    config = run.config
    metrics = evaluation.split_metrics(predictions, config.targets)
    tables = evaluation.binned_tables(predictions)
    row = result_row(run, metrics, tables)
    if not run.world.is_main:
        return row

    run_dir = config.run_dir
    for column, target in enumerate(config.targets):
        name = run_files.PREDICTIONS_NAME if column == 0 else f"test_predictions_{target}.npz"
        save_predictions(run_dir / name, predictions.sample_ids, predictions.y_true[:, column],
                         predictions.y_pred[:, column], predictions.extra)
    run_files.write_json_atomically(run_dir / run_files.TEST_METRICS_NAME, {
        "metrics": metrics,
        "binned_target": config.targets[0],
        "binned": {name: table.to_dict(orient="records") for name, table in tables.items()},
    })
    # result.json first: a run killed between the two writes is finished, and its resume appends the row.
    run_files.write_json_atomically(run_dir / run_files.RESULT_NAME, row)
    append_result(config.results_csv, row)
    logger.info("test %s: R^2=%.4f MAE=%.4f RMSE=%.4f bias=%.4f on %d spectra (best epoch %d)", config.targets[0],
                metrics["r2"], metrics["mae"], metrics["rmse"], metrics["bias"], metrics["n"],
                run.progress.best_epoch)
    return row


def ensure_result_row(results_csv, row: dict) -> None:
    """Append the stored row of a finished run to `results_csv` unless the CSV has its experiment_id already."""
    if results_csv.is_file():
        frame = read_results(results_csv)
        if "experiment_id" in frame and (frame["experiment_id"].astype(str) == row["experiment_id"]).any():
            return
    logger.info("appending the stored result of %s to %s", row["experiment_id"], results_csv)
    append_result(results_csv, row)
