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
) -> None:
    """Write stand-in spectra (a label-dependent toy model with PFS MR noise-model errors)."""
    from specstream.synth import write_synth

    with _progress_bar(n, "spec", "synth") as bar:
        try:
            path = write_synth(out, n, seed, dtype=dtype, chunk_size=chunk_size, progress=bar.update,
                               layout=layout)
        except (ValueError, FileNotFoundError) as exc:
            _fail(exc)
    typer.echo(f"wrote {n} spectra to {path}")


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
    groups_file: Optional[Path] = typer.Option(None, "--groups-file", help="JSON file adding or overriding "
                                               "groups."),
    train_args: str = typer.Option("", "--train-args", help="Extra options passed to every training run, "
                                   "e.g. \"--no-compile --num-workers 4\"."),
) -> None:
    """Run every experiment of the named groups with the reference hyperparameters, one per GPU at a time."""
    import shlex

    from specstream.groups import expand, load_groups
    from specstream.runner import run_experiments

    try:
        groups = load_groups(groups_file)
        todo = expand([g.strip() for g in experiments.split(",") if g.strip()], groups,
                      seeds=[int(s) for s in seeds.split(",")])
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    gpu_list = _resolve_gpus(gpus)
    if gpu_list and not parallel:
        gpu_list = gpu_list[:1]
    results_csv = results or out / "results.csv"
    typer.echo(f"{len(todo)} experiments on {', '.join('GPU ' + g for g in gpu_list) if gpu_list else 'the CPU'}"
               f"; results in {results_csv}")
    outcomes = run_experiments(todo, data=data, out_dir=out, results_csv=results_csv, gpus=gpu_list,
                               extra_args=shlex.split(train_args), train_size_cap=_train_split_size(data),
                               on_finish=lambda o: typer.echo(
                                   f"{o.experiment.experiment_id}: {'done' if o.returncode == 0 else 'FAILED'} "
                                   f"in {o.seconds:.0f} s (log {o.log_path})"))
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


@app.command("groups")
def list_groups(groups_file: Optional[Path] = typer.Option(None, "--groups-file", help="JSON file adding or "
                                                          "overriding groups.")) -> None:
    """List the experiment groups and their hyperparameters."""
    from specstream.groups import DEFAULTS, load_groups

    for name, spec in load_groups(groups_file).items():
        spec = {**DEFAULTS, **spec}
        typer.echo(f"{name}: models {', '.join(spec['models'])}; inputs {', '.join(spec['inputs'])}; "
                   f"{spec['epochs']} epochs, batch {spec['batch_size']}, lr {spec['lr']}, "
                   f"train size {spec['train_size'] or 'all'}")
