"""`specstream demo`: the whole workflow on built-in data, small enough for a laptop CPU.

Steps, each skipped when its output already exists (so an interrupted demo continues where it stopped):
stand-in spectra (or the STELIB stars) -> shards -> the DEMO experiment group -> Ridge -> report.
The settings are recorded in the output folder, and a rerun with other settings stops with an error
instead of mixing the outputs of two demos.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from specstream.atomic import write_text_atomically
from specstream.groups import GROUPS, expand
from specstream.results import read_results

logger = logging.getLogger(__name__)

STELIB_SPLITS = {"test_size": 20, "val_size": 15}  # of the 113 stars with full labels
STELIB_TRAINING = {"epochs": 30, "batch_size": 16}  # about 78 training stars: many small steps
SETTINGS_NAME = "demo_settings.json"


@dataclass(kw_only=True)
class DemoConfig:
    """Settings of the demo run."""

    out_dir: Path = Path("demo_output")
    """Folder for data, shards, runs, results and report."""
    n_spectra: int = 8_000
    """Stand-in spectra to generate: 1000 test, 1000 validation, the rest training."""
    epochs: int | None = None
    """Epochs per stand-in experiment; default the DEMO groups' own (15 for the MLP, 5 for the CNN)."""
    seed: int = 0
    """Seed of the data, the splits and the training runs."""
    stelib: bool = False
    """Run on the STELIB observed spectra instead of stand-in data."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.n_spectra < 3000:
            raise ValueError(f"n_spectra must be >= 3000 (1000 test + 1000 validation + training), "
                             f"got {self.n_spectra}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def _settings(config: DemoConfig) -> dict:
    """Return the settings that decide the demo's outputs."""
    return {"data": "stelib" if config.stelib else "stand-in",
            "n_spectra": None if config.stelib else config.n_spectra,
            "epochs": None if config.stelib else config.epochs, "seed": config.seed}


def _check_settings(config: DemoConfig) -> None:
    """Raise ValueError if a demo with other settings wrote the output folder."""
    path = config.out_dir / SETTINGS_NAME
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in _settings(config).items()
               if saved.get(key) != value]
    if changed:
        raise ValueError(f"{config.out_dir} was written by a demo with other settings ({', '.join(changed)}); "
                         "pass another --out, or delete the folder to start over")


def _record_settings(config: DemoConfig) -> None:
    """Record the settings once the demo's data exist, so that a demo that failed before them blocks nothing."""
    write_text_atomically(config.out_dir / SETTINGS_NAME, json.dumps(_settings(config), indent=1) + "\n")


def _make_data(config: DemoConfig, echo: Callable[[str], None]) -> Path:
    data_dir = config.out_dir / "data"
    if config.stelib:
        from specstream.stelib import convert_stelib

        path = data_dir / "stelib.h5"
        if not path.exists():
            _, n = convert_stelib(path, seed=config.seed)
            echo(f"[1/5] converted {n} STELIB spectra to {path}")
        return path
    from specstream.synth import write_synth

    path = data_dir / "standin.h5"
    if not path.exists():
        write_synth(path, config.n_spectra, config.seed)
        echo(f"[1/5] wrote {config.n_spectra} stand-in spectra to {path}")
    return path


def _make_shards(config: DemoConfig, data_path: Path, echo: Callable[[str], None]) -> Path:
    from specstream.shards import ShardOptions, write_shards

    shards = config.out_dir / "shards"
    sizes = STELIB_SPLITS if config.stelib else {"test_size": 1000, "val_size": 1000}
    result = write_shards([data_path], shards, ShardOptions(seed=config.seed, **sizes), resume=shards.exists())
    counts = ", ".join(f"{name} {split['n_samples']}" for name, split in result.manifest["splits"].items())
    echo(f"[2/5] wrote shards ({counts}) to {shards}")
    return shards


def _train(config: DemoConfig, shards: Path, results_csv: Path, echo: Callable[[str], None]) -> None:
    from specstream.runner import run_experiments

    experiments = expand(["DEMO_MLP", "DEMO_CNN"], GROUPS, seeds=[config.seed])
    if config.stelib:
        experiments = [replace(e, **STELIB_TRAINING) for e in experiments]
    elif config.epochs is not None:
        experiments = [replace(e, epochs=config.epochs) for e in experiments]
    extra = ["--num-workers", "0"]
    if not torch.cuda.is_available():
        # Compiling takes longer than these short CPU runs; on a GPU the default (compiled) is kept.
        extra.append("--no-compile")
    echo(f"[3/5] training {len(experiments)} experiments ({', '.join(e.experiment_id for e in experiments)}); "
         f"logs in {config.out_dir / 'runs'}")
    outcomes = run_experiments(
        experiments, data=str(shards), out_dir=config.out_dir / "runs", results_csv=results_csv, gpus=None,
        extra_args=extra,
        on_finish=lambda o: echo(f"      {o.experiment.experiment_id}: "
                                 f"{'done' if o.returncode == 0 else 'FAILED, see ' + str(o.log_path)} "
                                 f"in {o.seconds:.0f} s"),
    )
    failed = [o for o in outcomes if o.returncode not in (0, None)]
    if failed:
        raise RuntimeError(f"{len(failed)} demo experiments failed; see {failed[0].log_path}")


def _ridge(config: DemoConfig, shards: Path, results_csv: Path, echo: Callable[[str], None]) -> None:
    from specstream.baselines.run import BaselineConfig, run_baseline
    from specstream.baselines.shard_data import ShardSplits

    for input_mode in ("flux_only", "whitening"):
        baseline = BaselineConfig(model="ridge", input_mode=input_mode, seed=config.seed, group="DEMO_baselines")
        if results_csv.exists() and baseline.experiment_id in set(read_results(results_csv)["experiment_id"]):
            continue
        splits = ShardSplits(str(shards), mode=input_mode, seed=config.seed)
        row = run_baseline(splits, baseline, out_dir=config.out_dir / "runs", results_csv=results_csv)
        echo(f"[4/5] ridge ({input_mode}): test R^2 {row['test_r2']:.3f}")


def run_demo(config: DemoConfig, echo: Callable[[str], None] = logger.info) -> dict:
    """Run the demo workflow and return the paths of its outputs."""
    from specstream.report import build_report

    results_csv = config.out_dir / "results.csv"
    _check_settings(config)
    data_path = _make_data(config, echo)
    _record_settings(config)
    shards = _make_shards(config, data_path, echo)
    _train(config, shards, results_csv, echo)
    _ridge(config, shards, results_csv, echo)
    report = build_report(results_csv, config.out_dir / "report")
    echo(f"[5/5] wrote {report.markdown} with {len(report.figures)} figures")
    return {"data": data_path, "shards": shards, "runs": config.out_dir / "runs", "results": results_csv,
            "report": report.markdown}
