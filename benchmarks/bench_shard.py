"""Throughput of `specstream shard` (MB/s written) against the usual WebDataset way, and the float16 loss.

Writes stand-in spectra to a survey file once, then shards it with each configuration and times the whole
call (reading and validating the input, split assignment, statistics, checksums, writing, fsync). The
reference, timed in the same run, is how WebDataset shards are usually made: h5py reads one spectrum at a
time and webdataset's ShardWriter writes one sample per spectrum (flux.npy, error.npy, labels.json), with
no validation, statistics, checksums or fsync. Run from the repository root:

    python benchmarks/bench_shard.py                  # 32768 spectra, saves benchmarks/results/shard.{json,md}
    python benchmarks/bench_shard.py --n-spectra 4096 # quick run

The load average before and after is saved too: other processes slow every configuration alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kernels_report import environment, save_report  # noqa: E402

from specstream.shards import ShardOptions, write_shards  # noqa: E402
from specstream.synth import write_synth  # noqa: E402

logger = logging.getLogger("bench_shard")

CONFIGS = {  # name -> ShardOptions fields
    "float32": {"dtype": "float32"},
    "float32, no fsync": {"dtype": "float32", "fsync": False},
    "float16": {"dtype": "float16"},
}


def make_input(work_dir: Path, n_spectra: int, seed: int = 0) -> Path:
    """Write (or reuse) a stand-in survey file of `n_spectra` float32 spectra in `work_dir`."""
    path = work_dir / f"synth_{n_spectra}_{seed}.h5"
    if not path.exists():
        logger.info("writing %d stand-in spectra to %s", n_spectra, path)
        write_synth(path, n_spectra, seed)
    return path


def measure_shard(inputs: list[Path], out_dir: Path, options: ShardOptions) -> dict:
    """Shard `inputs` into a fresh `out_dir` and return the timing and size figures."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    result = write_shards(inputs, out_dir, options)
    input_bytes = sum(path.stat().st_size for path in inputs)
    return {
        "seconds": result.seconds,
        "bytes_written": result.bytes_written,
        "mb_per_s_written": result.bytes_written / 1e6 / result.seconds,
        "input_mb_per_s_read": input_bytes / 1e6 / result.seconds,
        "spectra_per_s": result.spectra_read / result.seconds,
        "float16_loss": result.manifest["float16_loss"],
    }


def measure_reference(source: Path, out_dir: Path, shard_size_mb: float) -> dict:
    """Write `source` as one-sample-per-spectrum WebDataset shards with webdataset.ShardWriter; return timings."""
    import h5py
    import webdataset as wds

    from specstream.io import describe, read_labels

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    info = describe(source)
    labels = read_labels(source, info)
    started = time.perf_counter()
    with h5py.File(source, "r") as handle, wds.ShardWriter(str(out_dir / "ref-%06d.tar"), maxcount=10**9,
                                                           maxsize=shard_size_mb * 1e6, verbose=0) as sink:
        flux, error = handle[info.keys["flux"]], handle[info.keys["error"]]
        for row in range(info.n_spectra):
            sink.write({"__key__": f"{row:09d}", "flux.npy": flux[row], "error.npy": error[row],
                        "labels.json": labels.iloc[row].to_dict()})
    seconds = time.perf_counter() - started
    bytes_written = sum(path.stat().st_size for path in out_dir.glob("*.tar"))
    return {"seconds": seconds, "bytes_written": bytes_written, "mb_per_s_written": bytes_written / 1e6 / seconds,
            "input_mb_per_s_read": source.stat().st_size / 1e6 / seconds,
            "spectra_per_s": info.n_spectra / seconds}


def format_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# `specstream shard` throughput",
        "",
        f"Command: `{env['command']}`  ",
        f"Machine: {env['cpu']}, {env['cpus_available']} CPUs; git {env['git_revision']}; {env['utc_time']}  ",
        f"Input: {report['n_spectra']} stand-in spectra, float32, {report['input_mb']:.0f} MB; load average "
        f"before/after {report['load_before']:.1f}/{report['load_after']:.1f}",
        "",
        "| configuration | MB/s written | input MB/s read | spectra/s | seconds | spectra/s vs reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    reference = report["reference"]
    rows = {"reference: h5py per spectrum, webdataset ShardWriter per sample, no fsync": reference,
            **report["results"]}
    for name, row in rows.items():
        lines.append(f"| {name} | {row['mb_per_s_written']:.0f} | {row['input_mb_per_s_read']:.0f} | "
                     f"{row['spectra_per_s']:.0f} | {row['seconds']:.2f} | "
                     f"{row['spectra_per_s'] / reference['spectra_per_s']:.1f} |")
    loss = report["results"].get("float16", {}).get("float16_loss")
    if loss:
        lines += ["", "float16 rounding error, in units of each pixel's 1-sigma error: flux max "
                  f"{loss['flux']['max_abs_over_error']:.2e}, rms {loss['flux']['rms_abs_over_error']:.2e}; "
                  f"largest relative error of flux {loss['flux']['max_relative_normal']:.2e} and of error "
                  f"{loss['error']['max_relative_normal']:.2e} (values in the float16 normal range)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-spectra", type=int, default=32768, help="stand-in spectra to shard")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the input and shards go (default: a temporary directory, deleted after)")
    parser.add_argument("--name", default="shard", help="report name under benchmarks/results/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="specstream-bench-shard-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        source = make_input(work_dir, args.n_spectra)
        load_before = os.getloadavg()[0]
        reference = measure_reference(source, work_dir / "reference_shards", ShardOptions().shard_size_mb)
        logger.info("reference: %.0f spectra/s", reference["spectra_per_s"])
        results = {}
        for name, fields in CONFIGS.items():
            options = ShardOptions(test_size=1000, val_size=0.05, **fields)
            results[name] = measure_shard([source], work_dir / "shards", options)
            logger.info("%s: %.0f MB/s written", name, results[name]["mb_per_s_written"])
        report = {"environment": environment(), "n_spectra": args.n_spectra,
                  "input_mb": source.stat().st_size / 1e6, "load_before": load_before,
                  "load_after": os.getloadavg()[0], "reference": reference, "results": results}
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    json_path, markdown_path = save_report(args.name, report, format_markdown(report))
    print(format_markdown(report))
    print(f"saved {json_path} and {markdown_path}")


if __name__ == "__main__":
    main()
