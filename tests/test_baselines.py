"""Classic baselines: streaming ridge against scikit-learn, the oracle gate, LightGBM, resume and the CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from specstream.baselines import (
    ArraySplits,
    BaselineConfig,
    BoostingSettings,
    Gate,
    GramAccumulator,
    RidgePath,
    accumulate,
    collect_subsample,
    fit_lightgbm,
    parse_gate_labels,
    random_splits,
    rebin_pixels,
    run_baseline,
)
from specstream.baselines.data import hash_uniform
from specstream.baselines.linear import PassCheckpoint
from specstream.baselines.run import parse_number_list
from specstream.cli import app
from specstream.results import load_predictions, read_results

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def toy_labels(n: int, rng) -> dict[str, np.ndarray]:
    return {"log_g": rng.uniform(1, 5, n), "T_eff": rng.uniform(3750, 6000, n), "M_H": rng.uniform(-2.5, 0.5, n),
            "mag": rng.uniform(20.5, 22.5, n), "snr": rng.uniform(2, 20, n)}


def toy_data(n: int = 1500, n_pixels: int = 12, seed: int = 0, gated: bool = False, **kwargs) -> ArraySplits:
    """Spectra linear in log_g; with `gated`, the sign of the log_g signal flips at T_eff = 4875 K.

    A single linear model cannot fit the gated case, while one expert per T_eff bin can.
    """
    rng = np.random.default_rng(seed)
    labels = toy_labels(n, rng)
    basis = rng.normal(size=n_pixels)
    signal = labels["log_g"] - 3.0
    if gated:
        signal = np.where(labels["T_eff"] < 4875, signal, -signal)
    flux = (1.0 + 0.1 * np.outer(signal, basis) + 0.02 * rng.normal(size=(n, n_pixels))).astype(np.float32)
    error = np.full_like(flux, 0.05)
    n_held_out = min(300, n // 5)
    splits = random_splits(n, n_val=n_held_out, n_test=n_held_out, seed=seed)
    kwargs.setdefault("batch_size", 128)
    return ArraySplits(flux, error, labels, splits, seed=7, **kwargs)


def stacked(data, split: str, realisation: int = 0):
    batches = list(data.batches(split, labels=("log_g",), realisation=realisation))
    return (np.concatenate([batch.inputs for batch in batches]).astype(np.float64),
            np.concatenate([batch.labels["log_g"] for batch in batches]))


# Streaming ridge numerics


def test_gram_accumulator_matches_direct_products():
    rng = np.random.default_rng(1)
    inputs = (rng.normal(size=(500, 9)) * 3 + 100).astype(np.float32)
    targets = rng.normal(size=500)
    accumulator = GramAccumulator(9)
    for start in range(0, 500, 64):
        accumulator.update(inputs[start:start + 64], targets[start:start + 64])
    path = RidgePath.from_accumulator(accumulator)
    x = inputs.astype(np.float64)
    assert accumulator.n_rows == 500
    np.testing.assert_allclose(path.mean_x, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(path.scale_x, x.std(axis=0), rtol=1e-10)
    assert path.mean_y == pytest.approx(targets.mean(), rel=1e-12)


def test_ridge_path_matches_sklearn_closed_form():
    rng = np.random.default_rng(2)
    inputs = (rng.normal(size=(400, 20)) * rng.uniform(0.1, 10, 20) + rng.uniform(-50, 50, 20)).astype(np.float32)
    targets = inputs[:, :4].astype(np.float64) @ rng.normal(size=4) + rng.normal(size=400)
    accumulator = GramAccumulator(20)
    for start in range(0, 400, 50):
        accumulator.update(inputs[start:start + 50], targets[start:start + 50])
    alphas = [1e-3, 0.5, 20.0, 1e4]
    coefficients, intercepts = RidgePath.from_accumulator(accumulator).coefficients(alphas)

    x = inputs.astype(np.float64)
    for column, alpha in enumerate(alphas):
        reference = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, targets)
        np.testing.assert_allclose(x @ coefficients[:, column] + intercepts[column], reference.predict(x),
                                   rtol=1e-9, atol=1e-9)
        # The textbook closed form on standardised, centred inputs.
        z = (x - x.mean(axis=0)) / x.std(axis=0)
        weights = np.linalg.solve(z.T @ z + alpha * np.eye(20), z.T @ (targets - targets.mean()))
        np.testing.assert_allclose(coefficients[:, column] * x.std(axis=0), weights, rtol=1e-8, atol=1e-10)


def test_ridge_alpha_zero_least_squares():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(300, 8)).astype(np.float32)
    inputs[:, 5] = 2.5  # a constant pixel, e.g. masked everywhere
    targets = inputs[:, 0].astype(np.float64) * 2 + rng.normal(size=300) * 0.1
    accumulator = GramAccumulator(8)
    accumulator.update(inputs, targets)
    coefficients, intercepts = RidgePath.from_accumulator(accumulator).coefficients([0.0])
    x = np.column_stack([inputs.astype(np.float64), np.ones(300)])
    solution = np.linalg.lstsq(x, targets, rcond=None)[0]
    np.testing.assert_allclose(x[:, :8] @ coefficients[:, 0] + intercepts[0], x @ solution, atol=1e-9)
    assert np.isfinite(coefficients).all()
    assert abs(coefficients[5, 0]) < 1e-12


def test_accumulator_merge_and_state_round_trip():
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=(200, 6)).astype(np.float32)
    targets = rng.normal(size=200)
    shift = inputs[:50].mean(axis=0, dtype=np.float64)
    whole = GramAccumulator(6, shift, 0.0)
    whole.update(inputs, targets)
    first, second = GramAccumulator(6, shift, 0.0), GramAccumulator(6, shift, 0.0)
    first.update(inputs[:120], targets[:120])
    second.update(inputs[120:], targets[120:])
    first.merge(second)
    np.testing.assert_allclose(first.gram, whole.gram, rtol=1e-12)
    np.testing.assert_allclose(first.xty, whole.xty, rtol=1e-12)
    assert first.n_rows == whole.n_rows

    restored = GramAccumulator.from_state(first.state("a_"), "a_")
    np.testing.assert_array_equal(restored.gram, first.gram)
    assert restored.n_rows == first.n_rows
    assert restored.target_shift == first.target_shift

    other = GramAccumulator(6, shift + 1.0, 0.0)
    other.update(inputs[:10], targets[:10])
    with pytest.raises(ValueError, match="different shifts"):
        first.merge(other)


def test_ridge_path_rejects_bad_alphas_and_tiny_data():
    accumulator = GramAccumulator(3)
    accumulator.update(np.ones((1, 3), np.float32), np.ones(1))
    with pytest.raises(ValueError, match="at least 2 training rows"):
        RidgePath.from_accumulator(accumulator)
    accumulator.update(np.zeros((3, 3), np.float32), np.zeros(3))
    path = RidgePath.from_accumulator(accumulator)
    with pytest.raises(ValueError, match="alphas must be"):
        path.coefficients([-1.0])
    with pytest.raises(ValueError, match="expected \\(batch, 3\\)"):
        accumulator.update(np.ones((2, 4), np.float32), np.ones(2))


# Ridge end to end: same inputs as the NN runs, alpha chosen on validation


def test_ridge_run_matches_sklearn_on_same_inputs(tmp_path):
    data = toy_data()
    config = BaselineConfig(model="ridge", alpha_grid=ALPHAS, experiment_id="ridge")
    row = run_baseline(data, config, out_dir=tmp_path)

    train_x, train_y = stacked(data, "train", realisation=0)
    val_x, val_y = stacked(data, "val")
    test_x, test_y = stacked(data, "test")
    n_train = len(train_y)
    val_errors = []
    for relative in ALPHAS:
        model = make_pipeline(StandardScaler(), Ridge(alpha=relative * n_train)).fit(train_x, train_y)
        val_errors.append(np.mean((model.predict(val_x) - val_y) ** 2))
    chosen = ALPHAS[int(np.argmin(val_errors))]
    assert row["alpha_relative"] == chosen

    reference = make_pipeline(StandardScaler(), Ridge(alpha=chosen * n_train)).fit(train_x, train_y)
    predictions = load_predictions(tmp_path / "ridge" / "test_predictions.npz")
    np.testing.assert_allclose(predictions["y_pred"], reference.predict(test_x), rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(predictions["y_true"], test_y)
    assert row["test_r2"] > 0.9


def test_ridge_run_writes_row_and_files(tmp_path):
    data = toy_data()
    row = run_baseline(data, BaselineConfig(model="ridge", alpha_grid=ALPHAS), out_dir=tmp_path)
    run_dir = tmp_path / "baselines-ridge-flux_only-s0"
    frame = read_results(tmp_path / "results.csv")
    assert list(frame["experiment_id"]) == ["baselines-ridge-flux_only-s0"]
    stored = frame.iloc[0]
    for column in ("group", "model", "input", "target", "test_r2", "test_mae", "test_rmse", "test_bias",
                   "train_size", "train_time", "seed", "code_revision", "run_dir", "noise_passes"):
        assert column in frame.columns, column
    assert stored["group"] == "baselines"
    assert stored["model"] == "ridge"
    assert stored["train_size"] == data.n_samples("train")
    assert stored["test_r2"] == pytest.approx(row["test_r2"])
    predictions = load_predictions(run_dir / "test_predictions.npz")
    assert list(predictions.columns) == ["sample_id", "y_true", "y_pred", "mag", "snr"]
    assert len(predictions) == 300
    summary = json.loads((run_dir / "baseline.json").read_text())["summary"]
    assert summary["train_rows"] == data.n_samples("train")
    assert (run_dir / "linear_model.npz").exists()
    assert not (run_dir / "training_pass_state.npz").exists()


def test_finished_run_is_not_refitted(tmp_path):
    data = toy_data(n=800)
    config = BaselineConfig(model="ridge", alpha_grid=ALPHAS)
    row = run_baseline(data, config, out_dir=tmp_path)
    with pytest.raises(ValueError, match="already contains a finished baseline"):
        run_baseline(data, config, out_dir=tmp_path)

    # A run killed after its summary but before its results row: the rerun appends the stored row.
    (tmp_path / "results.csv").unlink()
    again = run_baseline(data, config, out_dir=tmp_path, results_csv=tmp_path / "results.csv")
    assert again["test_r2"] == pytest.approx(row["test_r2"])
    assert list(read_results(tmp_path / "results.csv")["experiment_id"]) == [row["experiment_id"]]


def test_noise_passes_draw_fresh_realisations(tmp_path):
    data = toy_data(n=800)
    first, _ = stacked(data, "train", realisation=0)
    second, _ = stacked(data, "train", realisation=1)
    assert not np.array_equal(first, second)
    val_first, _ = stacked(data, "val", realisation=0)
    val_second, _ = stacked(data, "val", realisation=1)
    np.testing.assert_array_equal(val_first, val_second)  # validation noise is fixed

    run_baseline(data, BaselineConfig(model="ridge", noise_passes=2, alpha_grid=ALPHAS), out_dir=tmp_path)
    summary = json.loads((tmp_path / "baselines-ridge-flux_only-s0" / "baseline.json").read_text())["summary"]
    assert summary["train_rows"] == 2 * data.n_samples("train")


def test_target_nan_rows_are_left_out(tmp_path):
    data = toy_data(n=800)
    train_rows = data.splits["train"]
    data.labels["log_g"][train_rows[:25]] = np.nan
    training = accumulate(data, target="log_g", gate=Gate.single(), noise_passes=1)
    assert training.n_dropped == 25
    assert training.n_rows == len(train_rows) - 25


# Resume of the training pass


class Interrupted(RuntimeError):
    pass


class FailingSplits:
    """Wraps a data source and raises after `fail_after` training batches, like a killed job."""

    def __init__(self, data, fail_after: int):
        self.data, self.fail_after = data, fail_after

    def __getattr__(self, name):
        return getattr(self.data, name)

    def batches(self, split, **kwargs):
        for count, batch in enumerate(self.data.batches(split, **kwargs)):
            if split == "train" and count == self.fail_after:
                raise Interrupted("simulated interruption")
            yield batch


def test_training_pass_resumes_exactly(tmp_path):
    data = toy_data(n=1200)
    gate = Gate.uniform({"T_eff": (3750.0, 6000.0)}, 2)
    fingerprint = {"case": "resume"}
    checkpoint = PassCheckpoint(tmp_path / "state.npz", fingerprint, interval_s=0.0)
    with pytest.raises(Interrupted):
        accumulate(FailingSplits(data, fail_after=3), target="log_g", gate=gate, noise_passes=2,
                   checkpoint=checkpoint)
    assert checkpoint.path.exists()
    resumed = accumulate(data, target="log_g", gate=gate, noise_passes=2, checkpoint=checkpoint)
    uninterrupted = accumulate(data, target="log_g", gate=gate, noise_passes=2)
    assert resumed.n_rows == uninterrupted.n_rows
    for got, expected in zip(resumed.accumulators, uninterrupted.accumulators):
        assert got.n_rows == expected.n_rows
        if expected.gram is None:  # the accumulator of rows with a NaN gating label stays empty
            assert got.gram is None
            continue
        np.testing.assert_allclose(got.gram, expected.gram, rtol=1e-12)
        np.testing.assert_allclose(got.xty, expected.xty, rtol=1e-12)

    other = PassCheckpoint(tmp_path / "state.npz", {"case": "other"}, interval_s=0.0)
    with pytest.raises(ValueError, match="written by a run with other settings"):
        accumulate(data, target="log_g", gate=gate, noise_passes=2, checkpoint=other)


# Oracle mixture of experts


def test_gate_assigns_bins_and_nan():
    gate = Gate.uniform({"T_eff": (4000.0, 6000.0), "M_H": (-2.0, 0.0)}, 2)
    assert gate.n_experts == 4
    labels = {"T_eff": np.array([4100.0, 5900.0, 3000.0, 7000.0, np.nan]),
              "M_H": np.array([-1.5, -0.5, -1.0, 0.5, -1.0])}
    assert gate.assign(labels).tolist() == [0, 3, 1, 3, -1]
    assert gate.describe(3) == "T_eff [5000, 6000) M_H [-1, 0)"
    assert Gate.single().n_experts == 1
    assert Gate.single().assign({"log_g": np.zeros(3)}).tolist() == [0, 0, 0]


def test_gate_rejects_bad_settings():
    with pytest.raises(ValueError, match="finite range with max > min"):
        Gate.uniform({"T_eff": (5000.0, 5000.0)}, 2)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        Gate.uniform({"T_eff": (1.0, 2.0)}, 0)
    with pytest.raises(ValueError, match="invalid gate labels"):
        parse_gate_labels("T_eff,,M_H")
    with pytest.raises(ValueError, match="invalid gate labels"):
        parse_gate_labels("T_eff,T_eff")
    assert parse_gate_labels(" T_eff , M_H ") == ("T_eff", "M_H")


@pytest.mark.parametrize("gated", [True, False])
def test_oracle_at_least_single_expert(tmp_path, gated):
    data = toy_data(n=2400, gated=gated)
    ridge = run_baseline(data, BaselineConfig(model="ridge", alpha_grid=ALPHAS), out_dir=tmp_path)
    oracle = run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("T_eff",), n_bins=2,
                                               alpha_grid=ALPHAS), out_dir=tmp_path)
    summary = json.loads((tmp_path / oracle["experiment_id"] / "baseline.json").read_text())["summary"]
    # On validation the pooled ridge is a candidate for every expert, so the mixture cannot be worse.
    assert summary["val_r2"] >= summary["val_r2_pooled"] - 1e-12
    assert summary["val_r2_pooled"] == pytest.approx(ridge["val_r2"], rel=1e-9)
    assert oracle["test_r2"] >= ridge["test_r2"] - 0.01
    if gated:
        assert ridge["test_r2"] < 0.5
        assert oracle["test_r2"] > ridge["test_r2"] + 0.3
        assert [expert["source"] for expert in summary["experts"]] == ["expert", "expert"]
        assert oracle["pooled_experts"] == 0
        assert summary["pooled_fallback"] is None
        assert "fell back" not in oracle["notes"]
    assert "upper bound" in oracle["notes"]


def test_oracle_single_bin_equals_ridge(tmp_path):
    data = toy_data(n=900)
    ridge = run_baseline(data, BaselineConfig(model="ridge", alpha_grid=ALPHAS), out_dir=tmp_path)
    oracle = run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("T_eff",), n_bins=1,
                                               alpha_grid=ALPHAS), out_dir=tmp_path)
    assert oracle["test_r2"] == pytest.approx(ridge["test_r2"], abs=1e-9)


def test_oracle_nan_gate_label_uses_pooled_ridge(tmp_path):
    data = toy_data(n=900)
    data.labels["T_eff"][::7] = np.nan
    row = run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("T_eff",), n_bins=2,
                                            alpha_grid=ALPHAS), out_dir=tmp_path)
    predictions = load_predictions(tmp_path / row["experiment_id"] / "test_predictions.npz")
    assert np.isfinite(predictions["y_pred"]).all()


def test_oracle_small_expert_falls_back(tmp_path, caplog):
    data = toy_data(n=900)
    caplog.set_level(logging.WARNING, logger="specstream.baselines.run")
    row = run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("T_eff",), n_bins=2,
                                            min_expert_rows=10**6, alpha_grid=ALPHAS), out_dir=tmp_path)
    summary = json.loads((tmp_path / row["experiment_id"] / "baseline.json").read_text())["summary"]
    assert [expert["source"] for expert in summary["experts"]] == ["pooled", "pooled"]
    assert [expert["fallback"] for expert in summary["experts"]] == ["too_few_train_rows"] * 2
    assert row["pooled_experts"] == 2
    assert "2 of 2 experts fell back to the pooled ridge" in row["notes"]

    warnings = [record.getMessage() for record in caplog.records
                if record.name == "specstream.baselines.run" and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0]
    assert message == summary["pooled_fallback"]
    assert "2 of 2 experts fell back to the pooled ridge" in message
    assert "test R^2 equals that of the ridge baseline" in message
    assert "2 had fewer than min_expert_rows = 1000000 training rows" in message
    assert "use fewer --n-bins (now 2 per label of T_eff, so 2 experts)" in message


def test_oracle_fallback_reasons_from_validation(tmp_path, caplog):
    # Every validation spectrum gets a T_eff of the low bin, so the high-T_eff expert has no validation
    # spectra. The low-T_eff expert is scored on spectra whose log_g signal has the other sign, so the
    # pooled ridge has the smaller validation error there.
    data = toy_data(n=900, gated=True)
    data.labels["T_eff"][data.splits["val"]] = 3800.0
    caplog.set_level(logging.WARNING, logger="specstream.baselines.run")
    row = run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("T_eff",), n_bins=2,
                                            alpha_grid=ALPHAS), out_dir=tmp_path)
    summary = json.loads((tmp_path / row["experiment_id"] / "baseline.json").read_text())["summary"]
    assert [expert["fallback"] for expert in summary["experts"]] == ["pooled_lower_val_error", "no_val_samples"]
    assert summary["experts"][1]["val_n"] == 0
    message = summary["pooled_fallback"]
    assert "2 of 2 experts fell back" in message
    assert "1 had no validation spectra in their bin" in message
    assert "1 had a larger validation error than the pooled ridge" in message
    assert "min_expert_rows" not in message
    assert message in [record.getMessage() for record in caplog.records]


def test_ridge_has_no_fallback_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="specstream.baselines.run")
    row = run_baseline(toy_data(n=600), BaselineConfig(model="ridge", alpha_grid=ALPHAS), out_dir=tmp_path)
    summary = json.loads((tmp_path / row["experiment_id"] / "baseline.json").read_text())["summary"]
    assert "pooled_fallback" not in summary
    assert row["pooled_experts"] is None
    assert "fell back" not in caplog.text


def test_oracle_rejects_missing_gate_label(tmp_path):
    data = toy_data(n=600)
    with pytest.raises(ValueError, match="gate labels \\['a_M'\\] are missing"):
        run_baseline(data, BaselineConfig(model="oracle_moe", gate_labels=("a_M",)), out_dir=tmp_path)


# LightGBM


def test_rebin_pixels_averages_groups():
    inputs = np.arange(20, dtype=np.float32).reshape(2, 10)
    rebinned = rebin_pixels(inputs, 4)
    np.testing.assert_allclose(rebinned, [[1.5, 5.5, 8.5], [11.5, 15.5, 18.5]])
    assert rebinned.dtype == np.float32
    assert rebin_pixels(inputs, 1) is inputs


def test_collect_subsample_independent_of_batching():
    small = toy_data(n=1500, batch_size=64)
    large = toy_data(n=1500, batch_size=500)
    inputs_a, labels_a, ids_a = collect_subsample(small, "train", labels=("log_g",), max_samples=300, seed=1)
    inputs_b, labels_b, ids_b = collect_subsample(large, "train", labels=("log_g",), max_samples=300, seed=1)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(inputs_a, inputs_b)
    assert 200 < len(ids_a) < 400
    assert inputs_a.dtype == np.float32
    _, _, everything = collect_subsample(small, "train", labels=("log_g",), max_samples=None, seed=1)
    assert len(everything) == small.n_samples("train")
    uniform = hash_uniform(np.arange(100_000), seed=3)
    assert 0.49 < uniform.mean() < 0.51
    assert uniform.min() >= 0
    assert uniform.max() < 1


def test_lightgbm_run_learns_and_saves(tmp_path):
    data = toy_data(n=2000, n_pixels=16)
    settings = BoostingSettings(max_train=1000, rebin=2, num_leaves=(7, 15), max_rounds=300,
                                early_stopping_rounds=20, num_threads=1)
    row = run_baseline(data, BaselineConfig(model="lightgbm", boosting=settings), out_dir=tmp_path)
    run_dir = tmp_path / row["experiment_id"]
    summary = json.loads((run_dir / "baseline.json").read_text())["summary"]
    assert row["test_r2"] > 0.7
    assert summary["n_features"] == 8
    assert summary["num_leaves"] in (7, 15)
    assert 800 < row["train_size"] < 1200
    assert (run_dir / "lightgbm_model.txt").exists()
    assert len(load_predictions(run_dir / "test_predictions.npz")) == 300


def test_round_limit_warning_names_options(caplog):
    import re

    import typer

    data = toy_data(n=600, n_pixels=8)
    settings = BoostingSettings(max_train=300, num_leaves=(7,), max_rounds=3, early_stopping_rounds=50,
                                num_threads=1)
    with caplog.at_level("WARNING", logger="specstream.baselines.boosting"):
        fit_lightgbm(data, target="log_g", settings=settings)
    warnings = [record.getMessage() for record in caplog.records if "used all 3 rounds" in record.getMessage()]
    assert len(warnings) == 1
    named = set(re.findall(r"--[a-z][a-z-]*", warnings[0]))
    assert named
    baseline_command = typer.main.get_command(app).commands["baseline"]
    existing = {option for parameter in baseline_command.params for option in parameter.opts}
    assert named <= existing, named - existing


def test_boosting_settings_reject_bad_values():
    with pytest.raises(ValueError, match="max_train must be >= 2"):
        BoostingSettings(max_train=1)
    with pytest.raises(ValueError, match="rebin must be >= 1"):
        BoostingSettings(rebin=0)
    with pytest.raises(ValueError, match="num_leaves must be"):
        BoostingSettings(num_leaves=())
    with pytest.raises(ValueError, match="learning_rate must be"):
        BoostingSettings(learning_rate=0.0)
    with pytest.raises(ValueError, match="feature_fraction must be"):
        BoostingSettings(feature_fraction=1.5)


# Configuration and data errors


def test_baseline_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model must be one of"):
        BaselineConfig(model="svm")
    with pytest.raises(ValueError, match="noise_passes must be >= 1"):
        BaselineConfig(model="ridge", noise_passes=0)
    with pytest.raises(ValueError, match="alpha_grid must be"):
        BaselineConfig(model="ridge", alpha_grid=(-1.0,))
    with pytest.raises(ValueError, match="gate_labels must name"):
        BaselineConfig(model="oracle_moe", gate_labels=())
    with pytest.raises(ValueError, match="plain directory name"):
        BaselineConfig(model="ridge", experiment_id="a/b")
    with pytest.raises(ValueError, match="--alpha-grid must be a comma-separated list"):
        parse_number_list("1e-3,abc", "--alpha-grid")
    assert parse_number_list("31, 127", "--num-leaves", int) == (31, 127)


def test_array_splits_reject_bad_input():
    flux = np.ones((10, 4), np.float32)
    labels = {"log_g": np.ones(10)}
    with pytest.raises(ValueError, match="flux and error must both be"):
        ArraySplits(flux, np.ones((10, 5), np.float32), labels, {"train": np.arange(10)})
    with pytest.raises(ValueError, match="label 'log_g' has shape \\(9,\\)"):
        ArraySplits(flux, flux, {"log_g": np.ones(9)}, {"train": np.arange(10)})
    with pytest.raises(ValueError, match="rows of split 'train' must lie in"):
        ArraySplits(flux, flux, labels, {"train": np.arange(11)})
    data = ArraySplits(flux, flux, labels, {"train": np.arange(10)})
    with pytest.raises(ValueError, match="split 'val' is missing"):
        list(data.batches("val", labels=("log_g",)))
    with pytest.raises(ValueError, match="label 'T_eff' is missing"):
        list(data.batches("train", labels=("T_eff",)))
    with pytest.raises(ValueError, match="invalid split 'dev'"):
        data.n_samples("dev")


def test_train_size_keeps_first_ids():
    data = toy_data(n=1000, train_size=100)
    assert data.n_samples("train") == 100
    full = toy_data(n=1000)
    expected = np.sort(full.sample_ids[full.splits["train"]])[:100]
    np.testing.assert_array_equal(np.sort(data.sample_ids[data.splits["train"]]), expected)


def test_validation_split_too_small(tmp_path):
    data = toy_data(n=600)
    data.splits["val"] = data.splits["val"][:1]
    with pytest.raises(ValueError, match="validation split has 1 samples"):
        run_baseline(data, BaselineConfig(model="ridge", alpha_grid=ALPHAS), out_dir=tmp_path)


# Shards and the command line


@pytest.fixture
def shard_dir(tmp_path, survey_file):
    from specstream.shards import ShardOptions, write_shards

    path = survey_file(n=400, n_pixels=32)
    out = tmp_path / "shards"
    write_shards([path], out, ShardOptions(test_size=80, val_size=80, block_size=64, fsync=False))
    return out


def test_shard_splits_match_array_splits(shard_dir):
    from specstream.baselines.shard_data import ShardSplits
    from specstream.data import load_split_arrays

    shards = ShardSplits(shard_dir, mode="flux_only", seed=4, batch_size=50)
    assert shards.n_pixels == 32
    assert shards.n_samples("train") == 240
    for split, realisation in (("train", 1), ("test", 0)):
        arrays = load_split_arrays(shard_dir, split)
        frame = pd.DataFrame(arrays.labels)
        in_memory = ArraySplits(arrays.flux, arrays.error, frame, {split: np.arange(len(arrays.ids))}, seed=4,
                                sample_ids=arrays.ids)
        expected = {int(i): row for batch in in_memory.batches(split, labels=("log_g",), realisation=realisation)
                    for i, row in zip(batch.sample_ids, batch.inputs)}
        got = {int(i): row for batch in shards.batches(split, labels=("log_g", "mag"), realisation=realisation)
               for i, row in zip(batch.sample_ids, batch.inputs)}
        assert set(got) == set(expected)
        for sample_id, row in got.items():
            np.testing.assert_array_equal(row, expected[sample_id])
    assert ShardSplits(shard_dir, train_size=100).n_samples("train") == 100
    with pytest.raises(ValueError, match="labels \\['nope'\\] are missing"):
        next(shards.batches("train", labels=("nope",)))


def test_shard_subsample_keeps_max_samples(shard_dir):
    # The shard split and the subsample both default to seed 0, and the split puts the 160 of 400 ids with the
    # smallest (seed, id) keys into test and val. A subsample hash equal to that key would find no training id
    # below 50 / 240.
    from specstream.baselines.shard_data import ShardSplits

    shards = ShardSplits(shard_dir, batch_size=50)
    for max_samples in (50, 120, 200):
        inputs, labels, ids = collect_subsample(shards, "train", labels=("log_g",), max_samples=max_samples, seed=0)
        assert len(ids) == max_samples
        assert len(np.unique(ids)) == max_samples
        assert inputs.shape == (max_samples, 32)
        assert labels["log_g"].shape == (max_samples,)
    everything = {int(i): row for batch in shards.batches("train", labels=("log_g",)) for i, row in
                  zip(batch.sample_ids, batch.inputs)}
    for sample_id, row in zip(ids, inputs):
        np.testing.assert_array_equal(row, everything[int(sample_id)])


def test_hash_uniform_on_train_split():
    from specstream.shards.split import SplitRule

    ids = np.arange(20_000)
    codes = SplitRule.build(0, len(ids), 4_000, 4_000).assign(ids)
    train_ids = ids[codes == 0]
    uniform = hash_uniform(train_ids, seed=0)
    assert 0.49 < uniform.mean() < 0.51
    assert 0.19 < np.mean(uniform < 0.2) < 0.21


def test_cli_baseline_ridge_and_oracle(shard_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    result = runner.invoke(app, ["baseline", "ridge", "--data", str(shard_dir), "--out", str(out),
                                 "--alpha-grid", "1e-3,1e-1,10"])
    assert result.exit_code == 0, result.output
    assert "test R^2" in result.output
    result = runner.invoke(app, ["baseline", "oracle-moe", "--data", str(shard_dir), "--out", str(out),
                                 "--gate", "log_g", "--n-bins", "2"])
    assert result.exit_code == 0, result.output
    frame = read_results(out / "results.csv")
    assert list(frame["model"]) == ["ridge", "oracle_moe"]
    assert (frame["train_size"] == 240).all()

    result = runner.invoke(app, ["baseline", "oracle-moe", "--data", str(shard_dir), "--out", str(out),
                                 "--gate", "nope", "--experiment-id", "bad"])
    assert result.exit_code == 1
    assert "gate labels ['nope'] are missing" in result.output
    result = runner.invoke(app, ["baseline", "svm", "--data", str(shard_dir), "--out", str(out)])
    assert result.exit_code == 1
    assert "model must be one of" in result.output


def test_cli_baseline_lightgbm(shard_dir, tmp_path):
    result = CliRunner().invoke(app, ["baseline", "lightgbm", "--data", str(shard_dir), "--out",
                                      str(tmp_path / "runs"), "--rebin", "4", "--num-leaves", "7",
                                      "--max-rounds", "50", "--num-threads", "1", "--max-train", "100"])
    assert result.exit_code == 0, result.output
    frame = read_results(tmp_path / "runs" / "results.csv")
    assert frame.iloc[0]["model"] == "lightgbm"
    assert frame.iloc[0]["train_size"] == 100


@pytest.mark.slow
def test_ridge_on_stand_in_spectra(tmp_path):
    """Full 4096-pixel stand-in spectra: the ridge baseline learns log_g from noisy flux."""
    from specstream.synth import generate_arrays

    flux, error, labels = generate_arrays(3000, seed=2)
    data = ArraySplits(flux, error, labels, random_splits(3000, n_val=500, n_test=500, seed=0), seed=0)
    row = run_baseline(data, BaselineConfig(model="ridge"), out_dir=tmp_path)
    assert row["test_r2"] > 0.2
    assert row["train_size"] == 2000
