"""`specstream inspect`: summaries of survey files and the invalid rows they contain."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from specstream.grid import is_mr_grid
from specstream.io import Problem, describe, iter_chunks, read_labels

SNR_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass
class FileReport:
    """Summary of one file: shape, grid, labels, S/N and problems."""

    path: Path
    layout: str
    n_spectra: int
    n_pixels: int
    dtype: str
    has_mask: bool
    size_bytes: int
    wave_range_a: tuple
    on_mr_grid: bool
    wave_increasing: bool
    label_summary: pd.DataFrame
    snr_percentiles: dict = field(default_factory=dict)  # percentile -> median flux/error per spectrum
    masked_fraction: float = 0.0
    problems: list = field(default_factory=list)
    n_bad_rows: int = 0


def inspect_file(path: str | Path, chunk_size: int = 4096,
                 progress: Callable[[int], None] | None = None) -> FileReport:
    """Scan one file in chunks and summarise it; bad rows are counted, not raised."""
    info = describe(path)
    labels = read_labels(info.path, info)
    summary = labels.describe().T[["count", "min", "50%", "max"]].rename(columns={"50%": "median"})
    summary.insert(1, "n_nan", labels.isna().sum())
    problems: list[Problem] = []
    snr_parts, n_masked, n_bad = [], 0, 0
    for chunk in iter_chunks([info.path], chunk_size=chunk_size, on_bad="drop", problems=problems):
        good = chunk.mask == 0 if chunk.mask is not None else np.ones(chunk.flux.shape, bool)
        ratio = np.where(good, chunk.flux / chunk.error, np.nan)
        snr_parts.append(np.nanmedian(ratio, axis=1))
        n_masked += int((~good).sum())
        n_bad += chunk.n_dropped
        if progress is not None:
            progress(len(chunk.flux) + chunk.n_dropped)
    snr = np.concatenate(snr_parts) if snr_parts else np.array([])
    n_valid = max(1, len(snr) * info.n_pixels)
    wave = info.wave
    return FileReport(
        path=info.path, layout=info.layout, n_spectra=info.n_spectra, n_pixels=info.n_pixels,
        dtype=str(info.dtype), has_mask=info.has_mask, size_bytes=info.size_bytes,
        wave_range_a=(float(wave[0]), float(wave[-1])), on_mr_grid=is_mr_grid(wave),
        wave_increasing=bool(np.all(np.diff(wave) > 0)), label_summary=summary,
        snr_percentiles={p: float(np.percentile(snr, p)) for p in SNR_PERCENTILES} if len(snr) else {},
        masked_fraction=n_masked / n_valid, problems=problems, n_bad_rows=n_bad,
    )


def format_report(report: FileReport) -> str:
    """Render a FileReport as plain text for the terminal."""
    lines = [
        f"{report.path}",
        f"  layout {report.layout}, {report.n_spectra} spectra x {report.n_pixels} pixels, {report.dtype}, "
        f"{report.size_bytes / 2**20:.1f} MiB, mask: {'yes' if report.has_mask else 'no'}",
        f"  wave {report.wave_range_a[0]:.3f}-{report.wave_range_a[1]:.3f} A, "
        f"{'on' if report.on_mr_grid else 'NOT on'} the PFS MR grid"
        + ("" if report.wave_increasing else ", NOT strictly increasing"),
    ]
    if report.snr_percentiles:
        snr = ", ".join(f"p{p} {v:.2f}" for p, v in report.snr_percentiles.items())
        lines.append(f"  median S/N per pixel: {snr}")
    if report.has_mask:
        lines.append(f"  masked pixels in valid rows: {100 * report.masked_fraction:.2f} %")
    lines.append("  labels:")
    lines.extend("    " + row for row in report.label_summary.to_string(float_format="{:.4g}".format).splitlines())
    if report.problems:
        lines.append(f"  problems ({report.n_bad_rows} bad rows would be dropped by --drop-bad):")
        lines.extend("    " + p.message() for p in report.problems)
    else:
        lines.append("  problems: none found")
    return "\n".join(lines)
