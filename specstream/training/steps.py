"""One training epoch: the learning-rate schedule, the masked loss and the step loop with its timing.

The step loop makes the host wait for the device only at log points. The loss is summed on the device and
read with .item() every `log_every` steps and once at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

FAIL_AFTER_STEPS_ENV = "SPECSTREAM_FAIL_AFTER_STEPS"
"""Test hook: when set to N, the trainer raises SimulatedFailure after N steps of this process."""


class SimulatedFailure(RuntimeError):
    """Raised by the SPECSTREAM_FAIL_AFTER_STEPS test hook to imitate a run killed mid-epoch."""


def fail_after_steps() -> int | None:
    """Return the step count of the SPECSTREAM_FAIL_AFTER_STEPS test hook, or None when it is unset."""
    text = os.environ.get(FAIL_AFTER_STEPS_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{FAIL_AFTER_STEPS_ENV}={text!r} is not an integer; unset it or give a step count") from None


def learning_rate(step: int, *, peak_lr: float, total_steps: int, warmup_steps: int) -> float:
    """Return the learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def masked_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of squared errors, count) over the finite targets; unset (NaN) labels add nothing."""
    finite = torch.isfinite(targets)  # (batch, n_targets)
    residual = torch.where(finite, outputs - targets, 0.0)
    return (residual * residual).sum(), finite.sum()


@dataclass
class EpochResult:
    """Measurements of one training epoch, summed over all ranks."""

    train_loss: float  # mean squared error in standardized label units
    n_samples: int  # spectra processed by all ranks
    n_steps: int
    epoch_time_s: float  # wall time of the training phase, validation excluded
    data_wait_s: float  # time this rank spent waiting for its next batch

    @property
    def samples_per_s(self) -> float:
        return self.n_samples / self.epoch_time_s if self.epoch_time_s > 0 else float("nan")

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_s / self.epoch_time_s if self.epoch_time_s > 0 else float("nan")


@dataclass
class Stepper:
    """Training-step state: the forward function, optimizer, precision, label scaling and schedule."""

    module: torch.nn.Module  # the module (or DDP wrapper) whose train()/eval() mode is set
    forward: Callable[[torch.Tensor], torch.Tensor]  # compiled or eager forward of `module`
    optimizer: torch.optim.Optimizer
    autocast: Callable[[], contextlib.AbstractContextManager]
    device: torch.device
    label_mean: torch.Tensor  # (n_targets,) on device
    label_std: torch.Tensor  # (n_targets,) on device
    peak_lr: float
    total_steps: int
    warmup_steps: int
    log_every: int
    is_main: bool
    fail_after: int | None = None  # test hook, see FAIL_AFTER_STEPS_ENV
    steps_this_process: int = 0

    def run_epoch(self, loader, epoch: int, first_step: int) -> EpochResult:
        """Train one epoch; `first_step` is the global step count before it (for the schedule and logs)."""
        self.module.train()
        loss_sum = torch.zeros((), device=self.device)
        label_count = torch.zeros((), device=self.device, dtype=torch.int64)
        n_samples = n_steps = 0
        data_wait_s = 0.0
        started = time.perf_counter()
        waiting_since = started
        for batch in loader:
            data_wait_s += time.perf_counter() - waiting_since
            step = first_step + n_steps
            squared_error, count = self._step(batch, step)
            loss_sum += squared_error
            label_count += count
            n_samples += batch.inputs.shape[0]
            n_steps += 1
            self.steps_this_process += 1
            if self.is_main and (step + 1) % self.log_every == 0:
                self._log_step(epoch, step, loss_sum, label_count, n_samples, started, data_wait_s)
            if self.fail_after is not None and self.steps_this_process >= self.fail_after:
                raise SimulatedFailure(f"{FAIL_AFTER_STEPS_ENV}={self.fail_after}: stopping after step {step + 1}")
            waiting_since = time.perf_counter()

        totals = torch.stack([loss_sum.double(), label_count.double(),
                              torch.tensor(float(n_samples), device=self.device, dtype=torch.float64)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        loss_total, count_total, samples_total = totals.tolist()  # waits for the device: epoch end
        epoch_time_s = time.perf_counter() - started
        train_loss = loss_total / count_total if count_total else float("nan")
        return EpochResult(train_loss, int(samples_total), n_steps, epoch_time_s, data_wait_s)

    def _step(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = batch.inputs.to(self.device, non_blocking=True)  # (batch, n_pixels)
        labels = batch.labels.to(self.device, non_blocking=True)  # (batch, n_targets)
        targets = (labels - self.label_mean) / self.label_std  # standardized labels

        lr = learning_rate(step, peak_lr=self.peak_lr, total_steps=self.total_steps,
                           warmup_steps=self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        with self.autocast():
            outputs = self.forward(inputs)  # (batch, n_targets)
        squared_error, count = masked_squared_error(outputs.float(), targets)
        loss = squared_error / count.clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return squared_error.detach(), count

    def _log_step(self, epoch, step, loss_sum, label_count, n_samples, started, data_wait_s) -> None:
        # .item() waits for the device; this is the only sync inside an epoch.
        loss = loss_sum.item() / max(label_count.item(), 1)
        elapsed = time.perf_counter() - started
        logger.info(
            "epoch=%d step=%d loss=%.5f lr=%.3g samples_per_s=%.0f data_wait_share=%.3f",
            epoch, step + 1, loss, self.optimizer.param_groups[0]["lr"], n_samples / elapsed,
            data_wait_s / elapsed,
        )
