"""Loader throughput side by side: the reference HDF5 path, specstream's SpectraLoader, and the page cache.

In one run on the same stand-in spectra:
(a) reference: a map-style torch Dataset reading one spectrum at a time from HDF5 with h5py, NumPy noise,
    and a shuffling torch DataLoader (`specstream.reference_path`);
(b) specstream: SpectraLoader over the training split of the shards of the same file, same noise
    (flux + error * N(0, 1), mode "flux_only"), same batch size; also with whitening, without noise
    ("noise_free", the loader apart from the noise kernel), with positioned reads instead of memory maps,
    and with worker processes;
(c) ceiling: the page-cache read rate of the training shards (16 MiB reads of files already in the page
    cache, the faster of one thread and one thread per CPU), converted to spectra/s with the shards'
    bytes per sample. The loader reads local shards through memory maps, without the copy that this read
    makes, so a loader that draws no noise can pass the ceiling;
(d) the noise kernel alone: kernels.RowTransform in mode "flux_only" on rows already in memory, written in
    shuffled order, on one thread per CPU. No loader that draws the noise on the CPU can beat it.
It also times `specstream shard` on the file and measures how well the loader mixes the split (see
`mixing`). Run from the repository root:

    python benchmarks/bench_loader.py                   # saves benchmarks/results/loader.{json,md}
    python benchmarks/bench_loader.py --n-spectra 8192  # quick run

Loader figures are the median spectra per second over timed epochs, after WARMUP_EPOCHS epochs that compile
the kernels, warm the page cache, build the page tables of the memory maps and allocate the reusable output
windows; the first (cold) epoch's rate is reported as well. Other processes on the machine lower every
figure; the load average is saved with them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kernels_report import environment, save_report  # noqa: E402
from bench_shard import make_input, measure_shard  # noqa: E402

from specstream.data import SpectraLoader, load_split_arrays, read_manifest  # noqa: E402
from specstream.data.manifest import SplitLayout  # noqa: E402
from specstream.data.schedule import EpochSchedule  # noqa: E402
from specstream.kernels import RowTransform  # noqa: E402
from specstream.reference_path import reference_loader  # noqa: E402
from specstream.shards import ShardOptions  # noqa: E402

logger = logging.getLogger("bench_loader")

READ_BYTES = 16 << 20
WARMUP_EPOCHS = 2
FLUX_ONLY_ROW = "flux_only, threads (num_workers=0)"
SPECSTREAM_CONFIGS = {  # name -> SpectraLoader keyword arguments
    FLUX_ONLY_ROW: {"mode": "flux_only", "num_workers": 0},
    "whitening, threads": {"mode": "whitening", "num_workers": 0},
    "noise_free, threads": {"mode": "noise_free", "num_workers": 0},
    "flux_only, threads, read_mode='pread'": {"mode": "flux_only", "num_workers": 0, "read_mode": "pread"},
    "noise_free, threads, read_mode='pread'": {"mode": "noise_free", "num_workers": 0, "read_mode": "pread"},
    "flux_only, 2 worker processes (fork)": {"mode": "flux_only", "num_workers": 2,
                                             "multiprocessing_context": "fork"},
}
KERNEL_ROWS = 8192  # rows of the in-memory kernel measurement
KERNEL_CALL_ROWS = 32  # rows per RowTransform call, as the loader makes them


def _read_pieces(pieces: list[tuple[Path, int]]) -> int:
    """Read 16 MiB pieces (path, offset) into one buffer; return the bytes read."""
    buffer = memoryview(bytearray(READ_BYTES))
    total = 0
    for path, offset in pieces:
        fd = os.open(path, os.O_RDONLY)
        try:
            total += os.preadv(fd, [buffer], offset)
        finally:
            os.close(fd)
    return total


def page_cache_rate(paths: list[Path], repeats: int, n_threads: int) -> float:
    """Return the best rate in bytes/s of reading `paths` with `n_threads` threads, after a warm-up pass."""
    pieces = [(path, offset) for path in paths for offset in range(0, path.stat().st_size, READ_BYTES)]
    rates = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            total = sum(pool.map(_read_pieces, [pieces[k::n_threads] for k in range(n_threads)]))
            if attempt:
                rates.append(total / (time.perf_counter() - start))
    return max(rates)


def time_specstream(shard_dir: Path, batch_size: int, epochs: int, **kwargs) -> dict:
    """Time whole training-split epochs of SpectraLoader after WARMUP_EPOCHS warm-up epochs."""
    loader = SpectraLoader(shard_dir, "train", batch_size=batch_size, **kwargs)
    rates = []
    for epoch in range(WARMUP_EPOCHS + epochs):
        loader.set_epoch(epoch)
        n, start = 0, time.perf_counter()
        for batch in loader:
            n += len(batch.sample_ids)
        rates.append(n / (time.perf_counter() - start))
    timed = rates[WARMUP_EPOCHS:]
    return {"spectra_per_s": statistics.median(timed), "best_spectra_per_s": max(timed),
            "first_epoch_spectra_per_s": rates[0], "samples_per_epoch": n, "epochs_timed": epochs,
            "warmup_epochs": WARMUP_EPOCHS}


def time_kernel(shard_dir: Path, repeats: int) -> dict:
    """Time RowTransform("flux_only") alone on KERNEL_ROWS training rows held in memory, one thread per CPU."""
    arrays = load_split_arrays(shard_dir, "train", max_samples=KERNEL_ROWS)
    flux, error = np.ascontiguousarray(arrays.flux), np.ascontiguousarray(arrays.error)
    ids = arrays.ids.astype(np.int64)
    n_rows, n_pixels = flux.shape
    out = np.empty((n_rows, n_pixels), dtype=np.float32)
    out_rows = np.random.default_rng(0).permutation(n_rows).astype(np.int64)
    transform = RowTransform(mode="flux_only", seed=0, epoch=0, n_pixels=n_pixels)
    n_threads = len(os.sched_getaffinity(0))
    bounds = [n_rows * k // n_threads for k in range(n_threads + 1)]

    def part(k: int) -> None:
        for first in range(bounds[k], bounds[k + 1], KERNEL_CALL_ROWS):
            last = min(first + KERNEL_CALL_ROWS, bounds[k + 1])
            transform(flux[first:last], error[first:last], ids[first:last], out, out_rows[first:last])

    rates = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            list(pool.map(part, range(n_threads)))
            if attempt:
                rates.append(n_rows / (time.perf_counter() - start))
    return {"spectra_per_s": statistics.median(rates), "threads": n_threads, "rows": n_rows,
            "rows_per_call": KERNEL_CALL_ROWS}


def time_reference(paths: list[Path], batch_size: int, num_workers: int, max_samples: int) -> dict:
    """Time the reference DataLoader over `max_samples` samples, after its first batch (worker start-up)."""
    loader = reference_loader(paths, batch_size=batch_size, num_workers=num_workers)
    iterator = iter(loader)
    next(iterator)
    n, start = 0, time.perf_counter()
    for inputs, _ in iterator:
        n += len(inputs)
        if n >= max_samples:
            break
    return {"spectra_per_s": n / (time.perf_counter() - start), "samples_timed": n, "num_workers": num_workers}


def storage_positions(schedule: EpochSchedule) -> np.ndarray:
    """Return the storage position (0 .. N-1) of every sample of the rank's epoch, in the order served."""
    block_start = np.concatenate([[0], np.cumsum(schedule.layout.block_rows)])
    positions = []
    for index in range(schedule.n_windows):
        window = schedule.window(index)
        rows = np.concatenate([block_start[b] + np.arange(r0, r1) for b, r0, r1, _ in window.pieces])
        positions.append(rows if window.order is None else rows[window.order])
    return np.concatenate(positions)


def batch_mean_variance_ratio(positions: np.ndarray, n_total: int, batch_size: int) -> float:
    """Return var(batch mean of q) / (var(q) / batch_size) for q = position / n_total: 1 for an iid shuffle."""
    q = positions / n_total
    n = len(q) // batch_size * batch_size
    means = q[:n].reshape(-1, batch_size).mean(axis=1)
    return float(means.var() / (q.var() / batch_size))


def shuffle_buffer_order(n_total: int, buffer_size: int, seed: int = 0) -> np.ndarray:
    """Return the order of a webdataset-style shuffle buffer of `buffer_size` over samples read in order."""
    rng = np.random.default_rng(seed)
    buffer, order = [], []
    for position in range(n_total):
        buffer.append(position)
        if len(buffer) >= buffer_size:
            pick = int(rng.integers(len(buffer)))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            order.append(buffer.pop())
    rng.shuffle(buffer)
    return np.array(order + buffer)


def mixing(n_total: int, block_size: int, batch_size: int, shuffle_window: int, unit_rows: int) -> dict:
    """Measure mixing on a split of `n_total` samples from the epoch schedule alone (no data is read).

    If the storage order were sorted by a label, the ratio is how much more the batch means of that label
    vary than under an iid shuffle (1.0).
    """
    rows = np.full(n_total // block_size, block_size, dtype=np.int64)
    if n_total % block_size:
        rows = np.append(rows, n_total % block_size)
    layout = SplitLayout("train", ["synthetic"], np.zeros(1, np.int64), [None], np.zeros(len(rows), np.int64), rows,
                         [""] * len(rows), [{}] * len(rows), 4096, np.dtype("float32"), False, ["log_g"])
    window_rows = -(-shuffle_window // batch_size) * batch_size
    schedule = EpochSchedule(layout=layout, batch_size=batch_size, rank=0, world_size=1, seed=0, epoch=0,
                             shuffle=True, drop_last=True, pad_mode="wrap", window_rows=window_rows,
                             unit_rows=unit_rows)
    iid = np.random.default_rng(0).permutation(n_total)
    return {
        "n_samples": n_total, "batch_size": batch_size, "shuffle_window": shuffle_window, "unit_rows": unit_rows,
        "specstream": batch_mean_variance_ratio(storage_positions(schedule), n_total, batch_size),
        "iid_permutation": batch_mean_variance_ratio(iid, n_total, batch_size),
        "buffer_1000_in_order": batch_mean_variance_ratio(shuffle_buffer_order(n_total, 1000), n_total, batch_size),
        "buffer_8192_in_order": batch_mean_variance_ratio(shuffle_buffer_order(n_total, 8192), n_total, batch_size),
    }


def format_markdown(report: dict) -> str:
    env, ref = report["environment"], report["reference"]
    lines = [
        "# Loader throughput: reference HDF5 path vs SpectraLoader vs page cache",
        "",
        f"Command: `{env['command']}`  ",
        f"Machine: {env['cpu']}, {env['cpus_available']} CPUs; torch {env['torch']}; git {env['git_revision']}; "
        f"{env['utc_time']}  ",
        f"Data: {report['n_spectra']} stand-in spectra (float32, 4096 pixels), training split "
        f"{report['n_train']} samples, batch size {report['batch_size']}; the reference and the flux_only rows "
        "draw noise flux + error * N(0, 1); "
        f"load average before/after {report['load_before']:.1f}/{report['load_after']:.1f}",
        "",
        f"Loader rows: median of {report['repeats']} epochs after {WARMUP_EPOCHS} warm-up epochs; the first "
        "(cold) epoch also builds the page tables of the memory maps and allocates the output windows.",
        "",
        "| path | spectra/s | first epoch | vs reference | vs page-cache ceiling |",
        "| --- | --- | --- | --- | --- |",
        f"| reference: h5py per sample + NumPy noise, DataLoader {ref['num_workers']} workers | "
        f"{ref['spectra_per_s']:.0f} | | 1.0 | {ref['spectra_per_s'] / report['ceiling_spectra_per_s']:.2f} |",
    ]
    for name, row in report["specstream"].items():
        lines.append(f"| specstream, {name} | {row['spectra_per_s']:.0f} | {row['first_epoch_spectra_per_s']:.0f} | "
                     f"{row['vs_reference']:.1f} | {row['vs_ceiling']:.2f} |")
    kernel = report["kernel"]
    lines += [
        f"| noise kernel alone: RowTransform flux_only on rows in memory, {kernel['threads']} threads | "
        f"{kernel['spectra_per_s']:.0f} | | {kernel['spectra_per_s'] / ref['spectra_per_s']:.1f} | "
        f"{kernel['spectra_per_s'] / report['ceiling_spectra_per_s']:.2f} |",
        f"| ceiling: page-cache read of the shards ({report['ceiling_gb_per_s']:.2f} GB/s with "
        f"{max(report['read_gb_per_s_by_threads'], key=report['read_gb_per_s_by_threads'].get)} thread(s), "
        f"{report['shard_bytes_per_sample']:.0f} bytes/sample) | {report['ceiling_spectra_per_s']:.0f} | | "
        f"{report['ceiling_spectra_per_s'] / ref['spectra_per_s']:.1f} | 1.00 |",
        "",
        f"The flux_only loader runs at "
        f"{report['specstream'][FLUX_ONLY_ROW]['spectra_per_s'] / kernel['spectra_per_s']:.2f} of the noise "
        "kernel's own rate: drawing the noise, not reading, bounds it on this machine.",
        "",
        f"`specstream shard` on the same file: {report['shard']['mb_per_s_written']:.0f} MB/s written "
        f"({report['shard']['spectra_per_s']:.0f} spectra/s, fsync on).",
        "",
        "Mixing, measured on the epoch schedule of a split of "
        f"{report['mixing']['n_samples']} samples in blocks of {report['block_size']}, batch size "
        f"{report['mixing']['batch_size']}: variance of batch means of the storage position over its iid value "
        f"(1 = iid shuffle; what a label sorted in storage order would show). specstream "
        f"(shuffle_window {report['mixing']['shuffle_window']}, unit_rows {report['mixing']['unit_rows']}): "
        f"{report['mixing']['specstream']:.1f}; iid permutation {report['mixing']['iid_permutation']:.2f}; "
        f"a 1000-sample shuffle buffer over shards read in order {report['mixing']['buffer_1000_in_order']:.0f}; "
        f"an 8192-sample buffer {report['mixing']['buffer_8192_in_order']:.0f}.",
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, work_dir: Path) -> dict:
    source = make_input(work_dir, args.n_spectra)
    shard_dir = work_dir / "shards"
    load_before = os.getloadavg()[0]
    shard = measure_shard([source], shard_dir, ShardOptions(test_size=1000, val_size=0.05,
                                                            block_size=args.block_size))
    manifest = read_manifest(shard_dir)
    train_shards = [shard_dir / s["name"] for s in manifest["splits"]["train"]["shards"]]
    n_train = manifest["splits"]["train"]["n_samples"]
    bytes_per_sample = sum(path.stat().st_size for path in train_shards) / n_train
    cpus = len(os.sched_getaffinity(0))
    read_rates = {n: page_cache_rate(train_shards, args.repeats, n) for n in sorted({1, cpus})}
    ceiling_rate = max(read_rates.values())
    ceiling = ceiling_rate / bytes_per_sample

    reference = time_reference([source], args.batch_size, args.reference_workers, args.reference_samples)
    logger.info("reference: %.0f spectra/s", reference["spectra_per_s"])
    kernel = time_kernel(shard_dir, args.repeats)
    logger.info("noise kernel alone: %.0f spectra/s", kernel["spectra_per_s"])
    results = {}
    for name, kwargs in SPECSTREAM_CONFIGS.items():
        row = time_specstream(shard_dir, args.batch_size, args.repeats, **kwargs)
        row["vs_reference"] = row["spectra_per_s"] / reference["spectra_per_s"]
        row["vs_ceiling"] = row["spectra_per_s"] / ceiling
        row["settings"] = {key: str(value) for key, value in kwargs.items()}
        results[name] = row
        logger.info("specstream, %s: %.0f spectra/s", name, row["spectra_per_s"])
    defaults = SpectraLoader.__init__.__kwdefaults__
    return {
        "environment": environment(), "n_spectra": args.n_spectra, "n_train": n_train,
        "batch_size": args.batch_size, "block_size": args.block_size, "repeats": args.repeats,
        "load_before": load_before, "kernel": kernel,
        "load_after": os.getloadavg()[0], "shard": shard, "reference": reference, "specstream": results,
        "ceiling_gb_per_s": ceiling_rate / 1e9, "shard_bytes_per_sample": bytes_per_sample,
        "read_gb_per_s_by_threads": {n: rate / 1e9 for n, rate in read_rates.items()},
        "ceiling_spectra_per_s": ceiling,
        "mixing": mixing(args.mixing_samples, args.block_size, args.batch_size, defaults["shuffle_window"],
                         defaults["unit_rows"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-spectra", type=int, default=32768, help="stand-in spectra written and sharded")
    parser.add_argument("--batch-size", type=int, default=1024, help="batch size of every loader")
    parser.add_argument("--block-size", type=int, default=1024, help="shard block size")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed passes or epochs per measurement (after the warm-up)")
    parser.add_argument("--reference-workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--reference-samples", type=int, default=16384, help="samples timed on the reference")
    parser.add_argument("--mixing-samples", type=int, default=1_000_000, help="split size of the mixing measure")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the input and shards go (default: a temporary directory, deleted after)")
    parser.add_argument("--name", default="loader", help="report name under benchmarks/results/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="specstream-bench-loader-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    markdown = format_markdown(report)
    json_path, markdown_path = save_report(args.name, report, markdown)
    print(markdown)
    print(f"saved {json_path} and {markdown_path}")


if __name__ == "__main__":
    main()
