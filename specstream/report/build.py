"""Build `report.md` and its PNG figures from a results CSV and the run directories its rows name."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from specstream.atomic import make_folder, write_text_atomically
from specstream.results import read_results

from . import plots
from .runs import RunFiles, load_runs
from .table import build_summary, markdown_table, table_notes

logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"
DEFAULT_MAX_RUNS = 9
PER_SAMPLE_COLUMNS = ("mag", "snr")


@dataclass
class Report:
    """Paths that `build_report` wrote, and the reason for each figure it left out."""

    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> PNG path
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> reason


def _select_runs(runs: list[RunFiles], max_runs: int) -> list[RunFiles]:
    """Return the runs with predictions, best first within the table's group order, at most `max_runs`."""
    return [run for run in runs if run.predictions is not None][:max_runs]


def _draw_figures(runs: list[RunFiles], out_dir: Path, max_runs: int, report: Report) -> None:
    with_predictions = _select_runs(runs, max_runs)
    n_with_predictions = sum(run.predictions is not None for run in runs)
    if n_with_predictions > max_runs:
        report.skipped["more runs"] = (f"{n_with_predictions - max_runs} more runs have predictions; the "
                                       f"figures show the first {max_runs} in table order (raise --max-runs)")
    # Figure name -> per-sample columns it needs besides y_true and y_pred (None: none).
    figures = {"pred_vs_true": None, "residuals": PER_SAMPLE_COLUMNS, "r2_per_bin": PER_SAMPLE_COLUMNS}
    for name, needed in figures.items():
        if not with_predictions:
            report.skipped[name] = "no run has a readable test_predictions.npz"
            continue
        path = out_dir / f"{name}.png"
        if needed is None:
            report.figures[name] = plots.plot_predicted_vs_true(with_predictions, path)
            continue
        columns = [column for column in needed if any(column in run.predictions for run in with_predictions)]
        if not columns:
            report.skipped[name] = f"the predictions files have no {' or '.join(needed)} column"
            continue
        draw = plots.plot_residuals if name == "residuals" else plots.plot_binned_r2
        report.figures[name] = draw(with_predictions, columns, path)

    with_epochs = [run for run in runs if run.epochs is not None][:max_runs]
    if with_epochs:
        report.figures["learning_curves"] = plots.plot_learning_curves(with_epochs, out_dir / "learning_curves.png")
    else:
        report.skipped["learning_curves"] = "no run directory has an epochs.jsonl log (baselines have none)"


FIGURE_TITLES = {
    "pred_vs_true": "Predicted against true target on the test split (density)",
    "residuals": "Residuals against magnitude and S/N",
    "r2_per_bin": "Test R² per magnitude and S/N bin",
    "learning_curves": "Learning curves",
}


def _markdown(results_csv: Path, summary, runs: list[RunFiles], report: Report) -> str:
    lines = [
        "# specstream results",
        "",
        f"Source: `{results_csv}` ({len(summary.rows)} experiments), written {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "## Test-split summary",
        "",
        markdown_table(summary),
        "",
    ]
    lines += [f"- {note}" for note in table_notes(summary)]
    lines += ["", "## Figures", ""]
    for name, title in FIGURE_TITLES.items():
        if name in report.figures:
            lines += [f"### {title}", "", f"![{title}]({report.figures[name].name})", ""]
    if report.skipped:
        lines += ["Figures left out:", ""]
        lines += [f"- {name}: {reason}" for name, reason in report.skipped.items()]
        lines.append("")
    problems = [(run.experiment_id, problem) for run in runs for problem in run.problems]
    if problems:
        lines += ["Run files not used:", ""]
        lines += [f"- {experiment_id}: {problem}" for experiment_id, problem in problems]
        lines.append("")
    return "\n".join(lines)


def build_report(results_csv: str | os.PathLike, out_dir: str | os.PathLike, *,
                 max_runs: int = DEFAULT_MAX_RUNS) -> Report:
    """Write `out_dir/report.md` (summary table, notes, figure links) and the PNG figures beside it.

    Reads the run directory of every row for `test_predictions.npz` and `epochs.jsonl`. A missing or
    unreadable file leaves that run out of the figures, and the report notes it.
    """
    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    results_csv = Path(results_csv)
    out_dir = Path(out_dir)
    frame = read_results(results_csv)
    if frame.empty:
        raise ValueError(f"{results_csv} has no result rows; run an experiment or a baseline first")
    summary = build_summary(frame)
    make_folder(out_dir)
    runs = load_runs(summary.rows, results_csv)
    report = Report(out_dir / REPORT_NAME)
    _draw_figures(runs, out_dir, max_runs, report)
    text = _markdown(results_csv, summary, runs, report)

    write_text_atomically(report.markdown, text)
    logger.info("wrote %s with %d figures (%d left out)", report.markdown, len(report.figures), len(report.skipped))
    return report
