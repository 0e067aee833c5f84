"""Throughput of noise + input transform, side by side: NumPy, plain Numba, specstream's kernels, memory pass.

Every method turns the same float32 (n_spectra, 4096) flux and error into whitened inputs
(flux + noise_level * error * N(0, 1)) / (noise_level * error), batch by batch. The memory pass reads both
arrays and writes one, which is the least data any such method must move. Run from the repository root:

    python benchmarks/bench_kernels.py               # full run, saves benchmarks/results/kernels.{json,md}
    python benchmarks/bench_kernels.py --quick       # small smoke run

Reported figures are spectra per second, the median of --repeats passes over all spectra, and the ratio to
the NumPy path. The load average before and after is saved too: other processes on the machine slow every
method alike but make the absolute figures lower.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit, prange

from _kernels_report import RESULTS_DIR, environment, save_report
from specstream.kernels import default_num_threads, make_inputs, make_inputs_reference
from specstream.kernels.threads import run_in_row_blocks
from specstream.kernels.torch_twin import make_inputs_torch

logger = logging.getLogger("bench_kernels")

N_PIXELS = 4096
NOISE_LEVEL = np.float32(1.0)
SEED = 0


@njit(nogil=True, error_model="numpy")
def numba_random_loop(flux, error, noise_level, out):
    """Whiten with plain Numba: one np.random.standard_normal() per pixel, on one thread."""
    for i in range(flux.shape[0]):
        for j in range(flux.shape[1]):
            sigma = noise_level * error[i, j]
            out[i, j] = (flux[i, j] + sigma * np.float32(np.random.standard_normal())) / sigma


@njit(parallel=True, error_model="numpy")
def numba_random_prange(flux, error, noise_level, out):
    """Run the plain Numba loop with prange over spectra, on Numba's threading layer."""
    for i in prange(flux.shape[0]):
        for j in range(flux.shape[1]):
            sigma = noise_level * error[i, j]
            out[i, j] = (flux[i, j] + sigma * np.float32(np.random.standard_normal())) / sigma


def numpy_default_rng(rng: np.random.Generator):
    """Return the NumPy way: Generator.standard_normal into a buffer, then in-place arithmetic."""

    def run(flux, error, ids, epoch, out):
        sigma = np.multiply(error, NOISE_LEVEL)
        rng.standard_normal(out=out, dtype=np.float32)
        out *= sigma
        out += flux
        out /= sigma

    return run


def specstream(mode: str, threads: int):
    def run(flux, error, ids, epoch, out):
        make_inputs(flux, error, mode=mode, noise_level=float(NOISE_LEVEL), seed=SEED, epoch=epoch,
                    sample_ids=ids, stats=STATS, out=out, num_threads=threads)

    return run


def specstream_torch_cpu(flux, error, ids, epoch, out):
    result = make_inputs_torch(torch.from_numpy(flux), torch.from_numpy(error), mode="whitening",
                               noise_level=float(NOISE_LEVEL), seed=SEED, epoch=epoch, sample_ids=torch.from_numpy(ids))
    out[...] = result.numpy()


def memory_pass(flux, error, ids, epoch, out):
    np.add(flux, error, out=out)


def memory_pass_threaded(threads: int):
    """Return the memory pass split over `threads` threads like the kernels (NumPy releases the GIL)."""

    def run(flux, error, ids, epoch, out):
        def process_rows(start: int, stop: int) -> None:
            np.add(flux[start:stop], error[start:stop], out=out[start:stop])

        run_in_row_blocks(process_rows, len(flux), threads)

    return run


def memory_copy(flux, error, ids, epoch, out):
    np.copyto(out, flux)


STATS: dict = {}


def time_method(run, flux, error, ids, batch_size: int, repeats: int) -> dict:
    """Return spectra/s of `run` over all batches: median and best of `repeats` passes."""
    out = np.empty((batch_size, N_PIXELS), dtype=np.float32)
    run(flux[:batch_size], error[:batch_size], ids[:batch_size], 0, out)  # compile and warm up
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(flux) - batch_size + 1, batch_size):
            rows = slice(first, first + batch_size)
            run(flux[rows], error[rows], ids[rows], repeat, out)
        rates.append((len(flux) // batch_size) * batch_size / (time.perf_counter() - start))
    return {"median_spectra_per_s": statistics.median(rates), "best_spectra_per_s": max(rates),
            "all_spectra_per_s": rates}


def make_data(n_spectra: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    flux = rng.uniform(0.05, 1.5, (n_spectra, N_PIXELS)).astype(dtype)
    error = rng.uniform(0.07, 0.6, (n_spectra, N_PIXELS)).astype(dtype)
    return flux, error, np.arange(n_spectra, dtype=np.int64)


def methods(threads: int) -> list[tuple[str, str, object, str]]:
    """Return (name, description, run, input dtype) of every measured method."""
    rows = [
        ("numpy_default_rng", "NumPy: default_rng().standard_normal + in-place whitening, 1 thread",
         numpy_default_rng(np.random.default_rng(SEED)), "float32"),
        ("numba_np_random_1thread", "plain Numba loop with np.random.standard_normal, 1 thread",
         lambda f, e, i, ep, o: numba_random_loop(f, e, NOISE_LEVEL, o), "float32"),
        (f"numba_np_random_prange_{threads}threads",
         f"plain Numba loop with np.random, prange over spectra, {threads} threads",
         lambda f, e, i, ep, o: numba_random_prange(f, e, NOISE_LEVEL, o), "float32"),
        ("specstream_whitening_1thread", "specstream make_inputs, whitening, 1 thread",
         specstream("whitening", 1), "float32"),
        (f"specstream_whitening_{threads}threads", f"specstream make_inputs, whitening, {threads} threads",
         specstream("whitening", threads), "float32"),
        (f"specstream_whitening_float16_{threads}threads",
         f"specstream make_inputs, whitening, float16 flux and error, {threads} threads",
         specstream("whitening", threads), "float16"),
        (f"specstream_flux_only_{threads}threads", f"specstream make_inputs, flux_only, {threads} threads",
         specstream("flux_only", threads), "float32"),
        (f"specstream_standardized_{threads}threads", f"specstream make_inputs, standardized, {threads} threads",
         specstream("standardized", threads), "float32"),
        (f"specstream_noise_free_{threads}threads", f"specstream make_inputs, noise_free, {threads} threads",
         specstream("noise_free", threads), "float32"),
        ("specstream_torch_twin_cpu", "specstream torch twin on CPU, whitening (torch's own threads)",
         specstream_torch_cpu, "float32"),
        ("memory_pass", "memory pass: out = flux + error (reads both, writes one), 1 thread", memory_pass,
         "float32"),
        (f"memory_pass_{threads}threads", f"memory pass: out = flux + error, {threads} threads",
         memory_pass_threaded(threads), "float32"),
        ("memory_copy", "memory copy: out = flux, 1 thread", memory_copy, "float32"),
    ]
    return rows


def check_agreement(flux, error, ids) -> bool:
    """Return whether the timed kernel agrees with the NumPy reference on one batch (to the bit)."""
    fast = make_inputs(flux, error, mode="whitening", seed=SEED, epoch=0, sample_ids=ids)
    reference = make_inputs_reference(flux, error, mode="whitening", seed=SEED, epoch=0, sample_ids=ids)
    return bool(np.array_equal(fast.view(np.uint32), reference.view(np.uint32)))


def markdown_table(report: dict) -> str:
    config, env = report["config"], report["environment"]
    lines = [
        "# Kernel throughput: noise draw + whitening",
        "",
        f"Command: `{env['command']}` at git {env['git_revision']}, {env['utc_time']}.",
        f"CPU: {env['cpu']}, {env['cpus_available']} CPUs available; numpy {env['numpy']}, numba {env['numba']}, "
        f"torch {env['torch']}, Python {env['python']}.",
        f"Data: {config['n_spectra']} spectra x {N_PIXELS} pixels, batches of {config['batch_size']}, "
        f"median of {config['repeats']} passes. Load average before/after: {report['load_average_before']} / "
        f"{report['load_average_after']}.",
        f"Kernel output equals the NumPy reference to the bit: {report['kernel_matches_reference']}.",
        "",
        "| method | spectra/s (median) | best | x NumPy path |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        lines.append(f"| {row['description']} | {row['median_spectra_per_s']:,.0f} | "
                     f"{row['best_spectra_per_s']:,.0f} | {row['ratio_to_numpy']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-spectra", type=int, help="spectra per pass (default 16384, quick 2048)")
    parser.add_argument("--batch-size", type=int, default=1024, help="spectra per call (default 1024)")
    parser.add_argument("--repeats", type=int, help="timed passes per method (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=default_num_threads(),
                        help="threads for specstream's kernels (default: CPUs available)")
    parser.add_argument("--quick", action="store_true", help="small smoke run: fewer spectra and passes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where to save kernels.{json,md}")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    if args.n_spectra is None:
        args.n_spectra = 2048 if args.quick else 16384
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.n_spectra < args.batch_size:
        parser_error = f"--n-spectra {args.n_spectra} is smaller than --batch-size {args.batch_size}; raise it"
        raise SystemExit(parser_error)
    STATS.update(flux_mean=np.full(N_PIXELS, 0.8), flux_std=np.full(N_PIXELS, 0.4),
                 error_mean=np.full(N_PIXELS, 0.3), error_std=np.full(N_PIXELS, 0.15))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    data = {dtype: make_data(args.n_spectra, dtype) for dtype in ("float32", "float16")}
    load_before = os.getloadavg()

    results = []
    for name, description, run, dtype in methods(args.threads):
        flux, error, ids = data[dtype]
        timing = time_method(run, flux, error, ids, args.batch_size, args.repeats)
        results.append({"name": name, "description": description, "input_dtype": dtype, **timing})
        logger.info("%-40s %12.0f spectra/s", name, timing["median_spectra_per_s"])
    numpy_rate = results[0]["median_spectra_per_s"]
    for row in results:
        row["ratio_to_numpy"] = row["median_spectra_per_s"] / numpy_rate

    flux, error, ids = data["float32"]
    report = {
        "benchmark": "kernels",
        "environment": environment(),
        "config": {"n_spectra": args.n_spectra, "batch_size": args.batch_size, "repeats": args.repeats,
                   "threads": args.threads, "n_pixels": N_PIXELS, "noise_level": float(NOISE_LEVEL),
                   "numba_threading_layer": numba.threading_layer(),
                   "numba_num_threads": numba.get_num_threads()},
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "kernel_matches_reference": check_agreement(flux[:64], error[:64], ids[:64]),
        "results": results,
    }
    json_path, markdown_path = save_report("kernels", report, markdown_table(report), args.output_dir)
    logger.info("saved %s and %s", json_path, markdown_path)


if __name__ == "__main__":
    main()
