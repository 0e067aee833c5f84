"""Data-parallel scaling on 1-8 GPUs of one node, from a model of compute and gradient all-reduce per step.

No multi-GPU machine has been available to measure it, so this estimates it and writes every assumption
down. Measured here (on any machine): the parameters and the training FLOPs per spectrum of each model
(torch.utils.flop_counter on a forward and backward pass). Assumed, and given as options:

- one GPU's step time: `--epoch-s-1gpu` seconds per epoch of CNN_1M, default 6 s (an estimate of about a
  minute of H200 compute for 10 epochs), or the epoch measured by `specstream bench` (`--from-bench`,
  scaled to 1M spectra). Other groups scale it by their FLOPs per step;
- a fixed cost per step that does not shrink with more GPUs (kernel launches, optimizer step, the noise draw
  of the resident path's first kernels): `--fixed-step-ms`, default 0.3 ms;
- the gradient all-reduce: DistributedDataParallel sends the fp32 gradients (4 bytes per parameter) with a
  ring all-reduce, 2 (N - 1) steps of `--latency-us` each plus 2 (N - 1) / N of the bytes at `--bus-gb-s`.
  Defaults: 8 us and 350 GB/s, estimates for NCCL over NVLink between H200 SXM GPUs; `--pcie` uses
  15 us and 20 GB/s instead. Replace them with measured figures where there are any;
- no overlap of the all-reduce with the backward pass: both models' gradients fit in DDP's first 25 MB
  bucket, which is sent when the backward pass ends;
- the global batch stays the group's (each of N GPUs takes batch / N), and the resident path needs no data
  exchange between GPUs (each rank keeps its part of the split in memory).

Per step on N GPUs: t(N) = compute(1) / N + fixed + allreduce(N); speedup t(1) / t(N); efficiency
speedup / N. Per-epoch evaluation and checkpointing are left out. Run from the repository root:

    python benchmarks/scaling_model.py           # saves benchmarks/results/scaling_model.{json,md}
    python benchmarks/scaling_model.py --pcie
    python benchmarks/scaling_model.py --from-bench benchmarks/results/gpu --out-dir benchmarks/results/gpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kernels_report import RESULTS_DIR, environment, save_report  # noqa: E402

from specstream.groups import GROUPS  # noqa: E402
from specstream.models import build_model  # noqa: E402

GROUP_NAMES = ("CNN_1M", "MLP_100k")
GPU_COUNTS = (1, 2, 4, 8)
REFERENCE_GROUP = "CNN_1M"
FP32_GRADIENT_BYTES = 4


def measure_model(name: str, n_pixels: int = 4096) -> dict:
    """Return the parameters and the forward + backward FLOPs per spectrum of a zoo model."""
    model = build_model(name, n_pixels=n_pixels)
    batch = torch.randn(4, n_pixels)
    with FlopCounterMode(display=False) as counter:
        model(batch).sum().backward()
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_flops_per_spectrum": counter.get_total_flops() / len(batch)}


def measured_epoch_s(path: Path) -> tuple[float, str]:
    """Return the CNN_1M epoch time of one GPU scaled to 1M spectra, from a `specstream bench` JSON report.

    `path` is a report, or a folder whose newest bench-*.json report with a CNN_1M run is used.
    """
    candidates = sorted(path.glob("bench-*.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if path.is_dir() else [path]
    for candidate in candidates:
        for entry in json.loads(candidate.read_text()).get("experiments", []):
            if entry["experiment"]["group"] == REFERENCE_GROUP:
                fast = entry["fast"][0]
                return fast["epoch_s"] * GROUPS[REFERENCE_GROUP]["train_size"] / entry["train_size"], str(candidate)
    raise SystemExit(f"no {REFERENCE_GROUP} run found in {path}; run `specstream bench -e {REFERENCE_GROUP}` first")


def allreduce_s(n_gpus: int, n_bytes: float, latency_s: float, bus_bytes_per_s: float) -> float:
    """Return the time of a ring all-reduce of n_bytes over n_gpus (0 for one GPU)."""
    if n_gpus == 1:
        return 0.0
    return 2 * (n_gpus - 1) * latency_s + 2 * (n_gpus - 1) / n_gpus * n_bytes / bus_bytes_per_s


def scaling(args: argparse.Namespace) -> dict:
    groups = {}
    reference = None
    for name in GROUP_NAMES:
        group = GROUPS[name]
        model = group["models"][0]
        groups[name] = {"model": model, "batch_size": group["batch_size"], "epochs": group["epochs"],
                        "train_spectra": group["train_size"], **measure_model(model)}
        if name == REFERENCE_GROUP:
            reference = groups[name]
    steps_reference = reference["train_spectra"] / reference["batch_size"]
    flops_per_s = reference["train_flops_per_spectrum"] * reference["train_spectra"] / args.epoch_s_1gpu
    latency_s, bus = args.latency_us * 1e-6, args.bus_gb_s * 1e9
    for group in groups.values():
        compute_1 = group["train_flops_per_spectrum"] * group["batch_size"] / flops_per_s
        steps = group["train_spectra"] / group["batch_size"]
        gradient_bytes = FP32_GRADIENT_BYTES * group["parameters"]
        rows = []
        for n in GPU_COUNTS:
            step = compute_1 / n + args.fixed_step_ms * 1e-3 + allreduce_s(n, gradient_bytes, latency_s, bus)
            rows.append({"gpus": n, "step_ms": step * 1e3, "allreduce_ms": allreduce_s(n, gradient_bytes, latency_s,
                                                                                       bus) * 1e3,
                         "run_s": step * steps * group["epochs"]})
        t1 = rows[0]["step_ms"]
        for row in rows:
            row["speedup"] = t1 / row["step_ms"]
            row["efficiency"] = row["speedup"] / row["gpus"]
        group.update({"compute_ms_1gpu": compute_1 * 1e3, "gradient_bytes": gradient_bytes,
                      "steps_per_epoch": steps, "rows": rows})
    return {"environment": environment(), "groups": groups, "achieved_tflop_per_s": flops_per_s / 1e12,
            "reference_steps_per_epoch": steps_reference,
            "assumptions": {"epoch_s_1gpu_cnn_1m": args.epoch_s_1gpu, "epoch_source": args.epoch_source,
                            "fixed_step_ms": args.fixed_step_ms,
                            "latency_us": args.latency_us, "bus_gb_s": args.bus_gb_s,
                            "interconnect": "PCIe" if args.pcie else "NVLink"}}


def format_markdown(report: dict) -> str:
    env, assumed = report["environment"], report["assumptions"]
    lines = [
        f"# Data-parallel scaling model ({assumed['interconnect']}), not a measurement",
        "",
        f"Command: `{env['command']}`  ",
        f"git {env['git_revision']}; {env['utc_time']}",
        "",
        f"CNN_1M epoch on one GPU {assumed['epoch_s_1gpu_cnn_1m']:.3g} s, {assumed['epoch_source']} (so "
        f"{report['achieved_tflop_per_s']:.3g} TFLOP/s achieved). Assumed: fixed cost "
        f"{assumed['fixed_step_ms']:g} ms per "
        f"step, all-reduce latency {assumed['latency_us']:g} us per ring step and bus bandwidth "
        f"{assumed['bus_gb_s']:g} GB/s, no overlap with the backward pass. See the script's docstring.",
        "",
    ]
    for name, group in report["groups"].items():
        lines += [
            f"## {name}: {group['model']}, batch {group['batch_size']}, {group['epochs']} epochs of "
            f"{group['train_spectra']} spectra",
            "",
            f"Measured: {group['parameters']} parameters ({group['gradient_bytes'] / 1e6:.2f} MB of fp32 gradients), "
            f"{group['train_flops_per_spectrum'] / 1e6:.1f} MFLOP per spectrum for forward + backward. "
            f"Compute per step on one GPU: {group['compute_ms_1gpu']:.2f} ms.",
            "",
            "| GPUs | step (ms) | all-reduce (ms) | run (s) | speedup | efficiency |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {r['gpus']} | {r['step_ms']:.2f} | {r['allreduce_ms']:.3f} | {r['run_s']:.1f} | "
                  f"{r['speedup']:.2f} | {r['efficiency']:.2f} |" for r in group["rows"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epoch-s-1gpu", type=float, default=6.0,
                        help="seconds per CNN_1M epoch on one GPU (measured, or an estimate)")
    parser.add_argument("--from-bench", type=Path, default=None,
                        help="take the CNN_1M epoch from this `specstream bench` JSON report (or folder of them)")
    parser.add_argument("--fixed-step-ms", type=float, default=0.3, help="per-step cost that does not scale")
    parser.add_argument("--latency-us", type=float, default=None, help="all-reduce latency per ring step")
    parser.add_argument("--bus-gb-s", type=float, default=None, help="all-reduce bus bandwidth, GB/s")
    parser.add_argument("--pcie", action="store_true", help="GPUs joined by PCIe instead of NVLink")
    parser.add_argument("--name", default=None, help="report name (default scaling_model or scaling_model-pcie)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="folder of the report")
    args = parser.parse_args()
    args.epoch_source = "assumed (an estimate)"
    if args.from_bench is not None:
        args.epoch_s_1gpu, args.epoch_source = measured_epoch_s(args.from_bench)
    if args.latency_us is None:
        args.latency_us = 15.0 if args.pcie else 8.0
    if args.bus_gb_s is None:
        args.bus_gb_s = 20.0 if args.pcie else 350.0
    report = scaling(args)
    markdown = format_markdown(report)
    json_path, markdown_path = save_report(args.name or ("scaling_model-pcie" if args.pcie else "scaling_model"),
                                           report, markdown, args.out_dir)
    print(markdown)
    print(f"saved {json_path} and {markdown_path}")


if __name__ == "__main__":
    main()
