"""train(config): one training run from shards to a results row, in one process or under torchrun.

Phases: join the process group and set up data and model, or restore them from the last checkpoint. Then
each epoch trains, validates, logs, keeps the best weights and writes a checkpoint, until the last epoch or
early stopping. Finally the best weights are evaluated on the test split and the results row is appended.

Resume works at epoch boundaries: a run killed during epoch e restarts e from its beginning. The batch
order and noise of an epoch are pure functions of (seed, epoch, rank), and dropout is reseeded from
(seed, epoch, rank) at the start of every epoch. A resumed run therefore reaches the same final weights as
an uninterrupted run with the same seed and world size, bit for bit on the CPU (tested).
NOTE: on CUDA, kernels without a deterministic implementation may make a resumed run differ slightly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from specstream.atomic import make_folder
from specstream.checkpoint import load_checkpoint, save_checkpoint
from specstream.results import JsonlLog, append_result, code_revision, environment_summary
from specstream.training import evaluation, run_files
from specstream.training.config import TrainConfig
from specstream.training.data_setup import TrainingData, build_data
from specstream.training.model_setup import (ModelBundle, autocast_factory, build_bundle, epoch_seed, resolve_device,
                                             use_bf16)
from specstream.training.results_row import ensure_result_row, finish_run
from specstream.training.input_norm import estimate_input_stats
from specstream.training.steps import Stepper, fail_after_steps
from specstream.world import World, cleanup, init_distributed

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Training progress that a checkpoint carries across a restart."""

    next_epoch: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0  # wall time of all finished epochs, validation included
    train_phase_time_s: float = 0.0  # the same without validation, for spectra/s
    samples_seen: int = 0  # spectra processed by all ranks

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def record_validation(self, epoch: int, val_loss: float, patience: int) -> bool:
        """Update the best epoch and the early-stopping count; return whether `val_loss` is a new best."""
        improved = val_loss < self.best_val_loss  # a NaN loss never improves
        if improved:
            self.best_val_loss, self.best_epoch = val_loss, epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            self.stopped_early = self.epochs_without_improvement >= patience
        return improved


@dataclass
class Run:
    """Everything a running training job holds."""

    config: TrainConfig
    world: World
    device: torch.device
    data: TrainingData
    bundle: ModelBundle
    progress: Progress = field(default_factory=Progress)
    best_state: dict | None = None  # CPU copy of the best model weights
    phase: str = "start-up"  # what the run is doing, for the message after an interruption
    checkpoint_epochs: int | None = None  # epochs that checkpoint.pt covers; None when this process has not seen it


class TrainingInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt (Ctrl-C) during train(), whose message states where the run stopped and how to continue."""


def interruption_message(config: TrainConfig, phase: str = "start-up", checkpoint_epochs: int | None = None) -> str:
    """Return the one-line message after an interruption during `phase`, naming the checkpoint to resume from."""
    checkpoint = config.run_dir / run_files.CHECKPOINT_NAME
    if not checkpoint.is_file():
        return (f"interrupted during {phase}; {config.run_dir} has no checkpoint yet, so rerun the same command "
                "without --resume to start over")
    saved_after = "" if not checkpoint_epochs else f", saved after epoch {checkpoint_epochs - 1}"
    return (f"interrupted during {phase}; the last checkpoint is {checkpoint}{saved_after}; rerun the same command "
            "with --resume to continue")


def train(config: TrainConfig) -> dict:
    """Run one training job and return its results row (the same dict on every rank).

    Joins the default process group when launched by torchrun and leaves it at the end, unless the
    caller had joined it already.
    """
    world = World.from_env()
    device = resolve_device(config.device, world)
    joined_here = world.is_distributed and not (dist.is_available() and dist.is_initialized())
    init_distributed(world, backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(config, world, device)
    finally:
        if joined_here:
            cleanup()


def _train(config: TrainConfig, world: World, device: torch.device) -> dict:
    run_dir = config.run_dir
    run_files.check_run_directory(run_dir, config.resume)
    finished = run_dir / run_files.RESULT_NAME
    if config.resume and finished.is_file():
        logger.info("run %s has already finished; returning its stored result without training", run_dir)
        row = json.loads(finished.read_text())
        if world.is_main:
            ensure_result_row(config.results_csv, row)
        return row

    log_handler = None
    if world.is_main:
        make_folder(run_dir)
        log_handler = run_files.add_log_file(run_dir)
    run = None
    try:
        data = build_data(config, world, device)
        input_stats = None
        if config.input_norm:
            input_stats = estimate_input_stats(data.train, data.n_pixels, device, world)
        bundle = build_bundle(config, n_pixels=data.n_pixels, device=device, world=world, input_stats=input_stats)
        run = Run(config, world, device, data, bundle)
        if config.resume:
            _restore(run)
        if world.is_main:
            header = _run_header(run)
            logger.info("run header: %s", json.dumps(header, default=str))
            run_files.write_json_atomically(run_dir / run_files.CONFIG_NAME, header)
        _train_epochs(run)
        run.phase = "the test split evaluation"
        return finish_run(run, _test_predictions(run))
    except KeyboardInterrupt as interrupt:
        # Checkpoints are written atomically, so the last complete one stays valid whenever the interrupt comes.
        message = (interruption_message(config) if run is None
                   else interruption_message(config, run.phase, run.checkpoint_epochs))
        if world.is_main:
            logger.info("stopped by KeyboardInterrupt: %s", message)
        raise TrainingInterrupted(message) from interrupt
    finally:
        if log_handler is not None:
            run_files.remove_log_file(log_handler)


def _run_header(run: Run) -> dict:
    data, bundle = run.data, run.bundle
    return {
        "code_revision": code_revision(),
        "environment": environment_summary(),
        "device": str(run.device),
        "world_size": run.world.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "data_path": data.data_path,
        "data_path_reason": data.data_path_reason,
        "shard_set": data.shard_set,
        "n_train": data.n_train,
        "n_val": data.n_val,
        "n_test": data.n_test,
        "n_pixels": data.n_pixels,
        "steps_per_epoch": len(data.train),
        "params": bundle.n_parameters,
        "compiled": bundle.compiled,
        "bf16": use_bf16(run.config.precision, run.device),
        "resumed_at_epoch": run.progress.next_epoch if run.config.resume else None,
        "config": run.config.to_dict(),
    }


def _checkpoint_state(run: Run) -> dict:
    return {
        "model": run.bundle.model.state_dict(),
        "best_model": run.best_state,  # resume reads the best weights here: best.pt may be one epoch newer
        "optimizer": run.bundle.optimizer.state_dict(),
        "progress": run.progress.as_dict(),
        "config": run.config.to_dict(),
        "world_size": run.world.world_size,
        "data_path": run.data.data_path,
        "shard_set": run.data.shard_set,  # a resumed run checks that it reads the same shard set
        "label_mean": run.data.label_mean.tolist(),
        "label_std": run.data.label_std.tolist(),
    }


def _best_state(run: Run) -> dict:
    return {
        "model": run.best_state,
        "epoch": run.progress.best_epoch,
        "val_loss": run.progress.best_val_loss,
        "config": run.config.to_dict(),
        "model_name": run.config.model,
        "n_pixels": run.data.n_pixels,
        "targets": list(run.config.targets),
        "label_mean": run.data.label_mean.tolist(),
        "label_std": run.data.label_std.tolist(),
    }


def _restore(run: Run) -> None:
    """Load checkpoint.pt of the run directory into `run` (every rank reads it)."""
    path = run.config.run_dir / run_files.CHECKPOINT_NAME
    state = load_checkpoint(path, map_location=run.device)
    run_files.check_resume_compatible(state["config"], run.config.to_dict(), path)
    run_files.check_same_shard_set(state.get("shard_set"), run.data.shard_set, path)
    saved = {"world_size": state["world_size"], "data_path": state["data_path"]}
    now = {"world_size": run.world.world_size, "data_path": run.data.data_path}
    if saved != now:
        raise ValueError(
            f"cannot resume from {path}: it was written with {saved}, this run has {now}; resume with the same "
            "number of processes and --data-path, or start a new run under another --experiment-id"
        )
    run.bundle.model.load_state_dict(state["model"])
    run.bundle.optimizer.load_state_dict(state["optimizer"])
    run.progress = Progress(**state["progress"])
    run.checkpoint_epochs = run.progress.next_epoch
    if state["best_model"] is not None:
        run.best_state = {name: tensor.cpu() for name, tensor in state["best_model"].items()}
    if run.world.is_main:
        run_files.trim_epoch_log(run.config.run_dir / run_files.EPOCHS_NAME, run.progress.next_epoch)
    logger.info("resumed %s at epoch %d (step %d)", run.config.run_dir, run.progress.next_epoch,
                run.progress.global_step)


def _train_epochs(run: Run) -> None:
    config, data, bundle, progress = run.config, run.data, run.bundle, run.progress
    steps_per_epoch = len(data.train)
    stepper = Stepper(
        module=bundle.train_module, forward=bundle.train_forward, optimizer=bundle.optimizer,
        autocast=autocast_factory(run.device, use_bf16(config.precision, run.device)), device=run.device,
        label_mean=torch.as_tensor(data.label_mean, dtype=torch.float32, device=run.device),
        label_std=torch.as_tensor(data.label_std, dtype=torch.float32, device=run.device),
        peak_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch), log_every=config.log_every,
        is_main=run.world.is_main, fail_after=fail_after_steps(),
    )
    epoch_log = JsonlLog(config.run_dir / run_files.EPOCHS_NAME) if run.world.is_main else None
    try:
        while progress.next_epoch < config.epochs and not progress.stopped_early:
            _run_epoch(run, stepper, epoch_log)
    finally:
        if epoch_log is not None:
            epoch_log.close()


def _run_epoch(run: Run, stepper: Stepper, epoch_log: JsonlLog | None) -> None:
    config, data, progress = run.config, run.data, run.progress
    epoch = progress.next_epoch
    run.phase = f"epoch {epoch}"
    started = time.perf_counter()

    # Train: dropout draws are reseeded per epoch so that a resumed run repeats them.
    torch.manual_seed(epoch_seed(config.seed, epoch, run.world.rank))
    data.train.set_epoch(epoch)
    result = stepper.run_epoch(data.train, epoch, progress.global_step)

    # Validate on the whole split (every rank gets every prediction), then decide on early stopping.
    val_started = time.perf_counter()
    predictions = _predict(run, data.val, stepper.autocast)
    val_loss = evaluation.standardized_loss(predictions, data.label_mean, data.label_std)
    val_metrics = evaluation.split_metrics(predictions, config.targets)
    val_time_s = time.perf_counter() - val_started

    progress.next_epoch = epoch + 1
    progress.global_step += result.n_steps
    progress.samples_seen += result.n_samples
    progress.train_phase_time_s += result.epoch_time_s
    progress.train_time_s += time.perf_counter() - started
    improved = progress.record_validation(epoch, val_loss, config.patience)
    if improved:
        run.best_state = {name: tensor.detach().cpu().clone()
                          for name, tensor in run.bundle.model.state_dict().items()}

    record = {
        "epoch": epoch, "step": progress.global_step, "train_loss": result.train_loss, "val_loss": val_loss,
        "val_r2": val_metrics["r2"], "val_mae": val_metrics["mae"],
        "lr": run.bundle.optimizer.param_groups[0]["lr"], "samples_per_s": result.samples_per_s,
        "data_wait_share": result.data_wait_share, "epoch_time_s": result.epoch_time_s,
        "val_time_s": val_time_s, "best_epoch": progress.best_epoch,
    }
    if run.world.is_main:
        logger.info("epoch %s", " ".join(f"{key}={_format(value)}" for key, value in record.items()))
        epoch_log.write(record)
        if improved:
            save_checkpoint(config.run_dir / run_files.BEST_NAME, _best_state(run))
        save_checkpoint(config.run_dir / run_files.CHECKPOINT_NAME, _checkpoint_state(run))
        run.checkpoint_epochs = progress.next_epoch
        if progress.stopped_early:
            logger.info("early stopping after epoch %d: no lower validation loss for %d epochs (best epoch %d)",
                        epoch, config.patience, progress.best_epoch)


def _format(value) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _predict(run: Run, loader, autocast) -> evaluation.Predictions:
    """Predict a whole split with the current weights; every rank returns the same Predictions."""
    run.bundle.train_module.eval()
    if run.world.is_distributed:
        # Each rank's last training step updates its own BatchNorm running statistics. Use rank 0's, which
        # best.pt stores, so that every rank evaluates the same model.
        for buffer in run.bundle.model.buffers():
            dist.broadcast(buffer, src=0)
    loader.set_epoch(0)  # val and test use the fixed noise draw whatever the epoch
    ids, values, extra_names = evaluation.predict_part(run.bundle.eval_forward, loader, device=run.device,
                                                       autocast=autocast)
    ids, values = evaluation.gather_rows(ids, values)
    return evaluation.to_predictions(ids, values, label_mean=run.data.label_mean, label_std=run.data.label_std,
                                     extra_names=extra_names)


def _test_predictions(run: Run) -> evaluation.Predictions:
    """Load the best weights and predict the test split."""
    if run.best_state is None:
        raise ValueError(
            f"no epoch of {run.config.run_dir} reached a finite validation loss, so there are no best weights to "
            "test; lower --lr or check the data for invalid values"
        )
    run.bundle.model.load_state_dict(run.best_state)
    autocast = autocast_factory(run.device, use_bf16(run.config.precision, run.device))
    return _predict(run, run.data.test, autocast)

