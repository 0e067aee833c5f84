"""Ridge experts fitted in one streaming pass: plain ridge (one expert) and the oracle mixture of experts.

Fitting runs in three steps:
1. `accumulate`: stream the training split `noise_passes` times (noise realisations = training epochs 0, 1,
   ...) and add each row to the Gram accumulator of its gate bin. The pass can checkpoint its state and resume.
2. `solve_paths`: per expert, and for the pooled data (the single-expert model), compute coefficients for every
   alpha of the grid from one eigendecomposition.
3. `select_on_validation`: stream the validation split once (fixed noise draw) and pick, per expert, the alpha
   with the smallest squared error on that expert's validation samples. The pooled ridge at its own best alpha
   is a candidate for every expert too, so on the validation split the mixture is never worse than the single
   ridge it contains.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .gate import Gate
from .ridge import GramAccumulator, RidgePath, absolute_alphas, predict, warn_if_grid_edge

from specstream.atomic import atomic_write

logger = logging.getLogger(__name__)

# Reasons an expert uses the pooled ridge (the "fallback" field of LinearExperts.choices).
FALLBACK_FEW_TRAIN_ROWS = "too_few_train_rows"  # fewer training rows than min_rows, so no model was solved
FALLBACK_NO_VALIDATION = "no_val_samples"  # no validation sample falls in the expert's bin
FALLBACK_POOLED_BETTER = "pooled_lower_val_error"  # the pooled ridge had the smaller validation error there


@dataclass
class TrainingPass:
    """Outcome of the streaming training pass."""

    accumulators: list[GramAccumulator]  # per expert; with gating labels, one more for rows where they are NaN
    n_rows: int  # rows accumulated over all noise passes
    n_dropped: int  # rows left out because the target is NaN
    seconds: float  # wall time of the pass, including time spent before a resume


@dataclass
class PassCheckpoint:
    """Checkpoint file, save interval and settings fingerprint of the training pass.

    A rerun resumes from the file only when its fingerprint equals the saved one.
    """

    path: Path
    fingerprint: dict
    interval_s: float = 600.0

    def load(self, n_accumulators: int):
        if not self.path.exists():
            return None
        with np.load(self.path) as state:
            saved = json.loads(str(state["fingerprint"]))
            if saved != self.fingerprint:
                raise ValueError(
                    f"{self.path} was written by a run with other settings ({saved}); expected {self.fingerprint}. "
                    "Delete the file or use another run directory")
            accumulators = [GramAccumulator.from_state(state, f"a{i}_") for i in range(n_accumulators)]
            return int(state["realisation"]), int(state["batches_done"]), int(state["n_dropped"]), \
                float(state["seconds"]), accumulators

    def save(self, realisation, batches_done, n_dropped, seconds, accumulators) -> None:
        arrays = {"fingerprint": np.array(json.dumps(self.fingerprint)), "realisation": np.int64(realisation),
                  "batches_done": np.int64(batches_done), "n_dropped": np.int64(n_dropped),
                  "seconds": np.float64(seconds)}
        for i, accumulator in enumerate(accumulators):
            arrays.update(accumulator.state(f"a{i}_"))
        with atomic_write(self.path, "wb") as stream:
            np.savez(stream, **arrays)
        logger.info("saved training-pass state to %s (noise pass %d, %d batches)", self.path, realisation,
                    batches_done)


def accumulate(data, *, target: str, gate: Gate, noise_passes: int,
               checkpoint: PassCheckpoint | None = None) -> TrainingPass:
    """Stream the training split `noise_passes` times into one Gram accumulator per gate bin."""
    if noise_passes < 1:
        raise ValueError(f"noise_passes must be >= 1, got {noise_passes}")
    # One accumulator per expert, plus one for rows whose gating labels are NaN (they train the pooled ridge).
    # Limitation: each used accumulator takes n_features^2 float64 (128 MiB at 4096 pixels), so a 3 x 3 oracle
    # gate needs about 1.3 GiB before the eigendecompositions.
    n_accumulators = gate.n_experts + (1 if gate.names else 0)
    labels = (target, *[name for name in gate.names if name != target])
    start_realisation, start_batch, n_dropped, seconds_before = 0, 0, 0, 0.0
    accumulators = None
    if checkpoint is not None and (resumed := checkpoint.load(n_accumulators)) is not None:
        start_realisation, start_batch, n_dropped, seconds_before, accumulators = resumed
        logger.info("resuming the training pass at noise pass %d, batch %d", start_realisation, start_batch)
    started = time.perf_counter()
    last_save = started
    for realisation in range(start_realisation, noise_passes):
        first_batch = start_batch if realisation == start_realisation else 0
        batches = data.batches("train", labels=labels, realisation=realisation, start_batch=first_batch)
        for batch_index, batch in enumerate(batches, start=first_batch):
            if accumulators is None:
                shift = batch.inputs.mean(axis=0, dtype=np.float64)
                target_shift = float(np.nanmean(batch.labels[target]))
                accumulators = [GramAccumulator(batch.inputs.shape[1], shift, target_shift)
                                for _ in range(n_accumulators)]
            n_dropped += _add_batch(batch, target, gate, accumulators)
            if checkpoint is not None and time.perf_counter() - last_save > checkpoint.interval_s:
                elapsed = seconds_before + time.perf_counter() - started
                checkpoint.save(realisation, batch_index + 1, n_dropped, elapsed, accumulators)
                last_save = time.perf_counter()
    if accumulators is None:
        raise ValueError("the training split has no samples; check the data directory")
    n_rows = sum(accumulator.n_rows for accumulator in accumulators)
    if n_dropped:
        logger.warning("left out %d training rows whose target %s is NaN", n_dropped, target)
    return TrainingPass(accumulators, n_rows, n_dropped, seconds_before + time.perf_counter() - started)


def _add_batch(batch, target: str, gate: Gate, accumulators: list[GramAccumulator]) -> int:
    """Add a batch's rows to their experts' accumulators; return the number of rows with a NaN target."""
    targets = batch.labels[target]
    has_target = np.isfinite(targets)
    experts = gate.assign(batch.labels) if gate.names else np.zeros(len(targets), dtype=np.int64)
    experts[experts < 0] = len(accumulators) - 1
    for expert in np.unique(experts[has_target]):
        rows = np.flatnonzero(has_target & (experts == expert))
        accumulators[expert].update(batch.inputs[rows], targets[rows])
    return int((~has_target).sum())


@dataclass
class CoefficientPaths:
    """Coefficients for every alpha of the grid: per expert, and for the pooled data."""

    alphas_relative: np.ndarray  # (n_alphas,) in units of each model's training row count
    experts: list[tuple[np.ndarray, np.ndarray] | None]  # (n_features, n_alphas), (n_alphas,); None: no own model
    pooled: tuple[np.ndarray, np.ndarray]  # the single-expert ridge: (n_features, n_alphas), (n_alphas,)
    n_rows: list[int]  # training rows per expert


def solve_paths(training: TrainingPass, gate: Gate, alphas_relative, *, min_rows: int) -> CoefficientPaths:
    """Eigendecompose each expert's problem and the pooled one; keep only the coefficient paths.

    With a single-expert gate only the pooled problem is solved. An expert with fewer than `min_rows`
    training rows gets no model of its own and falls back to the pooled ridge.
    """

    def path_of(accumulator: GramAccumulator):
        solution = RidgePath.from_accumulator(accumulator)
        return solution.coefficients(absolute_alphas(alphas_relative, accumulator.n_rows))

    experts = []
    n_rows = []
    for expert in range(gate.n_experts):
        accumulator = training.accumulators[expert]
        n_rows.append(accumulator.n_rows)
        if not gate.names:
            experts.append(None)
        elif accumulator.n_rows < min_rows:
            logger.warning("expert %d (%s) has %d training rows (< %d); it falls back to the pooled ridge",
                           expert, gate.describe(expert), accumulator.n_rows, min_rows)
            experts.append(None)
        else:
            experts.append(path_of(accumulator))
            logger.info("solved expert %d (%s): %d training rows", expert, gate.describe(expert),
                        accumulator.n_rows)
    pooled = GramAccumulator(training.accumulators[0].n_features)
    for accumulator in training.accumulators:
        pooled.merge(accumulator)
    return CoefficientPaths(np.asarray(alphas_relative, dtype=np.float64), experts, path_of(pooled), n_rows)


@dataclass
class LinearExperts:
    """A fitted set of gated linear models; the last column is the pooled ridge.

    Samples whose gating labels are NaN, and every sample of a single-expert gate, use the pooled ridge.
    """

    gate: Gate
    coefficients: np.ndarray  # (n_features, n_experts + 1)
    intercepts: np.ndarray  # (n_experts + 1,)
    # Per expert: source ("expert" or "pooled"), fallback (a FALLBACK_* reason when an expert of a real gate
    # uses the pooled ridge, else None), alpha_relative, train_rows, val_n, val_mse.
    choices: list[dict]

    def predict(self, inputs: np.ndarray, labels) -> np.ndarray:
        """Return predictions (batch,) float64 for inputs (batch, n_features), gated by the true labels."""
        if not self.gate.names:
            return predict(inputs, self.coefficients[:, -1], self.intercepts[-1])
        experts = self.gate.assign(labels)
        all_predictions = predict(inputs, self.coefficients, self.intercepts)  # (batch, n_experts + 1)
        return all_predictions[np.arange(len(inputs)), experts]  # index -1 picks the pooled column


@dataclass
class ValidationErrors:
    """Sums of squared validation errors per gate bin and alpha (last bin: NaN gating labels)."""

    pooled: np.ndarray  # (n_experts + 1, n_alphas), the pooled ridge's errors on each bin's samples
    expert: np.ndarray  # (n_experts, n_alphas), each expert's errors on its own samples (0 without a model)
    counts: np.ndarray  # (n_experts + 1,) validation samples per bin
    targets: np.ndarray  # (n_val,) finite validation targets


def validation_errors(data, paths: CoefficientPaths, *, target: str, gate: Gate) -> ValidationErrors:
    """Stream the validation split once and sum squared errors of every candidate model per gate bin."""
    n_experts = gate.n_experts
    n_alphas = len(paths.alphas_relative)
    # One matrix for all candidates: the pooled path first, then each expert's path that exists.
    blocks = [paths.pooled] + [path for path in paths.experts if path is not None]
    stacked = np.concatenate([coefficients for coefficients, _ in blocks], axis=1)
    stacked_intercepts = np.concatenate([intercepts for _, intercepts in blocks])
    first_column = {}
    for expert, path in enumerate(paths.experts):
        if path is not None:
            first_column[expert] = n_alphas * (1 + len(first_column))

    errors = ValidationErrors(np.zeros((n_experts + 1, n_alphas)), np.zeros((n_experts, n_alphas)),
                              np.zeros(n_experts + 1, dtype=np.int64), np.zeros(0))
    target_values = []
    labels = (target, *[name for name in gate.names if name != target])
    for batch in data.batches("val", labels=labels):
        targets = batch.labels[target]
        has_target = np.isfinite(targets)
        experts = gate.assign(batch.labels) if gate.names else np.zeros(len(targets), dtype=np.int64)
        experts = np.where(experts < 0, n_experts, experts)[has_target]
        squared = (predict(batch.inputs[has_target], stacked, stacked_intercepts) - targets[has_target, None]) ** 2
        target_values.append(targets[has_target])
        for expert in np.unique(experts):
            rows = experts == expert
            errors.counts[expert] += rows.sum()
            errors.pooled[expert] += squared[rows, :n_alphas].sum(axis=0)
            if expert in first_column:
                start = first_column[expert]
                errors.expert[expert] += squared[rows, start:start + n_alphas].sum(axis=0)
    errors.targets = np.concatenate(target_values) if target_values else np.zeros(0)
    if errors.targets.size < 2:
        raise ValueError(f"the validation split has {errors.targets.size} samples with a finite {target}; "
                         "need >= 2 to choose the regularisation. Write shards with a larger validation split")
    return errors


def select_on_validation(data, paths: CoefficientPaths, *, target: str, gate: Gate) -> tuple[LinearExperts, dict]:
    """Pick each expert's alpha, or the pooled ridge, by squared error on the validation split.

    The pooled ridge takes the alpha with the smallest total validation error. Then each expert with a model
    of its own and validation samples takes its best alpha if that beats the pooled ridge on its samples.
    Returns the fitted experts and a summary (val_r2, val_r2_pooled, alpha_relative_pooled, val_n).
    """
    errors = validation_errors(data, paths, target=target, gate=gate)
    n_alphas = len(paths.alphas_relative)
    pooled_choice = int(np.argmin(errors.pooled.sum(axis=0)))
    warn_if_grid_edge(pooled_choice, n_alphas, "pooled ridge")
    pooled_coefficients = paths.pooled[0][:, pooled_choice]
    pooled_intercept = paths.pooled[1][pooled_choice]

    n_experts = gate.n_experts
    coefficients = np.repeat(pooled_coefficients[:, None], n_experts + 1, axis=1)
    intercepts = np.full(n_experts + 1, pooled_intercept)
    total_error = errors.pooled[n_experts, pooled_choice]
    choices = []
    for expert in range(n_experts):
        error = errors.pooled[expert, pooled_choice]
        choice = {"source": "pooled", "fallback": None,
                  "alpha_relative": float(paths.alphas_relative[pooled_choice]),
                  "train_rows": paths.n_rows[expert], "val_n": int(errors.counts[expert])}
        path = paths.experts[expert]
        if path is None:
            # A single-expert gate has no expert models at all, so only a real gate has fallbacks.
            choice["fallback"] = FALLBACK_FEW_TRAIN_ROWS if gate.names else None
        elif errors.counts[expert] == 0:
            choice["fallback"] = FALLBACK_NO_VALIDATION
        else:
            best = int(np.argmin(errors.expert[expert]))
            if errors.expert[expert, best] <= error:
                warn_if_grid_edge(best, n_alphas, f"expert {expert} ({gate.describe(expert)})")
                error = errors.expert[expert, best]
                coefficients[:, expert] = path[0][:, best]
                intercepts[expert] = path[1][best]
                choice.update(source="expert", alpha_relative=float(paths.alphas_relative[best]))
            else:
                choice["fallback"] = FALLBACK_POOLED_BETTER
        choice["val_mse"] = float(error / errors.counts[expert]) if errors.counts[expert] else None
        total_error += error
        choices.append(choice)

    total_squares = float(np.sum((errors.targets - errors.targets.mean()) ** 2))
    summary = {
        "val_r2": 1.0 - float(total_error) / total_squares if total_squares > 0 else float("nan"),
        "val_r2_pooled": (1.0 - float(errors.pooled[:, pooled_choice].sum()) / total_squares
                          if total_squares > 0 else float("nan")),
        "alpha_relative_pooled": float(paths.alphas_relative[pooled_choice]),
        "val_n": int(errors.targets.size),
    }
    return LinearExperts(gate, coefficients, intercepts, choices), summary
