"""Speed and memory of the streaming ridge fit against scikit-learn on an in-memory float64 matrix.

Both sides fit the same thing on the same noisy flux_only inputs (stand-in spectra, kernels' noise, seed 0):
ridge on standardised pixels for each alpha of a grid, with the alpha chosen by validation MSE.
- streaming (specstream.baselines): float64 X^T X accumulated batch by batch, one eigendecomposition,
  coefficients for every alpha, one validation pass;
- reference: the whole training split as one float64 matrix, then make_pipeline(StandardScaler(),
  Ridge(alpha)).fit and predict once per alpha.
Peak memory is Python's tracemalloc peak during the fit (NumPy reports its array allocations to it).

    python benchmarks/bench_ridge.py                         # 10,000 spectra x 4096 pixels, 5 alphas
    python benchmarks/bench_ridge.py --n 4000 --n-alphas 3   # a quick look

The report goes to benchmarks/results/ridge_streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPORT_NAME = "ridge_streaming"

logger = logging.getLogger("bench_ridge")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000,
                        help="Stand-in spectra in all; 20 %% each go to validation and test.")
    parser.add_argument("--n-alphas", type=int, default=5, help="Alphas in the grid, 1e-6 ... 1 x n_train.")
    parser.add_argument("--batch-size", type=int, default=2048, help="Spectra per streamed batch.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="Directory of the report.")
    return parser.parse_args(argv)


def measure(function):
    """Run `function` and return (its result, wall seconds, tracemalloc peak in MiB)."""
    tracemalloc.start()
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def streaming_fit(data, alphas):
    from specstream.baselines import Gate, accumulate, select_on_validation, solve_paths

    training = accumulate(data, target="log_g", gate=Gate.single(), noise_passes=1)
    paths = solve_paths(training, Gate.single(), alphas, min_rows=2)
    model, summary = select_on_validation(data, paths, target="log_g", gate=Gate.single())
    return model, summary["alpha_relative_pooled"]


def reference_fit(data, alphas):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def stacked(split):
        batches = list(data.batches(split, labels=("log_g",)))
        return (np.concatenate([batch.inputs for batch in batches]).astype(np.float64),
                np.concatenate([batch.labels["log_g"] for batch in batches]))

    train_x, train_y = stacked("train")
    val_x, val_y = stacked("val")
    best = None
    for relative in alphas:
        model = make_pipeline(StandardScaler(), Ridge(alpha=relative * len(train_y))).fit(train_x, train_y)
        error = float(np.mean((model.predict(val_x) - val_y) ** 2))
        if best is None or error < best[0]:
            best = (error, relative, model)
    return best[2], best[1]


def markdown(report: dict) -> str:
    streaming, reference = report["streaming"], report["reference"]
    return "\n".join([
        "# Streaming ridge against scikit-learn on an in-memory matrix",
        "",
        f"Command: `{report['command']}`  ",
        f"Hardware: {report['environment']['device']}, {report['environment']['cpu_count']} CPUs; "
        f"code revision {report['code_revision']}.  ",
        f"Data: {report['config']['n_train']} training and {report['config']['n_val']} validation stand-in "
        f"spectra x {report['config']['n_pixels']} pixels, flux_only, {report['config']['n_alphas']} alphas.",
        "",
        "| fit | wall time (s) | training spectra/s | peak memory (MiB) | chosen alpha (x n_train) |",
        "| --- | --- | --- | --- | --- |",
        f"| streaming (specstream) | {streaming['seconds']:.1f} | {streaming['spectra_per_s']:.0f} | "
        f"{streaming['peak_mib']:.0f} | {streaming['alpha_relative']:g} |",
        f"| reference (scikit-learn, float64 in memory) | {reference['seconds']:.1f} | "
        f"{reference['spectra_per_s']:.0f} | {reference['peak_mib']:.0f} | {reference['alpha_relative']:g} |",
        "",
        f"Speed-up {report['speedup']:.2f}x; memory ratio (reference / streaming) {report['memory_ratio']:.2f}x; "
        f"largest difference of the test predictions {report['max_prediction_difference']:.2e} dex.",
        "",
        "Timings on a shared machine vary with its load; compare the two rows of one run, not runs.",
        "",
    ])


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    from specstream.baselines import ArraySplits, random_splits
    from specstream.results import code_revision, environment_summary
    from specstream.synth import generate_arrays

    flux, error, labels = generate_arrays(args.n, seed=0)
    n_val = args.n // 5
    data = ArraySplits(flux, error, labels, random_splits(args.n, n_val=n_val, n_test=n_val, seed=0),
                       seed=0, batch_size=args.batch_size)
    alphas = tuple(np.geomspace(1e-6, 1.0, args.n_alphas))
    n_train = data.n_samples("train")

    (streaming_model, streaming_alpha), streaming_s, streaming_peak = measure(lambda: streaming_fit(data, alphas))
    logger.info("streaming fit: %.1f s, peak %.0f MiB", streaming_s, streaming_peak)
    (reference_model, reference_alpha), reference_s, reference_peak = measure(lambda: reference_fit(data, alphas))
    logger.info("reference fit: %.1f s, peak %.0f MiB", reference_s, reference_peak)

    test = list(data.batches("test", labels=("log_g",)))
    test_x = np.concatenate([batch.inputs for batch in test])
    difference = np.max(np.abs(streaming_model.predict(test_x, None)
                               - reference_model.predict(test_x.astype(np.float64))))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_revision": code_revision(),
        "environment": environment_summary(),
        "config": {"n_train": n_train, "n_val": n_val, "n_pixels": int(flux.shape[1]), "n_alphas": args.n_alphas,
                   "batch_size": args.batch_size},
        "streaming": {"seconds": streaming_s, "peak_mib": streaming_peak, "spectra_per_s": n_train / streaming_s,
                      "alpha_relative": streaming_alpha},
        "reference": {"seconds": reference_s, "peak_mib": reference_peak, "spectra_per_s": n_train / reference_s,
                      "alpha_relative": reference_alpha},
        "speedup": reference_s / streaming_s,
        "memory_ratio": reference_peak / streaming_peak,
        "max_prediction_difference": float(difference),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=2, default=str) + "\n"), (".md", markdown(report))):
        path = args.out / f"{REPORT_NAME}{suffix}"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
        print(f"wrote {path}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
