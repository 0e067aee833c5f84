"""The specstream command line: one thin function per subcommand, heavy imports inside them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Fast, reproducible training of stellar-parameter regressors on PFS MR spectra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # pandas' HDF5 writer logs its thread count


def _progress_bar(total: int, unit: str, desc: str):
    """Return a tqdm bar on an interactive terminal, else a no-op object with the same update()."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not sys.stderr.isatty())


GROUPS_FILE_HELP = "JSON file adding or changing groups; its format is in `specstream groups --help`."

# Options that `specstream run` sets for each experiment itself; --train-args must not change them.
RUN_OWNED_OPTIONS = ("--data", "--out", "--experiment-id", "--group", "--model", "--input", "--seed", "--results",
                     "--epochs", "--batch-size", "--lr", "--weight-decay", "--patience", "--train-size", "--target",
                     "--input-norm", "--no-input-norm")


def _fail(exc: Exception) -> None:
    """Print a user-facing error without a traceback and exit with status 1."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=1)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output HDF5 file (survey layout)."),
    n: int = typer.Option(100_000, "--n", min=1, help="Number of spectra."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same file contents."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype of flux and error: float32 or float64."),
    chunk_size: int = typer.Option(2048, "--chunk-size", min=1, help="Spectra generated and written per block."),
    layout: str = typer.Option("survey", "--layout", help="survey: the simulator's layout with a pandas label "
                               "table; flat: root datasets and a group of label columns (no PyTables needed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT when it exists."),
) -> None:
    """Write stand-in spectra (a label-dependent toy model with PFS MR noise-model errors)."""
    from specstream.noise_model import load_noise_model
    from specstream.synth import write_synth

    if out.is_file() and not overwrite:
        _fail(ValueError(f"{out} exists; pass --overwrite to replace it, or choose another file name"))

    with _progress_bar(n, "spec", "synth") as bar:
        try:
            noise_model = load_noise_model()
            path = write_synth(out, n, seed, dtype=dtype, chunk_size=chunk_size, progress=bar.update,
                               layout=layout, noise_model=noise_model)
        except (ValueError, FileNotFoundError) as exc:
            _fail(exc)
    typer.echo(f"wrote {n} spectra to {path}")
    if noise_model.source == "built-in":
        typer.echo("noise model: the built-in fit of the PFS ETC tables (within about 7 %); set SPECSTREAM_DATA "
                   "to the reference data folder to use the tables themselves")
    else:
        typer.echo(f"noise model: {noise_model.source}")


@app.command("convert-stelib")
def convert_stelib_command(
    out: Path = typer.Argument(..., help="Output HDF5 file (survey layout)."),
    source: Optional[Path] = typer.Option(None, "--source", help="STELIB MR-window .npz file; default: the "
                                          "reference data under $SPECSTREAM_DATA or ../shared/data."),
    seed: int = typer.Option(0, "--seed", help="Seed of the magnitudes drawn uniformly in 20.5-22.5."),
    mag: Optional[float] = typer.Option(None, "--mag", help="Give every star this AB magnitude instead."),
    teff_min: Optional[float] = typer.Option(None, "--teff-min", help="Keep stars with T_eff >= this (K)."),
    teff_max: Optional[float] = typer.Option(None, "--teff-max", help="Keep stars with T_eff <= this (K)."),
    n_exposures: int = typer.Option(12, "--n-exposures", min=1, help="Number of 900 s exposures."),
) -> None:
    """Convert the STELIB observed spectra to the survey layout on the MR grid with noise-model errors."""
    from specstream.stelib import convert_stelib

    teff_range = None
    if teff_min is not None or teff_max is not None:
        teff_range = (teff_min if teff_min is not None else 0.0, teff_max if teff_max is not None else 1e6)
    try:
        path, n_stars = convert_stelib(out, source=source, seed=seed, mag=mag, teff_range=teff_range,
                                       n_exposures=n_exposures)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(f"wrote {n_stars} STELIB spectra to {path}")


@app.command()
def inspect(
    paths: List[Path] = typer.Argument(..., help="Survey HDF5 files."),
    chunk_size: int = typer.Option(4096, "--chunk-size", min=1, help="Spectra read per block."),
) -> None:
    """Summarise survey files: counts, label ranges, S/N, wavelength grid and invalid rows."""
    from specstream.inspection import format_report, inspect_file
    from specstream.io import describe

    n_problem_files = 0
    for path in paths:
        try:
            total = describe(path).n_spectra
            with _progress_bar(total, "spec", path.name) as bar:
                report = inspect_file(path, chunk_size=chunk_size, progress=bar.update)
        except (ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            n_problem_files += 1
            continue
        typer.echo(format_report(report))
        n_problem_files += bool(report.problems)
    if n_problem_files:
        raise typer.Exit(code=2)


@app.command()
def run(
    experiments: str = typer.Option(..., "--experiments", "-e", help="Comma-separated group names, e.g. "
                                    "MLP_100k,CNN_100k (see `specstream groups`)."),
    data: str = typer.Option(..., "--data", help="Shard directory (with manifest.json) or URL prefix."),
    out: Path = typer.Option(Path("runs"), "--out", help="Runs root: one folder per experiment."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma-separated GPU indices, e.g. 0,1,2,3. "
                                       "Default: all visible GPUs, or the CPU when there are none."),
    parallel: bool = typer.Option(False, "--parallel", help="Run one experiment per GPU at once; otherwise "
                                  "one at a time on the first GPU."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds; each experiment runs once per seed."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results CSV (default OUT/results.csv)."),
    groups_file: Optional[Path] = typer.Option(None, "--groups-file", help=GROUPS_FILE_HELP),
    train_args: str = typer.Option("", "--train-args", help="Extra options passed to every training run, "
                                   "e.g. \"--no-compile --num-workers 4\"."),
) -> None:
    """Run every experiment of the named groups with the reference hyperparameters, one per GPU at a time.

    An experiment that already has a row in the results CSV is skipped, even when its group changed since:
    give another --results file to run it again.
    """
    import shlex

    from specstream.groups import expand, load_groups
    from specstream.runner import run_experiments

    try:
        seed_list = list(dict.fromkeys(int(seed) for seed in seeds.split(",")))
    except ValueError:
        _fail(ValueError(f"--seeds must be comma-separated integers such as 0,1,2, got {seeds!r}"))
    extra_args = shlex.split(train_args)
    owned = sorted({arg.split("=")[0] for arg in extra_args} & set(RUN_OWNED_OPTIONS))
    if owned:
        _fail(ValueError(f"--train-args must not set {', '.join(owned)}: `specstream run` sets them from the "
                         "groups, --seeds, --data, --out and --results; change the group with --groups-file"))
    try:
        groups = load_groups(groups_file)
        todo = expand([g.strip() for g in experiments.split(",") if g.strip()], groups, seeds=seed_list)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    gpu_list = _resolve_gpus(gpus)
    if gpu_list and not parallel:
        gpu_list = gpu_list[:1]
    results_csv = results or out / "results.csv"
    typer.echo(f"{len(todo)} experiments on {', '.join('GPU ' + g for g in gpu_list) if gpu_list else 'the CPU'}"
               f"; results in {results_csv}")
    try:
        outcomes = run_experiments(todo, data=data, out_dir=out, results_csv=results_csv, gpus=gpu_list,
                                   extra_args=extra_args, train_size_cap=_train_split_size(data),
                                   on_finish=lambda o: typer.echo(
                                       f"{o.experiment.experiment_id}: {'done' if o.returncode == 0 else 'FAILED'} "
                                       f"in {o.seconds:.0f} s (log {o.log_path})"))
    except ValueError as exc:
        _fail(exc)
    failed = [o for o in outcomes if o.returncode not in (0, None)]
    if failed:
        typer.echo(f"{len(failed)} of {len(outcomes)} experiments failed", err=True)
        raise typer.Exit(code=1)


def _resolve_gpus(gpus: Optional[str]) -> list[str]:
    if gpus:
        return [g.strip() for g in gpus.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _train_split_size(data: str) -> Optional[int]:
    """Return the number of training spectra in the manifest, or None when it cannot be read."""
    try:
        from specstream.data import read_manifest

        return int(read_manifest(data)["splits"]["train"]["n_samples"])
    except (ImportError, OSError, KeyError, ValueError):
        return None


@app.command()
def verify(
    shards: str = typer.Argument(..., help="Shard directory, manifest path or URL template with {name}."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Check only this split (repeatable)."),
) -> None:
    """Check every shard's size and SHA-256 against the manifest (reads the whole set once)."""
    from specstream.data import read_manifest
    from specstream.data.verify import verify_shards

    try:
        manifest = read_manifest(shards)
        chosen = tuple(split) if split else None
        unknown = sorted(set(chosen or ()) - set(manifest["splits"]))
        if unknown:
            raise ValueError(f"invalid --split {unknown[0]!r}; the manifest has the splits "
                             f"{', '.join(manifest['splits'])}")
        total = sum(int(s["size_bytes"]) for name, entry in manifest["splits"].items()
                    if chosen is None or name in chosen for s in entry["shards"])
        with _progress_bar(total, "B", "verify") as bar:
            checks = verify_shards(shards, chosen, progress=bar.update)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    bad = [check for check in checks if check.problem]
    for check in bad:
        typer.echo(f"{check.location} ({check.split}): {check.problem}")
    typer.echo(f"{len(checks) - len(bad)} of {len(checks)} shards match the manifest")
    if bad:
        typer.echo("error: rewrite the set with `specstream shard`, or copy the listed shards again", err=True)
        raise typer.Exit(code=1)


@app.command("groups")
def list_groups(groups_file: Optional[Path] = typer.Option(None, "--groups-file", help=GROUPS_FILE_HELP)) -> None:
    """List the experiment groups and their hyperparameters.

    A groups file adds or changes groups, for example
    {"TINY": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "epochs": 2, "batch_size": 256, "lr": 3e-4}}.
    Keys: models, inputs, epochs, batch_size, lr, weight_decay, patience, train_size, targets, input_norm.
    A built-in group named in the file keeps the settings not given.
    """
    from specstream.groups import DEFAULTS, load_groups

    try:
        groups = load_groups(groups_file)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for name, spec in groups.items():
        spec = {**DEFAULTS, **spec}
        typer.echo(f"{name}: models {', '.join(spec['models'])}; inputs {', '.join(spec['inputs'])}; "
                   f"{spec['epochs']} epochs, batch {spec['batch_size']}, lr {spec['lr']}, "
                   f"train size {spec['train_size'] or 'all'}; "
                   f"input {'standardised per pixel' if spec.get('input_norm') else 'raw'}")


@app.command()
def shard(
    inputs: List[Path] = typer.Argument(..., help="Survey HDF5 files; their order defines the global sample ids."),
    out: Path = typer.Option(..., "--out", help="Directory for the tar shards and manifest.json."),
    test_size: float = typer.Option(1000, "--test-size", help="Test split: a count of spectra (>= 1) or a "
                                    "fraction of all input spectra (< 1)."),
    val_size: float = typer.Option(0.05, "--val-size", help="Validation split: a count (>= 1) or a fraction (< 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split assignment."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype of flux and error: float32 or float16 "
                              "(its rounding error is measured and stored in the manifest)."),
    block_size: int = typer.Option(1024, "--block-size", min=1, help="Spectra per block of .npy members."),
    shard_size: float = typer.Option(512.0, "--shard-size", help="Target shard size in MB (10^6 bytes)."),
    chunk_size: int = typer.Option(4096, "--chunk-size", min=1, help="Spectra read from the inputs per step."),
    drop_bad: bool = typer.Option(False, "--drop-bad", help="Leave invalid rows out and count them, instead of "
                                  "stopping at the first."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace shards and manifest already in --out."),
) -> None:
    """Write train/val/test WebDataset tar shards and a manifest from survey files."""
    from specstream.io import Problem, describe
    from specstream.shards import ShardOptions, write_shards

    try:
        options = ShardOptions(test_size=test_size, val_size=val_size, seed=seed, dtype=dtype,
                               block_size=block_size, shard_size_mb=shard_size, chunk_size=chunk_size,
                               on_bad="drop" if drop_bad else "raise")
        total = sum(describe(path).n_spectra for path in inputs)
        with _progress_bar(total, "spec", "shard") as bar:
            result = write_shards(inputs, out, options, resume=resume, overwrite=overwrite, progress=bar.update)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    except (KeyboardInterrupt, SystemError) as exc:
        # Ctrl-C inside a Numba function can surface as a SystemError whose context is the KeyboardInterrupt.
        if isinstance(exc, SystemError) and not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        typer.echo(f"interrupted; closed shards in {out} are kept: rerun the same command with --resume to "
                   "continue", err=True)
        raise typer.Exit(code=130)
    splits = result.manifest["splits"]
    counts = ", ".join(f"{name} {split['n_samples']} in {len(split['shards'])} shards"
                       for name, split in splits.items())
    typer.echo(f"wrote {counts} to {out}")
    dropped = result.manifest.get("dropped_rows") or []
    if dropped:
        n_dropped = sum(split.get("n_dropped", 0) for split in splits.values())
        typer.echo(f"left out {n_dropped} invalid rows (--drop-bad); the manifest lists them under dropped_rows:")
        for record in dropped:
            typer.echo(f"  {Problem.from_record(record).message()}")
    seconds = max(result.seconds, 1e-9)
    typer.echo(f"{result.bytes_written / 1e6:.0f} MB in {seconds:.1f} s: {result.bytes_written / 1e6 / seconds:.0f} "
               f"MB/s written, {result.spectra_read / seconds:.0f} spectra/s read")
    loss = result.manifest.get("float16_loss")
    if loss:
        typer.echo(f"float16 rounding: flux max {loss['flux']['max_abs_over_error']:.2e} sigma, "
                   f"rms {loss['flux']['rms_abs_over_error']:.2e} sigma; error max relative "
                   f"{loss['error']['max_relative_normal']:.2e}")


@app.command()
def baseline(
    model: str = typer.Argument(..., help="Baseline: ridge, lightgbm or oracle-moe (ridge experts gated by "
                                "the true labels: an upper bound, not a deployable model)."),
    data: str = typer.Option(..., "--data", help="Shard directory (with manifest.json) or URL prefix."),
    out: Path = typer.Option(Path("runs"), "--out", help="Runs root; the run writes to OUT/EXPERIMENT_ID/."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results CSV (default OUT/results.csv)."),
    experiment_id: Optional[str] = typer.Option(None, "--experiment-id", help="Run name; default "
                                                "GROUP-MODEL-INPUT-sSEED. Rerun with the same name to continue an "
                                                "interrupted run."),
    group: str = typer.Option("baselines", "--group", help="Experiment group written to the results row."),
    input_mode: str = typer.Option("flux_only", "--input", help="flux_only, whitening, standardized or noise_free."),
    target: str = typer.Option("log_g", "--target", help="Label column to predict."),
    noise_level: float = typer.Option(1.0, "--noise-level", help="Noise scale: flux + LEVEL * error * N(0, 1)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Noise seed; the NN run's seed gives the same val/test draws."),
    train_size: Optional[int] = typer.Option(None, "--train-size", min=1, help="Use the first N training "
                                             "spectra in sample id order, as specstream train does."),
    noise_passes: int = typer.Option(1, "--noise-passes", min=1, help="Ridge/oracle: passes over the training "
                                     "split, each with a fresh noise realisation."),
    alpha_grid: Optional[str] = typer.Option(None, "--alpha-grid", help="Ridge/oracle: comma-separated alphas "
                                             "in units of the training row count (default 1e-8 ... 100)."),
    gate: str = typer.Option("T_eff,M_H", "--gate", help="Oracle: labels whose true values choose the expert."),
    n_bins: int = typer.Option(3, "--n-bins", min=1, help="Oracle: equal-width bins per gate label."),
    max_train: int = typer.Option(100_000, "--max-train", min=2, help="LightGBM: training spectra kept in memory."),
    max_val: int = typer.Option(50_000, "--max-val", min=2, help="LightGBM: validation spectra for early stopping."),
    rebin: int = typer.Option(1, "--rebin", min=1, help="LightGBM: average this many adjacent pixels per feature."),
    num_leaves: str = typer.Option("31,127", "--num-leaves", help="LightGBM: candidate leaf counts, chosen on "
                                   "validation."),
    max_rounds: int = typer.Option(2000, "--max-rounds", min=1, help="LightGBM: maximum boosting rounds."),
    num_threads: Optional[int] = typer.Option(None, "--num-threads", min=1, help="LightGBM: threads; default "
                                              "every CPU this process may use."),
    batch_size: int = typer.Option(2048, "--batch-size", min=1, help="Spectra per streamed batch."),
) -> None:
    """Fit a classic baseline on the NN runs' splits and noise draws; append its row to the results CSV."""
    from specstream.baselines import BoostingSettings, parse_gate_labels
    from specstream.baselines.run import BaselineConfig, parse_number_list, run_baseline
    from specstream.baselines.shard_data import ShardSplits

    try:
        config = BaselineConfig(
            model=model.replace("-", "_"), target=target, input_mode=input_mode, noise_level=noise_level, seed=seed,
            group=group, experiment_id=experiment_id, noise_passes=noise_passes, gate_labels=parse_gate_labels(gate),
            n_bins=n_bins,
            **({"alpha_grid": parse_number_list(alpha_grid, "--alpha-grid", float)} if alpha_grid else {}),
            boosting=BoostingSettings(max_train=max_train, max_val=max_val, rebin=rebin, max_rounds=max_rounds,
                                      num_leaves=parse_number_list(num_leaves, "--num-leaves", int), seed=seed,
                                      num_threads=num_threads),
        )
        splits = ShardSplits(data, mode=input_mode, noise_level=noise_level, seed=seed, train_size=train_size,
                             batch_size=batch_size)
        row = run_baseline(splits, config, out_dir=out, results_csv=results)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(f"{row['experiment_id']}: test R^2 {row['test_r2']:.4f}, MAE {row['test_mae']:.4f}, "
               f"train time {row['train_time']:.0f} s; predictions in {row['run_dir']}")


@app.command()
def report(
    results: Path = typer.Argument(..., help="Results CSV written by specstream train / run / baseline."),
    out: Path = typer.Option(Path("report"), "--out", help="Directory for report.md and its PNG figures."),
    max_runs: int = typer.Option(9, "--max-runs", min=1, help="Runs shown in the per-run figures, in table order."),
) -> None:
    """Write a Markdown summary table (best per group marked, differences to ridge and the oracle) and figures."""
    from specstream.report import build_report

    try:
        written = build_report(results, out, max_runs=max_runs)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(f"wrote {written.markdown} with {len(written.figures)} figures")
    for name, reason in written.skipped.items():
        typer.echo(f"left out {name}: {reason}")


@app.command()
def bench(
    data: str = typer.Option(..., "--data", help="Shard directory; its manifest names the survey HDF5 files "
                             "that the reference path reads."),
    experiments: str = typer.Option("MLP_100k", "--experiments", "-e", help="Comma-separated group names."),
    groups_file: Optional[Path] = typer.Option(None, "--groups-file", help=GROUPS_FILE_HELP),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Directory for the report."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Directory for the benchmark's training "
                                            "runs (default OUT/runs)."),
    all_experiments: bool = typer.Option(False, "--all", help="Time every experiment of the groups, not only "
                                         "the first of each."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the groups' epoch counts."),
    train_size: Optional[int] = typer.Option(None, "--train-size", min=1, help="Override the training-set size."),
    data_paths: str = typer.Option("auto", "--data-paths", help="Fast data paths to time: comma list of auto, "
                                   "resident, streaming."),
    compile: bool = typer.Option(True, "--compile/--no-compile", help="torch.compile on the fast path."),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="Fast streaming-loader worker processes per "
                                    "rank (0: threads)."),
    reference_steps: int = typer.Option(20, "--reference-steps", min=1, help="Timed steps of the reference path."),
    reference_workers: int = typer.Option(4, "--reference-workers", min=0, help="Reference DataLoader workers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Time experiments on the fast path and the reference path in one run; save the ratios in a report."""
    import sys

    from specstream.bench import BenchConfig, format_report, run_bench

    try:
        config = BenchConfig(data=data, groups=[g.strip() for g in experiments.split(",") if g.strip()],
                             groups_file=groups_file, out_dir=out, runs_dir=runs_dir, all_experiments=all_experiments, epochs=epochs,
                             train_size=train_size,
                             data_paths=[p.strip() for p in data_paths.split(",") if p.strip()], compile=compile,
                             num_workers=num_workers, reference_steps=reference_steps,
                             reference_workers=reference_workers, device=device)
        report = run_bench(config, command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(format_report(report))


@app.command("train", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(ctx: typer.Context) -> None:
    """Train one model; options as for `python -m specstream.train` (see `specstream train --help`).

    --nproc N starts N processes on this machine through torchrun --standalone --nproc-per-node N.
    """
    from specstream.train import main as train_main

    raise typer.Exit(code=train_main(list(ctx.args), prog="specstream train"))


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_output"), "--out", help="Folder for data, shards, runs and report."),
    n_spectra: int = typer.Option(8_000, "--n", help="Stand-in spectra to generate (>= 3000)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per stand-in experiment "
                                         "(default: 15 for the MLP, 5 for the CNN)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of data, splits and training."),
    stelib: bool = typer.Option(False, "--stelib", help="Use the STELIB observed spectra from the reference "
                                "data folder instead of stand-in data."),
) -> None:
    """Run the whole workflow on built-in data: data -> shards -> DEMO groups -> Ridge -> report."""
    import time

    from specstream.demo import DemoConfig, run_demo

    started = time.perf_counter()
    try:
        config = DemoConfig(out_dir=out, n_spectra=n_spectra, epochs=epochs, seed=seed, stelib=stelib)
        paths = run_demo(config, echo=typer.echo)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    typer.echo(_results_table(paths["results"]))
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    for name, path in paths.items():
        typer.echo(f"  {name:8s} {path}")


def _results_table(results_csv: Path) -> str:
    """Return the main columns of the results CSV as a plain-text table, best test R^2 first."""
    from specstream.results import read_results

    frame = read_results(results_csv)
    columns = [c for c in ("experiment_id", "model", "input", "test_r2", "test_mae", "train_time") if c in frame]
    frame = frame[columns].sort_values("test_r2", ascending=False)
    return "\n" + frame.to_string(index=False, float_format="{:.3f}".format)
