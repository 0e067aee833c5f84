"""The files of one run directory: config.json, train.log, epochs.jsonl, checkpoints and result.json.

Only rank 0 writes them. Every file is written atomically (temporary name, then rename) except the two
append-only logs, and a resumed run first drops the epoch lines that its checkpoint does not cover.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from specstream.atomic import write_text_atomically
from specstream.results import read_jsonl

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"  # state after the last finished epoch
BEST_NAME = "best.pt"  # model weights of the epoch with the lowest validation loss
CONFIG_NAME = "config.json"
EPOCHS_NAME = "epochs.jsonl"
LOG_NAME = "train.log"
RESULT_NAME = "result.json"  # the results row, written when the run has finished
PREDICTIONS_NAME = "test_predictions.npz"
TEST_METRICS_NAME = "test_metrics.json"

# Fields that may differ between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = frozenset({"resume", "compile", "num_workers", "log_every", "results_csv", "out_dir", "data",
                               "read_mode", "cache_dir"})


def write_json_atomically(path: Path, value) -> None:
    """Write `value` as indented JSON to `path` through a temporary file in the same directory."""
    write_text_atomically(path, json.dumps(value, indent=1, default=str) + "\n")


def check_run_directory(run_dir: Path, resume: bool) -> None:
    """Raise ValueError when a new run would overwrite an earlier one, or a resume has nothing to resume."""
    checkpoint = run_dir / CHECKPOINT_NAME
    if resume and not checkpoint.is_file() and not (run_dir / RESULT_NAME).is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {checkpoint}; start the run without --resume"
        )
    if not resume and (checkpoint.exists() or (run_dir / RESULT_NAME).exists()):
        raise ValueError(
            f"run directory {run_dir} already contains a run; pass --resume to continue it, or choose another "
            "--experiment-id or --out"
        )


def check_resume_compatible(saved: dict, current: dict, checkpoint: Path) -> None:
    """Raise ValueError when a setting that changes the results differs from the checkpoint's run."""
    changed = [
        f"{name}: checkpoint {saved.get(name)!r}, now {value!r}"
        for name, value in current.items()
        if name not in RESUMABLE_CHANGES and saved.get(name) != value
    ]
    if changed:
        raise ValueError(
            f"cannot resume from {checkpoint}: settings differ from the interrupted run ({'; '.join(changed)}); "
            "pass the original settings, or start a new run under another --experiment-id"
        )


def check_same_shard_set(saved: dict | None, current: dict, checkpoint: Path) -> None:
    """Raise ValueError when the shard set differs from the one the checkpoint's run trained on.

    Both arguments are data_setup.shard_set_identity() dicts. The shard set may have moved, so only the
    manifest digest is compared, and the locations serve the message. Checkpoints written before the
    identity was recorded (saved is None) cannot be checked and get a warning.
    """
    if saved is None:
        logger.warning("checkpoint %s does not record which shard set it was trained on, so resuming cannot check "
                       "that --data %s is the same data", checkpoint, current["data"])
        return
    if saved["manifest_sha256"] == current["manifest_sha256"]:
        return
    before, now = _describe_shard_set(saved), _describe_shard_set(current)
    if saved["data"] == current["data"]:
        raise ValueError(
            f"cannot resume from {checkpoint}: the shard set at {current['data']} changed since the interrupted run "
            f"(checkpoint {before}, now {now}); restore the original shards, or rerun without --resume under a "
            "new --experiment-id"
        )
    raise ValueError(
        f"cannot resume from {checkpoint}: data differs from the interrupted run (checkpoint {saved['data']} "
        f"with {before}, now {current['data']} with {now}); pass the original --data {saved['data']}, or rerun "
        "without --resume under a new --experiment-id"
    )


def _describe_shard_set(identity: dict) -> str:
    splits = ", ".join(f"{name} {count}" for name, count in identity["n_samples"].items())
    return f"manifest SHA-256 {identity['manifest_sha256'][:16]}... ({splits})"


def trim_epoch_log(path: Path, next_epoch: int) -> None:
    """Drop the lines of epochs >= next_epoch (logged after the last checkpoint) before a resumed run appends."""
    if not path.is_file():
        return
    records = [record for record in read_jsonl(path) if record.get("epoch", -1) < next_epoch]
    write_text_atomically(path, "".join(json.dumps(record) + "\n" for record in records))


def add_log_file(run_dir: Path) -> logging.Handler:
    """Copy the package's log records to run_dir/train.log (appending); return the handler to remove later."""
    handler = logging.FileHandler(run_dir / LOG_NAME, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("specstream")
    handler.previous_level = package_logger.level  # restored by remove_log_file
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)  # so the file gets the INFO lines even if the console does not
    return handler


def remove_log_file(handler: logging.Handler) -> None:
    """Detach and close a handler returned by add_log_file, and restore the package logger's level."""
    package_logger = logging.getLogger("specstream")
    package_logger.removeHandler(handler)
    package_logger.setLevel(handler.previous_level)
    handler.close()
