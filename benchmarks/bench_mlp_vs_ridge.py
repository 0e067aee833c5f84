"""Accuracy check: mlp_3L_1024 on flux_only input against streaming Ridge, on the same stand-in split.

Both models see the same inputs: the same shards, the kernels' noise with the same seed, the fixed
validation and test draws, and the same 1000-spectrum test split. Ridge chooses its regularisation on the
validation split. The MLP uses the reference hyperparameters: AdamW, lr 1e-3, weight decay 1e-4, batch
1024, 20 epochs, cosine annealing, and early stopping on the validation loss with patience 10.

    python benchmarks/bench_mlp_vs_ridge.py                      # 20,000 stand-in spectra
    python benchmarks/bench_mlp_vs_ridge.py --n 4000 --epochs 3  # a quick look

The stand-in file, shards and runs go to --work-dir (reused when present). The report goes to
benchmarks/results/mlp_vs_ridge-n{N}-b{BATCH_SIZE}-e{EPOCHS}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

logger = logging.getLogger("bench_mlp_vs_ridge")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="Stand-in spectra in all (default: 20000).")
    parser.add_argument("--test-size", type=int, default=1000, help="Test split size (default: 1000).")
    parser.add_argument("--val-size", type=float, default=0.05, help="Validation split, fraction or count.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data, the split, the noise and the weights.")
    parser.add_argument("--epochs", type=int, default=20, help="MLP epochs (default: 20).")
    parser.add_argument("--batch-size", type=int, default=1024, help="MLP batch size (default: 1024).")
    parser.add_argument("--lr", type=float, default=1e-3, help="MLP peak learning rate (default: 1e-3).")
    parser.add_argument("--input-norm", action="store_true",
                        help="Standardise the MLP's input per pixel (TrainConfig.input_norm); the report name "
                             "ends in -input-norm.")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile the MLP (default: on).")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "specstream_mlp_vs_ridge",
                        help="Directory for the stand-in file, shards and runs (reused when present).")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Directory of the report.")
    return parser.parse_args(argv)


def prepare_shards(args) -> Path:
    """Write the stand-in file and its shards under the work directory, unless they exist for the same options."""
    from specstream.shards import ShardOptions, write_shards
    from specstream.synth import write_synth

    tag = f"n{args.n}-s{args.seed}-t{args.test_size}-v{args.val_size:g}"
    shards = args.work_dir / f"shards-{tag}"
    if (shards / "manifest.json").is_file():
        logger.info("reusing shards %s", shards)
        return shards
    survey = args.work_dir / f"standin-n{args.n}-s{args.seed}.h5"
    if not survey.is_file():
        started = time.perf_counter()
        partial = survey.with_name(survey.name + ".partial")
        write_synth(partial, args.n, args.seed)
        os.replace(partial, survey)
        logger.info("wrote %d stand-in spectra in %.0f s", args.n, time.perf_counter() - started)
    shutil.rmtree(shards, ignore_errors=True)
    options = ShardOptions(test_size=args.test_size, val_size=args.val_size, seed=args.seed)
    write_shards([survey], shards, options)
    return shards


def run_ridge(shards: Path, args, runs: Path) -> dict:
    from specstream.baselines.run import BaselineConfig, run_baseline
    from specstream.baselines.shard_data import ShardSplits

    config = BaselineConfig(model="ridge", input_mode="flux_only", seed=args.seed, group="bench_mlp_vs_ridge")
    splits = ShardSplits(shards, mode="flux_only", seed=args.seed)
    return run_baseline(splits, config, out_dir=runs, results_csv=runs / "results.csv")


def run_mlp(shards: Path, args, runs: Path) -> dict:
    from specstream.training import TrainConfig, train

    config = TrainConfig(data=str(shards), out_dir=runs, group="bench_mlp_vs_ridge", model="mlp_3L_1024",
                         input_mode="flux_only", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, compile=args.compile, num_workers=0, log_every=10**6,
                         input_norm=args.input_norm)
    return train(config)


def markdown(report: dict) -> str:
    ridge, mlp = report["ridge"], report["mlp"]
    lines = [
        "# mlp_3L_1024 (flux_only) against streaming Ridge",
        "",
        f"Command: `{report['command']}`",
        f"Code revision {report['code_revision']}; {report['environment']['device']}, "
        f"{report['environment']['cpu_count']} CPUs; torch {report['environment']['torch']}.",
        f"Data: {report['n_spectra']} stand-in spectra (`specstream synth`, seed {report['seed']}); train "
        f"{report['n_train']}, val {report['n_val']}, test {report['n_test']}; same noise seed for both models.",
        "",
        "| model | test R^2 | test MAE (dex) | test RMSE (dex) | fit time (s) |",
        "| --- | --- | --- | --- | --- |",
        f"| Ridge (alpha chosen on val) | {ridge['test_r2']:.4f} | {ridge['test_mae']:.4f} | "
        f"{ridge['test_rmse']:.4f} | {ridge['train_time']:.0f} |",
        f"| mlp_3L_1024, {mlp['epochs_run']} epochs (best {mlp['best_epoch']}) | {mlp['test_r2']:.4f} | "
        f"{mlp['test_mae']:.4f} | {mlp['test_rmse']:.4f} | {mlp['train_time']:.0f} |",
        "",
        f"MLP minus Ridge: R^2 {report['r2_difference']:+.4f}; the MLP "
        f"{'beats' if report['mlp_beats_ridge'] else 'does not beat'} Ridge on this split.",
        "",
    ]
    return "\n".join(lines)


def save_report(report: dict, directory: Path, name: str) -> None:
    from specstream.atomic import write_text_atomically

    for suffix, text in ((".json", json.dumps(report, indent=2, default=str) + "\n"), (".md", markdown(report))):
        print(f"wrote {write_text_atomically(directory / f'{name}{suffix}', text)}")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    from specstream.data import read_manifest
    from specstream.results import code_revision, environment_summary

    shards = prepare_shards(args)
    manifest = read_manifest(shards)
    runs = args.work_dir / f"runs-{int(time.time())}"
    ridge = run_ridge(shards, args, runs)
    mlp = run_mlp(shards, args, runs)
    keys = ("test_r2", "test_mae", "test_rmse", "test_bias", "train_time", "epochs_run", "best_epoch",
            "spectra_per_s", "params", "compiled", "experiment_id")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "code_revision": code_revision(),
        "environment": environment_summary(),
        "config": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "seed": args.seed,
        "n_spectra": args.n,
        "n_train": manifest["splits"]["train"]["n_samples"],
        "n_val": manifest["splits"]["val"]["n_samples"],
        "n_test": manifest["splits"]["test"]["n_samples"],
        "ridge": {key: ridge.get(key) for key in keys + ("alpha_relative", "val_r2")},
        "mlp": {key: mlp.get(key) for key in keys},
        "r2_difference": mlp["test_r2"] - ridge["test_r2"],
        "mlp_beats_ridge": bool(mlp["test_r2"] > ridge["test_r2"]),
    }
    suffix = "-input-norm" if args.input_norm else ""
    save_report(report, args.out, f"mlp_vs_ridge-n{args.n}-b{args.batch_size}-e{args.epochs}{suffix}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
