"""Does whitened input train? Test R^2 of log_g for an MLP fed flux_only, safe whitening and naive whitening.

On stand-in data (`specstream.synth.generate_arrays`) an MLP of the model zoo's MLP class is trained on CPU
with fresh noise each epoch (the kernels' draws) and tested on a fixed draw (FIXED_EPOCH), once per input:
- flux_only: make_inputs(mode="flux_only");
- whitening: make_inputs(mode="whitening"), the safe form (errors below the floor zeroed, clipping);
- naive_whitening: (flux + error * z) / error with the same draws z, the formula of the reference study;
- clamped_whitening: (flux + error * z) / max(error, floor), the alternative the safe form rejected.
Each input is tried on the clean stand-in data and on a copy with defects: at DEFECT_FRACTION of the pixels,
at random positions per spectrum, the error is multiplied by DEFECT_SCALE (a model of near-zero errors).

Before the MLP every input pixel is standardised with its mean and standard deviation over the training
spectra (one draw), as usual for tabular input. Without it, in trials with 4000-10000 training spectra, raw
input did not train at all (test R^2 about 0.00 for flux_only, noise-free flux and whitening alike).

    python benchmarks/bench_whitening_accuracy.py            # full run, saves results/whitening_accuracy.*
    python benchmarks/bench_whitening_accuracy.py --quick    # the configuration of the slow test
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from _kernels_report import RESULTS_DIR, environment, save_report
from specstream.kernels import FIXED_EPOCH, draw_normals, make_inputs
from specstream.kernels.reference import _error_floor
from specstream.metrics import regression_metrics
from specstream.models import MLP

logger = logging.getLogger("bench_whitening_accuracy")

INPUTS = ("flux_only", "whitening", "naive_whitening", "clamped_whitening")
DEFECT_FRACTION = 0.002  # 8 of 4096 pixels per spectrum
DEFECT_SCALE = 1e-6
NOISE_SEED = 7


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Sizes and training settings of one accuracy experiment."""

    n_train: int = 10000  # training spectra
    n_test: int = 1000  # test spectra, fixed noise draw
    data_seed: int = 0  # seed of the stand-in labels and spectra
    hidden_widths: tuple[int, ...] = (256, 64)  # MLP hidden layer widths
    epochs: int = 15
    batch_size: int = 256
    learning_rate: float = 3e-4  # AdamW with cosine annealing to 0 (1e-3 did not train at these sizes)
    weight_decay: float = 1e-4
    dropout: float = 0.1
    torch_seeds: tuple[int, ...] = (0, 1)  # one training run per seed (initialisation and batch order)
    inputs: tuple[str, ...] = INPUTS

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"inputs {sorted(unknown)} are unknown; expected some of {INPUTS}")


QUICK = ExperimentConfig(n_train=4000, n_test=1000, epochs=12, torch_seeds=(0,),
                         inputs=("flux_only", "whitening", "naive_whitening"))


def load_data(config: ExperimentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return flux, error (n, 4096) float32 and log_g (n,) of stand-in spectra, train rows first."""
    from specstream.synth import generate_arrays  # a layer above the kernels; only this benchmark needs it

    flux, error, labels = generate_arrays(config.n_train + config.n_test, config.data_seed)
    return flux, error, labels["log_g"].to_numpy()


def add_defects(error: np.ndarray, seed: int = 1) -> np.ndarray:
    """Return a copy of `error` with DEFECT_FRACTION of each spectrum's pixels scaled by DEFECT_SCALE."""
    rng = np.random.default_rng(seed)
    defective = error.copy()
    n_defects = max(1, round(DEFECT_FRACTION * error.shape[1]))
    for row in range(error.shape[0]):
        pixels = rng.choice(error.shape[1], size=n_defects, replace=False)
        defective[row, pixels] *= DEFECT_SCALE
    return defective


def make_batch_inputs(kind: str, flux, error, ids, epoch: int) -> np.ndarray:
    """Return (batch, n_pixels) float32 inputs of one kind (see the module docstring)."""
    if kind in ("flux_only", "whitening"):
        return make_inputs(flux, error, mode=kind, seed=NOISE_SEED, epoch=epoch, sample_ids=ids)
    normals = draw_normals(NOISE_SEED, epoch, ids, flux.shape[1])
    if kind == "naive_whitening":
        denominator = error
    else:
        denominator = np.maximum(error, _error_floor(error, np.ones(error.shape, dtype=bool)))
    with np.errstate(all="ignore"):
        return (flux + error * normals) / denominator


def fraction_zeroed_by_floor(flux, error) -> float:
    """Return the fraction of pixels that safe whitening zeroes although their error is > 0 and finite."""
    inputs = make_inputs(flux, error, mode="whitening", seed=NOISE_SEED, epoch=0, sample_ids=np.arange(len(flux)))
    return float(np.mean(inputs == 0))


def fit_feature_scaling(kind: str, flux, error, ids, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-pixel mean and std (float32 tensors) of `kind` inputs over the training rows, epoch 0."""
    total = np.zeros(flux.shape[1])
    total_sq = np.zeros(flux.shape[1])
    for first in range(0, n_train, 1024):
        rows = slice(first, min(first + 1024, n_train))
        inputs = make_batch_inputs(kind, flux[rows], error[rows], ids[rows], 0).astype(np.float64)
        total += inputs.sum(axis=0)
        total_sq += (inputs**2).sum(axis=0)
    mean = total / n_train
    std = np.sqrt(np.maximum(total_sq / n_train - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


def train_and_test(kind: str, flux, error, log_g, config: ExperimentConfig, torch_seed: int) -> dict:
    """Train an MLP on `kind` inputs of the first n_train rows, then return test metrics and the last loss."""
    torch.manual_seed(torch_seed)
    n_train = config.n_train
    ids = np.arange(len(flux), dtype=np.int64)
    target_mean, target_std = log_g[:n_train].mean(), log_g[:n_train].std()
    targets = torch.from_numpy(((log_g - target_mean) / target_std).astype(np.float32))[:, None]
    feature_mean, feature_std = fit_feature_scaling(kind, flux, error, ids, n_train)

    model = MLP(flux.shape[1], config.hidden_widths, 1, config.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    loss = float("nan")
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n_train).numpy()
        for first in range(0, n_train, config.batch_size):
            rows = np.sort(order[first:first + config.batch_size])
            inputs = torch.from_numpy(make_batch_inputs(kind, flux[rows], error[rows], ids[rows], epoch))
            batch_loss = torch.nn.functional.mse_loss(model((inputs - feature_mean) / feature_std), targets[rows])
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            scheduler.step()
            loss = batch_loss.item()

    model.eval()
    test = slice(n_train, len(flux))
    with torch.no_grad():
        inputs = torch.from_numpy(make_batch_inputs(kind, flux[test], error[test], ids[test], FIXED_EPOCH))
        predictions = model((inputs - feature_mean) / feature_std).numpy()[:, 0] * target_std + target_mean
    finite = bool(np.isfinite(predictions).all())
    metrics = regression_metrics(log_g[test], predictions) if finite else {"r2": float("nan"), "mae": float("nan")}
    return {"input": kind, "torch_seed": torch_seed, "final_train_loss": loss, "predictions_finite": finite,
            **metrics}


def summarise(runs: list[dict]) -> list[dict]:
    """Return one row per (data, input): mean and spread of test R^2 over the training seeds."""
    rows = []
    for data in dict.fromkeys(run["data"] for run in runs):
        for kind in dict.fromkeys(run["input"] for run in runs):
            r2 = [run["r2"] for run in runs if run["data"] == data and run["input"] == kind]
            if r2:
                rows.append({"data": data, "input": kind, "r2_mean": statistics.fmean(r2),
                             "r2_min": min(r2), "r2_max": max(r2), "n_seeds": len(r2)})
    return rows


def run_experiment(config: ExperimentConfig) -> dict:
    """Train every (data variant, input, seed), then return the runs, their summary and the floor's effect."""
    flux, error, log_g = load_data(config)
    variants = {"clean": error, "defects": add_defects(error)}
    runs = []
    for data_variant, variant_error in variants.items():
        for kind in config.inputs:
            for torch_seed in config.torch_seeds:
                start = time.perf_counter()
                result = train_and_test(kind, flux, variant_error, log_g, config, torch_seed)
                result.update(data=data_variant, seconds=round(time.perf_counter() - start, 1))
                logger.info("%-8s %-18s seed %d  test R^2 %.4f", data_variant, kind, torch_seed, result["r2"])
                runs.append(result)
    zeroed = {name: fraction_zeroed_by_floor(flux[:1000], variant[:1000]) for name, variant in variants.items()}
    return {"runs": runs, "summary": summarise(runs), "fraction_of_pixels_zeroed_by_floor": zeroed}


def markdown_table(report: dict) -> str:
    env, config = report["environment"], report["config"]
    lines = [
        "# Does whitened input train? Test R^2 of log_g, MLP on stand-in spectra",
        "",
        f"Command: `{env['command']}` at git {env['git_revision']}, {env['utc_time']}; CPU {env['cpu']}, "
        f"torch {env['torch']} with {report['torch_threads']} threads.",
        f"Config: {config}.",
        f"Defects: error x {DEFECT_SCALE:g} at {DEFECT_FRACTION:.1%} of pixels per spectrum, random positions. "
        f"Pixels zeroed by the whitening floor: {report['fraction_of_pixels_zeroed_by_floor']}.",
        "",
        "| data | input | test R^2 (mean over seeds) | min | max | seeds |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["summary"]:
        lines.append(f"| {row['data']} | {row['input']} | {row['r2_mean']:.4f} | {row['r2_min']:.4f} | "
                     f"{row['r2_max']:.4f} | {row['n_seeds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small configuration of the slow test")
    parser.add_argument("--n-train", type=int, help="training spectra (default 10000, quick 4000)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where to save the report")
    args = parser.parse_args()
    config = QUICK if args.quick else ExperimentConfig()
    if args.n_train is not None:
        config = replace(config, n_train=args.n_train)
    report = {"benchmark": "whitening_accuracy", "environment": environment(), "config": asdict(config),
              "torch_threads": torch.get_num_threads(), **run_experiment(config)}
    name = "whitening_accuracy_quick" if args.quick else "whitening_accuracy"
    paths = save_report(name, report, markdown_table(report), args.output_dir)
    logger.info("saved %s and %s", *paths)


if __name__ == "__main__":
    main()
