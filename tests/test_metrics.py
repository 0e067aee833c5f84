import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from specstream.metrics import binned_r2, regression_metrics


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(1.0, 5.0, size=500)
    y_pred = y_true + rng.normal(0.1, 0.5, size=500)
    return y_true, y_pred


def test_metrics_match_sklearn(labels):
    y_true, y_pred = labels
    metrics = regression_metrics(y_true, y_pred)
    assert metrics["r2"] == pytest.approx(r2_score(y_true, y_pred), rel=1e-12)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred), rel=1e-12)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y_true, y_pred)), rel=1e-12)
    assert metrics["bias"] == pytest.approx(np.mean(y_pred - y_true), rel=1e-12)
    assert metrics["n"] == 500


def test_bias_sign_is_pred_minus_true():
    metrics = regression_metrics([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert metrics["bias"] == pytest.approx(0.5)
    assert metrics["mae"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(0.5)


def test_perfect_and_mean_predictions():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    assert regression_metrics(y_true, y_true)["r2"] == 1.0
    assert regression_metrics(y_true, np.full(4, y_true.mean()))["r2"] == pytest.approx(0.0)


def test_accepts_tensors_and_column_vectors(labels):
    y_true, y_pred = labels
    expected = regression_metrics(y_true, y_pred)
    from_tensors = regression_metrics(torch.tensor(y_true[:, None]), torch.tensor(y_pred, requires_grad=True))
    assert from_tensors == pytest.approx(expected)


def test_float32_input_computed_in_float64():
    y_true = np.float32(1e4) + np.arange(1000, dtype=np.float32) * np.float32(1e-3)
    y_pred = y_true + np.float32(1e-3)
    metrics = regression_metrics(y_true, y_pred)
    assert metrics["r2"] == pytest.approx(r2_score(y_true.astype(np.float64), y_pred.astype(np.float64)))


def test_nan_true_label_left_out(labels):
    y_true, y_pred = labels
    with_nan = y_true.copy()
    with_nan[[3, 10, 200]] = np.nan
    has_label = np.isfinite(with_nan)
    metrics = regression_metrics(with_nan, y_pred)
    assert metrics["n"] == 497
    assert metrics["r2"] == pytest.approx(r2_score(y_true[has_label], y_pred[has_label]))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y_true[has_label], y_pred[has_label]))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_prediction_makes_all_nan(labels, bad_value):
    y_true, y_pred = labels
    y_pred = y_pred.copy()
    y_pred[7] = bad_value
    metrics = regression_metrics(y_true, y_pred)
    for key in ("r2", "mae", "rmse", "bias"):
        assert math.isnan(metrics[key]), key
    assert metrics["n"] == 500


def test_nan_prediction_for_unset_label_ignored(labels):
    y_true, y_pred = labels
    y_true = y_true.copy()
    y_pred = y_pred.copy()
    y_true[0] = np.nan
    y_pred[0] = np.nan
    assert math.isfinite(regression_metrics(y_true, y_pred)["r2"])


def test_empty_and_all_nan_give_nan():
    for y_true in (np.array([]), np.array([np.nan, np.nan])):
        metrics = regression_metrics(y_true, np.zeros_like(y_true))
        assert metrics["n"] == 0
        assert math.isnan(metrics["r2"])
        assert math.isnan(metrics["mae"])


def test_r2_undefined_for_constant_or_single_label():
    constant = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(constant["r2"])
    assert constant["mae"] == pytest.approx(2.0 / 3.0)
    single = regression_metrics([2.0], [2.5])
    assert math.isnan(single["r2"])
    assert single["mae"] == pytest.approx(0.5)


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match=r"same length, got 3 and 2"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0])


def test_multi_column_rejected():
    with pytest.raises(ValueError, match=r"y_true must be one-dimensional \(n_samples,\), got shape \(4, 2\)"):
        regression_metrics(np.zeros((4, 2)), np.zeros((4, 2)))


def test_binned_r2_matches_per_bin_metrics(labels):
    y_true, y_pred = labels
    magnitude = np.linspace(20.5, 22.5, y_true.size)
    table = binned_r2(y_true, y_pred, magnitude, bins=[20.5, 21.5, 22.5])
    assert list(table.columns) == ["bin", "lo", "hi", "n", "r2", "mae"]
    assert list(table["bin"]) == ["[20.5, 21.5)", "[21.5, 22.5]"]

    first = magnitude < 21.5
    assert table.loc[0, "n"] == first.sum()
    assert table.loc[1, "n"] == (~first).sum()
    assert table.loc[0, "r2"] == pytest.approx(r2_score(y_true[first], y_pred[first]))
    assert table.loc[1, "r2"] == pytest.approx(r2_score(y_true[~first], y_pred[~first]))
    assert table.loc[1, "mae"] == pytest.approx(mean_absolute_error(y_true[~first], y_pred[~first]))


def test_binned_r2_edges_and_out_of_range():
    y_true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    y_pred = y_true + 0.1
    by = np.array([0.0, 1.0, 1.5, 2.0, 3.0, np.nan, -1.0])
    table = binned_r2(y_true, y_pred, by, bins=[0.0, 1.0, 2.0])
    # [0, 1) gets 0.0; [1, 2] gets 1.0, 1.5 and the upper edge 2.0; 3.0, NaN and -1.0 are left out.
    assert list(table["n"]) == [1, 3]


def test_binned_r2_empty_bin_and_nan_label():
    y_true = np.array([1.0, 2.0, np.nan, 4.0])
    table = binned_r2(y_true, y_true, [0.5, 0.6, 0.7, 0.8], bins=[0.0, 1.0, 2.0])
    assert list(table["n"]) == [3, 0]
    assert table.loc[0, "r2"] == 1.0
    assert math.isnan(table.loc[1, "r2"])
    assert math.isnan(table.loc[1, "mae"])


@pytest.mark.parametrize("bins", [[1.0], [2.0, 1.0], [0.0, 1.0, 1.0], [0.0, np.nan]])
def test_binned_r2_rejects_bad_edges(bins):
    with pytest.raises(ValueError, match=r"bins must be at least two finite, strictly increasing edges"):
        binned_r2([1.0, 2.0], [1.0, 2.0], [0.5, 0.5], bins=bins)


def test_binned_r2_rejects_by_length():
    with pytest.raises(ValueError, match=r"by must have one value per sample \(2\), got 3"):
        binned_r2([1.0, 2.0], [1.0, 2.0], [0.5, 0.5, 0.5], bins=[0.0, 1.0])
