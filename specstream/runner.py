"""Run the experiments of one or more groups: one process per GPU at a time, the rest queued.

Each experiment runs as its own `python -m specstream.train` process (so a crash or an out-of-memory error
ends one experiment, not the queue), pinned to one GPU with CUDA_VISIBLE_DEVICES and logging to
OUT/<experiment_id>/run.log. Experiments that already have a row in the results CSV are skipped, so an
interrupted `specstream run` continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from specstream.atomic import make_folder
from specstream.groups import Experiment

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0


@dataclass
class Outcome:
    """The exit status, log and duration of one experiment."""

    experiment: Experiment
    returncode: int | None  # None: skipped because a result row exists
    log_path: Path
    seconds: float


def train_command(experiment: Experiment, data: str, out_dir: Path, results_csv: Path,
                  extra_args: list[str], train_size_cap: int | None = None) -> list[str]:
    """Return the argv that trains one experiment."""
    command = [
        sys.executable, "-m", "specstream.train", "--data", str(data), "--out", str(out_dir),
        "--experiment-id", experiment.experiment_id, "--group", experiment.group, "--model", experiment.model,
        "--input", experiment.input_mode, "--target", ",".join(experiment.targets),
        "--epochs", str(experiment.epochs), "--batch-size", str(experiment.batch_size),
        "--lr", str(experiment.lr), "--weight-decay", str(experiment.weight_decay),
        "--patience", str(experiment.patience), "--seed", str(experiment.seed), "--results", str(results_csv),
    ]
    train_size = experiment.train_size
    if train_size is not None and train_size_cap is not None and train_size > train_size_cap:
        logger.warning("%s requests %d training spectra but the data has %d; using all %d",
                       experiment.experiment_id, train_size, train_size_cap, train_size_cap)
        train_size = None
    if train_size is not None:
        command += ["--train-size", str(train_size)]
    # Both spellings, so the command states its choice whatever the trainer's default.
    command.append("--input-norm" if experiment.input_norm else "--no-input-norm")
    return command + list(extra_args)


def completed_ids(results_csv: Path) -> set[str]:
    """Return the experiment ids that already have a row in the results CSV."""
    if not results_csv.is_file():
        return set()
    from specstream.results import read_results

    frame = read_results(results_csv)
    return set(frame["experiment_id"].astype(str)) if "experiment_id" in frame else set()


def _cuda_device_count() -> int:
    """Return the number of CUDA devices, 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_experiments(experiments: list[Experiment], *, data: str, out_dir: Path, results_csv: Path,
                    gpus: list[str] | None, extra_args: list[str] = (), train_size_cap: int | None = None,
                    on_finish: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run `experiments`, at most one per GPU in `gpus` at a time (one at a time when `gpus` is None)."""
    make_folder(out_dir)
    done = completed_ids(results_csv)
    queue = []
    outcomes = []
    for experiment in experiments:
        log_path = out_dir / experiment.experiment_id / "run.log"
        if experiment.experiment_id in done:
            logger.info("skipping %s: it already has a row in %s (its settings are not compared; give another "
                        "--results file to run it again)", experiment.experiment_id, results_csv)
            outcomes.append(Outcome(experiment, None, log_path, 0.0))
        else:
            queue.append(experiment)
    slots = list(gpus) if gpus else [None]
    if gpus and not _cuda_device_count():
        logger.warning("--gpus %s given, but this machine shows no CUDA device: the %d runs train on the CPU, "
                       "%d at a time", ",".join(gpus), len(queue), len(slots))
    running: dict[object, tuple] = {}
    try:
        while queue or running:
            for slot in slots:
                if slot in running or not queue:
                    continue
                experiment = queue.pop(0)
                running[slot] = _start(experiment, slot, data, out_dir, results_csv, extra_args, train_size_cap)
            time.sleep(POLL_INTERVAL_S)
            for slot, (experiment, process, log_file, log_path, started) in list(running.items()):
                if process.poll() is None:
                    continue
                log_file.close()
                outcome = Outcome(experiment, process.returncode, log_path, time.monotonic() - started)
                if process.returncode != 0:
                    logger.error("%s failed with exit code %d; see %s", experiment.experiment_id,
                                 process.returncode, log_path)
                outcomes.append(outcome)
                if on_finish is not None:
                    on_finish(outcome)
                del running[slot]
    finally:
        for experiment, process, log_file, _, _ in running.values():
            logger.warning("stopping %s", experiment.experiment_id)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within 30 s of SIGTERM; killing it", experiment.experiment_id)
                process.kill()
                process.wait()
            log_file.close()
    return outcomes


def _start(experiment: Experiment, slot, data, out_dir, results_csv, extra_args, train_size_cap) -> tuple:
    command = train_command(experiment, data, out_dir, results_csv, extra_args, train_size_cap)
    log_path = out_dir / experiment.experiment_id / "run.log"
    make_folder(log_path.parent)
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(slot)
    logger.info("starting %s%s: log in %s", experiment.experiment_id,
                f" on GPU {slot}" if slot is not None else "", log_path)
    log_file = open(log_path, "a")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return experiment, process, log_file, log_path, time.monotonic()
