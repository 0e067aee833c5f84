"""`specstream bench`: time experiments end to end on the fast path and the reference path, side by side.

For each experiment the fast path is a real `train()` run (compiled where it works, bf16 on CUDA, resident or
streaming data). The reference path is the study's configuration: eager fp32, a map-style Dataset reading
one spectrum at a time from the survey HDF5 files with NumPy noise, a DataLoader with worker processes.
Only a slice of reference steps is timed; its epoch time is extrapolated from the measured spectra/s.
Both are measured in the same process on the same data, and the report saves the ratios with the hardware,
versions, configuration and code revision.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from specstream.atomic import make_folder, write_text_atomically
from specstream.data import read_manifest
from specstream.groups import Experiment, expand, load_groups
from specstream.models import build_model
from specstream.reference_path import reference_loader, time_reference_steps
from specstream.results import code_revision, environment_summary, read_jsonl
from specstream.training import TrainConfig, train

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class BenchConfig:
    """Settings of one benchmark run."""

    data: str
    """Shard directory whose manifest names the survey HDF5 files it came from."""
    groups: list[str]
    """Experiment groups to time."""
    groups_file: Path | None = None
    """JSON file adding or changing groups, as for `specstream run --groups-file`."""
    out_dir: Path = Path("benchmarks/results")
    """Folder for the report (JSON and Markdown)."""
    runs_dir: Path | None = None
    """Folder for the benchmark's own training runs; default out_dir/runs."""
    all_experiments: bool = False
    """Time every experiment of the groups; default only the first of each group."""
    epochs: int | None = None
    """Override the groups' epoch counts (a shorter run for a quick figure)."""
    train_size: int | None = None
    """Override the groups' training-set sizes; capped at the training split."""
    data_paths: list[str] = field(default_factory=lambda: ["auto"])
    """Fast data paths to time: auto, resident and/or streaming."""
    compile: bool = True
    """torch.compile on the fast path."""
    num_workers: int = 0
    """Streaming-loader worker processes per rank on the fast path (0: threads)."""
    reference_steps: int = 20
    """Timed optimizer steps of the reference path (after 2 warm-up steps)."""
    reference_workers: int = 4
    """DataLoader workers of the reference path."""
    device: str = "auto"
    """auto, cpu or cuda."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.runs_dir = Path(self.runs_dir) if self.runs_dir is not None else self.out_dir / "runs"
        for name in ("reference_steps", "reference_workers", "num_workers"):
            if getattr(self, name) < (1 if name == "reference_steps" else 0):
                raise ValueError(f"{name} must be >= {1 if name == 'reference_steps' else 0}, "
                                 f"got {getattr(self, name)}")
        for path in self.data_paths:
            if path not in ("auto", "resident", "streaming"):
                raise ValueError(f"data_paths entries must be auto, resident or streaming, got {path!r}")


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _fast_run(config: BenchConfig, experiment: Experiment, data_path: str, train_size: int | None,
              epochs: int, stamp: str) -> dict:
    """Train one experiment on the fast path and return its timings and accuracy."""
    run_id = f"bench-{stamp}-{experiment.experiment_id}-{data_path}"
    train_config = TrainConfig(
        data=config.data, out_dir=config.runs_dir, experiment_id=run_id, group=experiment.group,
        model=experiment.model, input_mode=experiment.input_mode, targets=tuple(experiment.targets),
        epochs=epochs, batch_size=experiment.batch_size, lr=experiment.lr,
        weight_decay=experiment.weight_decay, patience=experiment.patience, train_size=train_size,
        seed=experiment.seed, num_workers=config.num_workers, compile=config.compile, data_path=data_path,
        device=config.device, results_csv=config.runs_dir / "results.csv", input_norm=experiment.input_norm,
    )
    started = time.perf_counter()
    row = train(train_config)
    wall_s = time.perf_counter() - started
    epochs_log = read_jsonl(train_config.run_dir / "epochs.jsonl")
    # The first epoch carries compilation and warm-up; later epochs show the steady state.
    steady = epochs_log[1:] or epochs_log
    return {
        "data_path": data_path, "run_dir": str(train_config.run_dir), "wall_s": wall_s,
        "epochs_run": len(epochs_log), "first_epoch_s": epochs_log[0]["epoch_time_s"],
        "epoch_s": statistics.median(e["epoch_time_s"] for e in steady),
        "spectra_per_s": statistics.median(e["samples_per_s"] for e in steady),
        "data_wait_share": statistics.median(e["data_wait_share"] for e in steady),
        "test_r2": row.get("test_r2"), "test_mae": row.get("test_mae"), "train_size": row.get("train_size"),
    }


def _reference_run(config: BenchConfig, experiment: Experiment, manifest: dict, n_train: int,
                   n_pixels: int) -> dict:
    """Time a slice of reference steps and extrapolate one epoch of `n_train` spectra."""
    paths = [source["path"] for source in manifest["sources"] if Path(source["path"]).is_file()]
    if not paths:
        raise FileNotFoundError("the reference path reads the survey files that the shards came from, and none "
                                f"of {[s['path'] for s in manifest['sources']]} exists here; run the benchmark "
                                "where they are")
    device = _device(config.device)
    loader = reference_loader(paths, experiment.batch_size, config.reference_workers, target=experiment.targets[0])
    model = build_model(experiment.model, n_pixels=n_pixels, n_outputs=1)
    timing = time_reference_steps(model, loader, config.reference_steps, lr=experiment.lr, device=device)
    timing["epoch_s"] = n_train / timing["spectra_per_s"]
    timing["workers"] = config.reference_workers
    return timing


def run_bench(config: BenchConfig, command: str = "") -> dict:
    """Time the selected experiments on both paths; write and return the report."""
    experiments = expand(config.groups, load_groups(config.groups_file))
    manifest = read_manifest(config.data)
    n_split = int(manifest["splits"]["train"]["n_samples"])
    n_pixels = len(manifest["wave"])
    if not config.all_experiments:
        experiments = [next(e for e in experiments if e.group == g) for g in config.groups]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    entries = []
    for experiment in experiments:
        requested_size = config.train_size or experiment.train_size or n_split
        train_size = min(requested_size, n_split)
        epochs = config.epochs or experiment.epochs
        logger.info("benchmarking %s: %d training spectra, %d epochs", experiment.experiment_id, train_size, epochs)
        fast = [_fast_run(config, experiment, path, train_size, epochs, stamp) for path in config.data_paths]
        reference = _reference_run(config, experiment, manifest, train_size, n_pixels)
        for entry in fast:
            entry["epoch_speedup"] = reference["epoch_s"] / entry["epoch_s"]
            entry["end_to_end_speedup"] = reference["epoch_s"] * entry["epochs_run"] / entry["wall_s"]
        entries.append({"experiment": experiment.as_dict(), "train_size": train_size, "epochs": epochs,
                        "fast": fast, "reference": reference,
                        "requested_train_size": requested_size})
    report = {
        "command": command or " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "code_revision": code_revision(), "environment": environment_summary(),
        "cpu_count": os.cpu_count(), "config": {k: str(v) if isinstance(v, Path) else v
                                                 for k, v in asdict(config).items()},
        "experiments": entries,
    }
    _write_report(config.out_dir, stamp, report)
    return report


def format_report(report: dict) -> str:
    """Render the benchmark report as Markdown."""
    env = report["environment"]
    lines = [
        f"# specstream bench, {report['created']}",
        "",
        f"Command: `{report['command']}`",
        f"Code revision {report['code_revision']}; device {env.get('device')}; torch {env.get('torch')}; "
        f"{report['cpu_count']} CPU cores.",
        "",
        "Reference path: eager fp32, one spectrum per `__getitem__` from HDF5 with h5py, NumPy noise, torch "
        "DataLoader; its epoch time is extrapolated from a timed slice of steps and excludes validation.",
        "",
        "| experiment | train spectra | epochs | path | epoch (s) | spectra/s | data wait | run wall (s) | "
        "test R^2 | reference epoch (s) | reference spectra/s | epoch speed-up | end-to-end speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in report["experiments"]:
        ref = entry["reference"]
        name = f"{entry['experiment']['group']} {entry['experiment']['model']} {entry['experiment']['input_mode']}"
        for fast in entry["fast"]:
            r2 = "n/a" if fast["test_r2"] is None else f"{fast['test_r2']:.4f}"
            lines.append(
                f"| {name} | {entry['train_size']} | {fast['epochs_run']} | {fast['data_path']} | "
                f"{fast['epoch_s']:.2f} | {fast['spectra_per_s']:.0f} | {100 * fast['data_wait_share']:.0f} % | "
                f"{fast['wall_s']:.1f} | {r2} | {ref['epoch_s']:.2f} | {ref['spectra_per_s']:.0f} | "
                f"{fast['epoch_speedup']:.1f}x | {fast['end_to_end_speedup']:.1f}x |")
    return "\n".join(lines) + "\n"


def _write_report(out_dir: Path, stamp: str, report: dict) -> None:
    make_folder(out_dir)
    for suffix, text in ((".json", json.dumps(report, indent=2, default=str)), (".md", format_report(report))):
        path = write_text_atomically(out_dir / f"bench-{stamp}{suffix}", text)
        logger.info("wrote %s", path)
