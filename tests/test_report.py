"""The results report: summary table, reference differences, figures, missing columns and files, predictions files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from specstream.cli import app
from specstream.report import build_report, build_summary, markdown_table, plots
from specstream.report.runs import RunFiles, legend_labels
from specstream.report.table import format_count, format_seconds, table_notes
from specstream.results import load_predictions, save_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_csv(path, rows: list[dict]):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_run(run_dir, seed: int, noise: float, epochs: int | None = None, n: int = 400):
    """Write test predictions (with mag and snr) and, for NN-like runs, an epoch log."""
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(1, 5, n)
    save_predictions(run_dir / "test_predictions.npz", np.arange(n), y_true, y_true + rng.normal(0, noise, n),
                     {"mag": rng.uniform(20.5, 22.5, n), "snr": rng.uniform(2, 20, n)})
    if epochs:
        with open(run_dir / "epochs.jsonl", "w") as stream:
            for epoch in range(epochs):
                record = {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1),
                          "val_r2": 1 - 1.2 / (epoch + 2), "lr": 1e-3}
                stream.write(json.dumps(record) + "\n")


def reference_rows() -> list[dict]:
    return [
        {"experiment_id": "ridge-100k", "group": "baselines", "model": "ridge", "input": "flux_only",
         "target": "log_g", "test_r2": 0.46, "test_mae": 0.66, "train_size": 100_000, "train_time": 50.0},
        {"experiment_id": "ridge-1M", "group": "baselines", "model": "ridge", "input": "flux_only",
         "target": "log_g", "test_r2": 0.50, "test_mae": 0.64, "train_size": 1_000_000, "train_time": 900.0},
        {"experiment_id": "oracle-1M", "group": "baselines", "model": "oracle_moe", "input": "flux_only",
         "target": "log_g", "test_r2": 0.62, "test_mae": 0.55, "train_size": 1_000_000, "train_time": 1800.0},
        {"experiment_id": "mlp-100k", "group": "MLP_100k", "model": "mlp_3L_1024", "input": "flux_only",
         "target": "log_g", "test_r2": 0.4671, "test_mae": 0.645, "train_size": 100_000, "train_time": 204.0},
        {"experiment_id": "mlp-100k-w", "group": "MLP_100k", "model": "mlp_2L_2048", "input": "whitening",
         "target": "log_g", "test_r2": 0.10, "test_mae": 0.9, "train_size": 100_000, "train_time": 200.0},
        {"experiment_id": "cnn-1M", "group": "CNN_1M", "model": "cnn_4L_k5_wide", "input": "whitening",
         "target": "log_g", "test_r2": 0.4337, "test_mae": 0.681, "train_size": 1_000_000, "train_time": 13320.0},
    ]


def test_summary_differences_match_reference_rows():
    summary = build_summary(pd.DataFrame(reference_rows()))
    rows = summary.rows.set_index("experiment_id")
    assert rows.loc["mlp-100k", "delta_r2_ridge"] == pytest.approx(0.4671 - 0.46)
    assert rows.loc["cnn-1M", "delta_r2_ridge"] == pytest.approx(0.4337 - 0.50)  # same train size
    assert rows.loc["cnn-1M", "delta_r2_oracle"] == pytest.approx(0.4337 - 0.62)
    assert np.isnan(rows.loc["ridge-100k", "delta_r2_ridge"])  # a row is not compared with itself
    assert summary.ridge_reference["mlp-100k-w"] == "ridge-100k"
    assert summary.oracle_reference["mlp-100k"] == "oracle-1M"  # no 100k oracle: any oracle row


def test_summary_marks_best_per_group_without_oracle():
    summary = build_summary(pd.DataFrame(reference_rows()))
    best = set(summary.rows.loc[summary.rows["is_best"], "experiment_id"])
    assert best == {"ridge-1M", "mlp-100k", "cnn-1M"}
    order = list(summary.rows["experiment_id"])
    assert order == ["oracle-1M", "ridge-1M", "ridge-100k", "mlp-100k", "mlp-100k-w", "cnn-1M"]
    table = markdown_table(summary)
    assert "| baselines | **ridge-1M** | ridge | flux_only | 1M | **0.5000** |" in table
    assert "oracle_moe †" in table
    assert "3.7 h" in table
    assert any("upper bound, not a deployable model" in note for note in table_notes(summary))


def test_summary_keeps_last_duplicate():
    rows = reference_rows()[:1] + [dict(reference_rows()[0], test_r2=0.47)]
    summary = build_summary(pd.DataFrame(rows))
    assert len(summary.rows) == 1
    assert summary.rows.iloc[0]["test_r2"] == 0.47
    assert summary.n_duplicates == 1


def test_best_skips_missing_group_or_r2(caplog):
    rows = [
        {"experiment_id": "TINY-mlp-s0", "group": "TINY", "model": "mlp", "input": "flux_only", "test_r2": 0.40},
        {"experiment_id": "TINY-mlp-s1", "group": "TINY", "model": "mlp", "input": "flux_only", "test_r2": "oops"},
        {"experiment_id": "TINY-cnn-s0", "group": "TINY", "model": "cnn", "input": "flux_only",
         "test_r2": float("inf")},
        {"experiment_id": "TINY-cnn-s1", "test_r2": 0.90},  # a truncated row, without group and later columns
    ]
    caplog.set_level(logging.WARNING, logger="specstream.report.table")
    summary = build_summary(pd.DataFrame(rows))
    best = set(summary.rows.loc[summary.rows["is_best"], "experiment_id"])
    assert best == {"TINY-mlp-s0"}

    table = markdown_table(summary)
    assert "| (no group) | TINY-cnn-s1 | \u2014 | \u2014 | \u2014 | 0.9000 |" in table
    assert "| TINY | TINY-mlp-s1 | mlp | flux_only | \u2014 | \u2014 |" in table
    assert "| TINY | **TINY-mlp-s0** | mlp | flux_only | \u2014 | **0.4000** |" in table

    warnings = [record.getMessage() for record in caplog.records if record.name == "specstream.report.table"]
    assert len(warnings) == 1
    assert "not a finite number in 2 row(s)" in warnings[0]
    assert "TINY-mlp-s1 ('oops')" in warnings[0]
    assert "TINY-cnn-s0 (inf)" in warnings[0]
    assert "TINY-mlp-s0" not in warnings[0]


def test_summary_valid_r2_logs_no_warning(caplog):
    caplog.set_level(logging.WARNING, logger="specstream.report.table")
    build_summary(pd.DataFrame(reference_rows() + [{"experiment_id": "pending", "test_r2": np.nan}]))
    assert caplog.records == []


def test_legend_labels_unique_only_when_needed():
    def run(experiment_id, label, group=None, seed=None):
        return RunFiles(experiment_id, label, "log_g", None, group=group, seed=seed)

    runs = [run("TINY-mlp-s0", "mlp (flux_only)", "TINY", "seed 0"),
            run("TINY-mlp-s1", "mlp (flux_only)", "TINY", "seed 1"),
            run("SMALL-mlp-s0", "mlp (flux_only)", "SMALL", "seed 0"),
            run("ridge", "ridge (flux_only)", "TINY", "seed 0"),
            run("a", "cnn (whitening)"),
            run("b", "cnn (whitening)")]
    assert legend_labels(runs) == ["mlp (flux_only, TINY, seed 0)", "mlp (flux_only, TINY, seed 1)",
                                   "mlp (flux_only, SMALL)", "ridge (flux_only)", "cnn (whitening, a)",
                                   "cnn (whitening, b)"]
    assert legend_labels(runs[:1] + runs[3:4]) == ["mlp (flux_only)", "ridge (flux_only)"]


def test_formatting_of_times_and_counts():
    assert format_seconds(45.2) == "45 s"
    assert format_seconds(3.25) == "3.2 s"
    assert format_seconds(204.0) == "3.4 min"
    assert format_seconds(13320.0) == "3.7 h"
    assert format_seconds(float("nan")) == "\u2014"
    assert format_count(100_000) == "100k"
    assert format_count(1_000_000) == "1M"
    assert format_count(1234) == "1234"
    assert format_count(float("nan")) == "\u2014"


def test_report_from_minimal_csv(tmp_path):
    csv = write_csv(tmp_path / "results.csv", [{"experiment_id": "a", "test_r2": 0.3},
                                               {"experiment_id": "b", "test_r2": np.nan}])
    report = build_report(csv, tmp_path / "report")
    text = report.markdown.read_text()
    assert "| (no group) | a | \u2014 | \u2014 | \u2014 | 0.3000 |" in text  # no group, so not ranked
    assert "| (no group) | b |" in text
    assert report.figures == {}
    assert "pred_vs_true" in report.skipped
    assert "learning_curves" in report.skipped
    assert "no run directory" in text


def test_report_rejects_csv_without_r2(tmp_path):
    csv = write_csv(tmp_path / "results.csv", [{"experiment_id": "a", "model": "ridge"}])
    with pytest.raises(ValueError, match="no test_r2 column"):
        build_report(csv, tmp_path / "report")
    (tmp_path / "empty.csv").write_text("experiment_id,test_r2\n")
    with pytest.raises(ValueError, match="has no result rows"):
        build_report(tmp_path / "empty.csv", tmp_path / "report")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_report(tmp_path / "missing.csv", tmp_path / "report")
    with pytest.raises(ValueError, match="max_runs must be >= 1"):
        build_report(csv, tmp_path / "report", max_runs=0)


def test_report_with_runs_draws_every_figure(tmp_path):
    rows = reference_rows()[:4]
    for i, row in enumerate(rows):
        run_dir = tmp_path / "runs" / row["experiment_id"]
        run_dir.mkdir(parents=True)
        write_run(run_dir, seed=i, noise=0.3 + 0.1 * i, epochs=5 if row["model"].startswith("mlp") else None)
        row["run_dir"] = f"runs/{row['experiment_id']}"  # relative to the CSV's directory
    csv = write_csv(tmp_path / "results.csv", rows)
    report = build_report(csv, tmp_path / "report")
    assert set(report.figures) == {"pred_vs_true", "residuals", "r2_per_bin", "learning_curves"}
    text = report.markdown.read_text()
    for name, path in report.figures.items():
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        assert f"]({path.name})" in text
    assert report.skipped == {}
    assert "Run files not used" not in text


def test_report_figures_tell_seeds_apart(tmp_path, monkeypatch):
    figures = {}
    save_figure = plots.save_figure

    def capture(figure, path):
        figures[path.stem] = figure
        return save_figure(figure, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    rows = []
    for seed in (0, 1):
        experiment_id = f"TINY-mlp_2L_256-flux_only-s{seed}"
        run_dir = tmp_path / experiment_id
        run_dir.mkdir()
        write_run(run_dir, seed=seed, noise=0.3, epochs=5)
        rows.append({"experiment_id": experiment_id, "group": "TINY", "model": "mlp_2L_256", "input": "flux_only",
                     "target": "log_g", "test_r2": 0.5 - 0.1 * seed, "seed": seed, "run_dir": str(run_dir)})
    build_report(write_csv(tmp_path / "results.csv", rows), tmp_path / "report")

    expected = {"mlp_2L_256 (flux_only, seed 0)", "mlp_2L_256 (flux_only, seed 1)"}
    for name in ("residuals", "r2_per_bin"):
        legend = figures[name].axes[0].get_legend()
        assert {text.get_text() for text in legend.get_texts()} == expected, name
    loss_axis, r2_axis = figures["learning_curves"].axes[:2]
    assert {text.get_text() for text in loss_axis.get_legend().get_texts()} == {
        f"{label} {curve}" for label in expected for curve in ("train", "val")}
    for axis in (loss_axis, r2_axis):
        low, high = axis.get_xlim()
        ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert len(ticks) >= 2
        assert all(float(tick).is_integer() for tick in ticks), ticks


def test_report_skips_bad_prediction_files(tmp_path):
    rows = reference_rows()[:3]
    for i, row in enumerate(rows):
        run_dir = tmp_path / row["experiment_id"]
        run_dir.mkdir()
        row["run_dir"] = str(run_dir)
    write_run(tmp_path / "ridge-100k", seed=0, noise=0.5)
    (tmp_path / "ridge-1M" / "test_predictions.npz").write_text("not an archive")
    csv = write_csv(tmp_path / "results.csv", rows)
    report = build_report(csv, tmp_path / "report", max_runs=2)
    text = report.markdown.read_text()
    assert "pred_vs_true" in report.figures
    assert "is not an .npz archive" in text
    assert "no test_predictions.npz" in text  # the oracle run directory is empty


def test_report_without_mag_and_snr(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_predictions(run_dir / "test_predictions.npz", np.arange(50), np.linspace(1, 5, 50), np.linspace(1, 5, 50))
    csv = write_csv(tmp_path / "results.csv", [{"experiment_id": "a", "model": "ridge", "test_r2": 1.0,
                                                "run_dir": str(run_dir)}])
    report = build_report(csv, tmp_path / "report")
    assert "pred_vs_true" in report.figures
    assert report.skipped["residuals"] == "the predictions files have no mag or snr column"


def test_cli_report(tmp_path):
    csv = write_csv(tmp_path / "results.csv", reference_rows())
    result = CliRunner().invoke(app, ["report", str(csv), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.md").exists()
    assert "left out pred_vs_true" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "not found" in result.output


def test_predictions_round_trip(tmp_path):
    path = save_predictions(tmp_path / "p.npz", [3, 1], [2.0, 4.0], [2.5, 3.5], {"mag": [21.0, 22.0]})
    frame = load_predictions(path)
    assert list(frame.columns) == ["sample_id", "y_true", "y_pred", "mag"]
    assert frame["sample_id"].dtype == np.int64
    assert frame["y_pred"].tolist() == [2.5, 3.5]


def test_predictions_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="prediction column 'y_pred' has shape \\(3,\\); expected \\(2,\\)"):
        save_predictions(tmp_path / "p.npz", [1, 2], [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="invalid extra prediction column 'y_true'"):
        save_predictions(tmp_path / "p.npz", [1], [1.0], [1.0], {"y_true": [1.0]})
    with pytest.raises(FileNotFoundError, match="predictions file .* not found"):
        load_predictions(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", values=np.zeros(3))
    with pytest.raises(ValueError, match="has no sample_id, y_true, y_pred array"):
        load_predictions(tmp_path / "other.npz")
    assert not list(tmp_path.glob(".p.npz.*"))  # no temporary file left behind
