"""Find each experiment's run directory and read its per-sample test predictions and per-epoch log."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from specstream.results import load_predictions, read_jsonl

from .table import NO_GROUP

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "test_predictions.npz"
EPOCHS_NAME = "epochs.jsonl"


@dataclass
class RunFiles:
    """Files the report found for one experiment; `problems` gives the reason a file is missing or unusable."""

    experiment_id: str
    label: str  # short legend text, e.g. "mlp_3L_1024 (flux_only)", which legend_labels extends on collisions
    target: str
    run_dir: Path | None
    group: str | None = None
    seed: str | None = None  # e.g. "seed 1", from the results CSV's seed column
    predictions: pd.DataFrame | None = None  # sample_id, y_true, y_pred, then mag, snr, ...
    epochs: pd.DataFrame | None = None  # one row per epoch: epoch, train_loss, val_loss, val_r2, lr, ...
    problems: list[str] = field(default_factory=list)


def resolve_run_dir(value, results_csv: Path) -> Path | None:
    """Return the run directory of a results row, or None when the row names none that exists.

    A relative path is tried against the current directory, then against the results CSV's directory.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    path = Path(str(value))
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, results_csv.parent / path,
                                                     results_csv.parent / path.name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def _read_predictions(run: RunFiles) -> None:
    path = run.run_dir / PREDICTIONS_NAME
    if not path.exists():
        run.problems.append(f"no {PREDICTIONS_NAME} in {run.run_dir}")
        return
    try:
        predictions = load_predictions(path)
    except ValueError as error:
        logger.warning("skipping the predictions of %s: %s", run.experiment_id, error)
        run.problems.append(str(error))
        return
    if len(predictions) == 0:
        run.problems.append(f"{path} has no samples")
        return
    run.predictions = predictions


def _read_epochs(run: RunFiles) -> None:
    path = run.run_dir / EPOCHS_NAME
    if not path.exists():
        return  # baselines have no epochs; not a problem worth a note
    try:
        records = read_jsonl(path)
    except ValueError as error:
        logger.warning("skipping the epoch log of %s: %s", run.experiment_id, error)
        run.problems.append(str(error))
        return
    records = [record for record in records if isinstance(record, dict) and "epoch" in record]
    if not records:
        run.problems.append(f"{path} has no record with an epoch field")
        return
    frame = pd.DataFrame(records)
    for column in ("train_loss", "val_loss", "val_r2", "lr"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    # A resumed run may log an epoch twice; the later record is the one the run continued from.
    run.epochs = frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _qualify(label: str, qualifier: str) -> str:
    """Add `qualifier` inside the label's closing bracket: "mlp (flux_only)" -> "mlp (flux_only, seed 1)"."""
    return f"{label[:-1]}, {qualifier})" if label.endswith(")") else f"{label} ({qualifier})"


def legend_labels(runs: list[RunFiles]) -> list[str]:
    """Return one legend label per run, unique within `runs` and as short as that allows.

    Runs whose labels collide get their group added where the groups differ, then their seed, then their
    experiment id. A run keeps its short label when no other run in `runs` has the same one.
    """
    labels = [run.label for run in runs]
    qualifiers = (lambda run: run.group, lambda run: run.seed, lambda run: run.experiment_id)
    for qualifier in qualifiers:
        positions: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            positions.setdefault(label, []).append(i)
        for colliding in positions.values():
            values = [qualifier(runs[i]) for i in colliding]
            if len(colliding) < 2 or len(set(values)) < 2:
                continue  # unique already, or this qualifier cannot tell the runs apart
            for i, value in zip(colliding, values):
                if value is not None:
                    labels[i] = _qualify(labels[i], value)
    return labels


def _seed_text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    number = pd.to_numeric(value, errors="coerce")
    if pd.notna(number) and float(number).is_integer():
        return f"seed {int(number)}"
    return f"seed {value}"


def load_runs(rows: pd.DataFrame, results_csv: Path) -> list[RunFiles]:
    """Collect predictions and epoch logs for the rows of a summary table, in the table's order."""
    runs = []
    for _, row in rows.iterrows():
        label = f"{row['model'] or row['experiment_id']} ({row['input'] or '?'})"
        if row.get("is_oracle"):
            label = label[:-1] + ", upper bound)"
        target = str(row["target"]).split(",")[0] if row["target"] else "log_g"
        group = None if row["group"] == NO_GROUP else row["group"]
        run = RunFiles(row["experiment_id"], label, target, resolve_run_dir(row.get("run_dir"), results_csv),
                       group=group, seed=_seed_text(row.get("seed")))
        if run.run_dir is None:
            run.problems.append("no run directory (run_dir column empty or not found)")
        else:
            _read_predictions(run)
            _read_epochs(run)
        runs.append(run)
    return runs
