"""make_inputs: agreement with the NumPy reference, each mode's formula, bad pixels and argument errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from specstream import kernels
from specstream.kernels import (FIXED_EPOCH, INPUT_MODES, STANDARDIZED_CLIP, WHITENING_CLIP, WHITENING_ERROR_FLOOR,
                                draw_normals, make_inputs, make_inputs_reference, validate_mode)
from specstream.kernels.reference import _error_floor
from specstream.kernels.threads import THREADS_ENV_VAR, default_num_threads

N_PIXELS = 4096


def _batch(n=24, n_pixels=N_PIXELS, seed=0):
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.05, 1.5, (n, n_pixels)).astype(np.float32)
    error = rng.uniform(0.07, 0.6, (n, n_pixels)).astype(np.float32)
    ids = rng.integers(-(2**62), 2**62, n)
    return flux, error, ids


def _stats(n_pixels=N_PIXELS):
    rng = np.random.default_rng(5)
    return {
        "flux_mean": rng.uniform(0.3, 0.8, n_pixels),
        "flux_std": rng.uniform(0.1, 0.3, n_pixels),
        "error_mean": rng.uniform(0.1, 0.3, n_pixels),
        "error_std": rng.uniform(0.0, 0.1, n_pixels),
    }


def _with_defects(flux, error):
    """Return copies with every kind of bad pixel in rows 0-2 and near-zero errors in row 3."""
    flux, error = flux.copy(), error.copy()
    error[0, :6] = [0.0, -1.0, np.nan, np.inf, -np.inf, 1e-30]
    flux[1, :4] = [np.nan, np.inf, -np.inf, 3e38]
    flux[2, :] = np.nan
    error[3, 100:110] = 1e-7
    return flux, error


def _mask(shape, dtype):
    mask = np.zeros(shape, dtype=dtype)
    mask[4, 50:90] = 1
    mask[5, :] = 1
    return mask


def _same_bits(a, b):
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("mode", INPUT_MODES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mask_dtype", [None, np.bool_, np.int8, np.int32])
def test_make_inputs_matches_reference_bitwise(mode, dtype, mask_dtype):
    flux, error, ids = _batch()
    flux, error = _with_defects(flux, error)
    mask = None if mask_dtype is None else _mask(flux.shape, mask_dtype)
    kwargs = dict(mode=mode, noise_level=0.8, seed=21, epoch=3, sample_ids=ids, stats=_stats(), mask=mask)
    with np.errstate(over="ignore"):  # 3e38 overflows float16 on purpose
        flux, error = flux.astype(dtype), error.astype(dtype)
    fast = make_inputs(flux, error, **kwargs, num_threads=2)
    reference = make_inputs_reference(flux, error, **kwargs)
    assert fast.dtype == np.float32
    assert _same_bits(fast, reference)
    assert np.isfinite(fast).all()


@pytest.mark.parametrize("n_pixels", [1, 2, 3, 4095])
def test_make_inputs_odd_pixel_counts(n_pixels):
    flux, error, ids = _batch(n=9, n_pixels=n_pixels)
    for mode in INPUT_MODES:
        kwargs = dict(mode=mode, seed=1, epoch=0, sample_ids=ids, stats=_stats(n_pixels))
        assert _same_bits(make_inputs(flux, error, **kwargs), make_inputs_reference(flux, error, **kwargs))


def test_flux_only_is_flux_plus_scaled_normals():
    flux, error, ids = _batch()
    out = make_inputs(flux, error, mode="flux_only", noise_level=1.3, seed=4, epoch=2, sample_ids=ids)
    normals = draw_normals(4, 2, ids, N_PIXELS)
    expected = flux + (np.float32(1.3) * error) * normals
    assert _same_bits(out, expected)


def test_whitening_is_snr_plus_normals():
    flux, error, ids = _batch()
    out = make_inputs(flux, error, mode="whitening", noise_level=0.5, seed=4, epoch=2, sample_ids=ids)
    normals = draw_normals(4, 2, ids, N_PIXELS).astype(np.float64)
    expected = flux / (0.5 * error.astype(np.float64)) + normals
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=2e-6)


def test_whitening_zeroes_errors_below_floor():
    flux, error, ids = _batch(n=4)
    geometric_mean = np.exp(np.log(error.astype(np.float64)).mean(axis=1))
    error[:, 200] = 1e-9  # a defect: a near-zero error
    error[:, 201] = 0.08 * geometric_mean  # below the floor, whatever the 6 % approximation of G
    error[:, 202] = 0.12 * geometric_mean  # above it
    out = make_inputs(flux, error, mode="whitening", seed=4, epoch=2, sample_ids=ids)
    normals = draw_normals(4, 2, ids, N_PIXELS)

    assert np.all(out[:, 200] == 0)
    assert np.all(out[:, 201] == 0)
    np.testing.assert_allclose(out[:, 202], flux[:, 202] / error[:, 202] + normals[:, 202], rtol=1e-5)
    np.testing.assert_allclose(out[:, 199], flux[:, 199] / error[:, 199] + normals[:, 199], rtol=1e-5)


@pytest.mark.parametrize("spread", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e6])
def test_error_floor_tracks_geometric_mean(spread, scale):
    rng = np.random.default_rng(6)
    error = (scale * np.exp(rng.normal(0.0, spread, (50, N_PIXELS)))).astype(np.float32)
    floor = _error_floor(error, np.ones(error.shape, dtype=bool))[:, 0]
    geometric_mean = np.exp(np.log(error.astype(np.float64)).mean(axis=1))
    ratio = floor / (WHITENING_ERROR_FLOOR * geometric_mean)
    assert ratio.min() > 0.94
    assert ratio.max() < 1.07


def test_whitening_clips_to_limit():
    flux, error, ids = _batch(n=2)
    flux[:, 10] = 1e6
    flux[:, 11] = -1e6
    out = make_inputs(flux, error, mode="whitening", seed=4, epoch=2, sample_ids=ids)
    assert np.all(out[:, 10] == np.float32(WHITENING_CLIP))
    assert np.all(out[:, 11] == -np.float32(WHITENING_CLIP))


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_bad_pixels_zero_and_isolated(mode):
    flux, error, ids = _batch()
    clean = make_inputs(flux, error, mode=mode, seed=2, epoch=1, sample_ids=ids, stats=_stats())
    defective_flux, defective_error = _with_defects(flux, error)
    mask = _mask(flux.shape, np.int8)
    out = make_inputs(defective_flux, defective_error, mode=mode, seed=2, epoch=1, sample_ids=ids,
                      stats=_stats(), mask=mask)

    assert np.all(out[0, :5] == 0)  # error 0, -1, NaN, +inf, -inf
    assert np.all(out[1, :3] == 0)  # flux NaN, +inf, -inf
    assert np.all(out[2] == 0)  # a spectrum whose flux is all NaN
    assert np.all(out[4, 50:90] == 0)  # masked pixels
    assert np.all(out[5] == 0)  # a fully masked spectrum
    assert np.isfinite(out).all()
    untouched = np.ones(flux.shape, dtype=bool)
    untouched[:6] = False
    assert np.array_equal(out[untouched], clean[untouched])
    assert np.array_equal(out[4, :50], clean[4, :50])  # the good pixels of a partly masked spectrum


def test_extreme_finite_input_stays_finite():
    flux, error, ids = _batch(n=3)
    flux[0, :] = 3e38
    error[1, :] = 3e38
    error[2, :] = 1e-38
    for mode in INPUT_MODES:
        out = make_inputs(flux, error, mode=mode, seed=2, epoch=1, sample_ids=ids, stats=_stats())
        assert np.isfinite(out).all(), mode


def test_standardized_uses_noisy_flux_sigma():
    flux, error, ids = _batch()
    stats = _stats()
    out = make_inputs(flux, error, mode="standardized", noise_level=0.7, seed=8, epoch=0, sample_ids=ids, stats=stats)
    normals = draw_normals(8, 0, ids, N_PIXELS).astype(np.float64)
    noisy = flux + 0.7 * error.astype(np.float64) * normals
    sigma = np.sqrt(stats["flux_std"] ** 2 + 0.7**2 * (stats["error_mean"] ** 2 + stats["error_std"] ** 2))
    np.testing.assert_allclose(out, (noisy - stats["flux_mean"]) / sigma, rtol=1e-5, atol=1e-5)


def test_standardized_floors_zero_sigma_pixels():
    flux, error, ids = _batch()
    stats = _stats()
    for key in ("flux_std", "error_mean", "error_std"):
        stats[key][:3] = 0.0
    out = make_inputs(flux, error, mode="standardized", seed=8, epoch=0, sample_ids=ids, stats=stats)
    assert np.isfinite(out).all()
    assert np.abs(out).max() <= STANDARDIZED_CLIP
    assert np.abs(out[:, 3:]).max() < 50


def test_noise_free_returns_flux():
    flux, error, ids = _batch()
    out = make_inputs(flux, error, mode="noise_free", seed=1, epoch=0, sample_ids=ids)
    assert np.array_equal(out, flux)
    flux_only = make_inputs(flux, error, mode="flux_only", noise_level=0.0, seed=1, epoch=0, sample_ids=ids)
    assert np.array_equal(flux_only, flux)


def test_fixed_epoch_repeats_draws():
    flux, error, ids = _batch()
    first = make_inputs(flux, error, mode="whitening", seed=1, epoch=FIXED_EPOCH, sample_ids=ids)
    second = make_inputs(flux, error, mode="whitening", seed=1, epoch=FIXED_EPOCH, sample_ids=ids)
    assert np.array_equal(first, second)


def test_out_argument_receives_result():
    flux, error, ids = _batch()
    out = np.full(flux.shape, np.nan, dtype=np.float32)
    returned = make_inputs(flux, error, mode="flux_only", seed=1, epoch=0, sample_ids=ids, out=out)
    assert returned is out
    assert np.array_equal(out, make_inputs(flux, error, mode="flux_only", seed=1, epoch=0, sample_ids=ids))


def test_empty_batch():
    empty = np.zeros((0, N_PIXELS), dtype=np.float32)
    for mode in INPUT_MODES:
        out = make_inputs(empty, empty, mode=mode, seed=1, epoch=0, sample_ids=np.zeros(0, np.int64), stats=_stats())
        assert out.shape == (0, N_PIXELS)


def test_concurrent_calls_from_threads():
    flux, error, ids = _batch(n=64)
    expected = make_inputs(flux, error, mode="whitening", seed=3, epoch=5, sample_ids=ids, num_threads=1)
    results = [None] * 4

    def work(slot):
        results[slot] = make_inputs(flux, error, mode="whitening", seed=3, epoch=5, sample_ids=ids, num_threads=2)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert np.array_equal(result, expected)


def test_validate_mode_lists_modes():
    assert INPUT_MODES == ("flux_only", "whitening", "standardized", "noise_free")
    for mode in INPUT_MODES:
        assert validate_mode(mode) == mode
    with pytest.raises(ValueError, match=r"invalid input mode 'whiten'; expected one of flux_only, whitening"):
        validate_mode("whiten")


def test_default_num_threads_from_env(monkeypatch):
    monkeypatch.setenv(THREADS_ENV_VAR, "3")
    assert default_num_threads() == 3
    monkeypatch.setenv(THREADS_ENV_VAR, "zero")
    with pytest.raises(ValueError, match=r"SPECSTREAM_KERNEL_THREADS='zero' is invalid; expected an integer >= 1"):
        default_num_threads()


def _call(**changes):
    flux, error, ids = _batch(n=4)
    kwargs = dict(mode="flux_only", noise_level=1.0, seed=1, epoch=0, sample_ids=ids, stats=None, mask=None)
    flux = changes.pop("flux", flux)
    error = changes.pop("error", error)
    kwargs.update(changes)
    return make_inputs(flux, error, **kwargs)


ARGUMENT_ERRORS = [
    (dict(mode="raw"), r"invalid input mode 'raw'; expected one of flux_only, whitening, standardized, noise_free"),
    (dict(seed=-1), r"invalid seed -1; expected an integer in \[0, 2\*\*64\)"),
    (dict(seed=1.5), r"invalid seed 1.5"),
    (dict(epoch=-2), r"invalid epoch -2; expected an integer >= 0 .* or FIXED_EPOCH \(-1\)"),
    (dict(epoch=True), r"invalid epoch True"),
    (dict(noise_level=-0.1), r"invalid noise_level -0.1; expected a finite number >= 0"),
    (dict(noise_level=float("nan")), r"invalid noise_level nan"),
    (dict(noise_level="high"), r"invalid noise_level 'high'"),
    (dict(mode="whitening", noise_level=0.0), r"noise_level must be > 0 for mode 'whitening'"),
    (dict(flux=np.zeros(N_PIXELS, np.float32)), r"flux has shape \(4096,\); expected \(batch, n_pixels\)"),
    (dict(error=np.ones((4, 10), np.float32)), r"error has shape \(4, 10\); expected the shape of flux, \(4, 4096\)"),
    (dict(mask=np.zeros((3, N_PIXELS), bool)), r"mask has shape \(3, 4096\); expected the shape of flux"),
    (dict(sample_ids=np.arange(5)), r"sample_ids has shape \(5,\); expected \(4,\), one id per spectrum"),
    (dict(flux=np.ones((4, N_PIXELS), np.int32)), r"flux has dtype int32; expected float16, float32 or float64"),
    (dict(mask=np.zeros((4, N_PIXELS), np.float32)), r"mask has dtype float32; expected bool or an integer type"),
    (dict(sample_ids=np.arange(4.0)), r"sample_ids has dtype float64; expected an integer type"),
    (dict(mode="standardized"), r"mode 'standardized' needs stats, a mapping with the keys flux_mean, flux_std"),
    (dict(out=np.zeros((4, N_PIXELS), np.float64)), r"out is ndarray float64 \(4, 4096\); expected a float32 numpy"),
    (dict(out=np.zeros((N_PIXELS, 4), np.float32).T), r"out must be C-contiguous and writeable"),
    (dict(num_threads=0), r"invalid num_threads 0; expected an integer >= 1 or None"),
]


@pytest.mark.parametrize("changes, message", ARGUMENT_ERRORS)
def test_make_inputs_argument_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        _call(**changes)


def _broken_stats(key, value):
    stats = _stats()
    stats[key] = value
    return stats


STATS_ERRORS = [
    ({k: v for k, v in _stats().items() if k != "error_std"}, r"stats is missing key 'error_std'; expected the keys"),
    (_broken_stats("flux_mean", np.zeros(10)), r"stats\['flux_mean'\] has shape \(10,\); expected \(4096,\)"),
    (_broken_stats("flux_std", np.r_[np.nan, np.ones(N_PIXELS - 1)]),
     r"stats\['flux_std'\] at pixel 0 is nan; expected a finite number >= 0"),
    (_broken_stats("error_std", np.r_[np.ones(7), -1.0, np.ones(N_PIXELS - 8)]),
     r"stats\['error_std'\] at pixel 7 is -1.0; expected a finite number >= 0"),
    ({"flux_mean": np.zeros(N_PIXELS), "flux_std": np.zeros(N_PIXELS), "error_mean": np.zeros(N_PIXELS),
      "error_std": np.zeros(N_PIXELS)}, r"stats give a zero standard deviation at more than half of the pixels"),
]


@pytest.mark.parametrize("stats, message", STATS_ERRORS)
def test_standardized_stats_errors(stats, message):
    with pytest.raises(ValueError, match=message):
        _call(mode="standardized", stats=stats)


def test_draw_normals_argument_errors():
    with pytest.raises(ValueError, match=r"sample_ids has shape \(2, 2\) and dtype int64; expected \(batch,\) integers"):
        draw_normals(1, 0, np.zeros((2, 2), np.int64), 10)
    with pytest.raises(ValueError, match=r"invalid n_pixels 0; expected an integer >= 1"):
        draw_normals(1, 0, np.arange(2), 0)


def test_public_names_exported():
    for name in ("make_inputs", "draw_normals", "make_inputs_reference", "FIXED_EPOCH", "INPUT_MODES",
                 "validate_mode", "STATS_KEYS"):
        assert hasattr(kernels, name), name


@pytest.mark.parametrize("mode", INPUT_MODES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_row_transform_writes_rows_in_given_order(mode, dtype):
    flux, error, ids = _batch()
    flux, error = _with_defects(flux, error)
    with np.errstate(over="ignore"):  # 3e38 overflows float16 on purpose
        flux, error = flux.astype(dtype), error.astype(dtype)
    mask = _mask(flux.shape, np.int8)
    kwargs = dict(mode=mode, noise_level=0.8, seed=21, epoch=3, stats=_stats())
    expected = make_inputs(flux, error, sample_ids=ids, mask=mask, **kwargs)
    transform = kernels.RowTransform(n_pixels=N_PIXELS, **kwargs)
    out_rows = np.random.default_rng(1).permutation(len(ids) + 5)[:len(ids)].astype(np.int64)
    out = np.full((len(ids) + 5, N_PIXELS), -7.0, dtype=np.float32)
    for start in range(0, len(ids), 5):  # several calls, as the loader makes them
        stop = start + 5
        transform(flux[start:stop], error[start:stop], ids[start:stop].astype(np.int64), out, out_rows[start:stop],
                  mask[start:stop])
    assert _same_bits(out[out_rows], expected)
    untouched = np.setdiff1d(np.arange(len(out)), out_rows)
    assert np.all(out[untouched] == -7.0)


def test_row_transform_argument_errors():
    transform = kernels.RowTransform(mode="flux_only", seed=0, epoch=0, n_pixels=8)
    flux = np.ones((2, 8), np.float32)
    ids, rows = np.arange(2, dtype=np.int64), np.arange(2, dtype=np.int64)
    out = np.empty((2, 8), np.float32)
    with pytest.raises(ValueError, match="invalid out_rows from 1 to 2; expected values in \\[0, 2\\), the rows of out"):
        transform(flux, flux, ids, out, rows + 1)
    with pytest.raises(ValueError, match="invalid out_rows from -1 to 0"):
        transform(flux, flux, ids, out, rows - 1)
    with pytest.raises(ValueError, match="flux has shape \\(2, 9\\); expected \\(rows, 8\\)"):
        transform(np.ones((2, 9), np.float32), flux, ids, out, rows)
    with pytest.raises(ValueError, match="mask has dtype float32; expected bool, int8 or uint8"):
        transform(flux, flux, ids, out, rows, np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="flux has dtype int32; expected float16, float32 or float64"):
        transform(flux.astype(np.int32), flux, ids, out, rows)
    with pytest.raises(ValueError, match="error is not C-contiguous"):
        transform(flux, np.ones((8, 2), np.float32).T, ids, out, rows)
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        transform(flux, flux, ids, out.astype(np.float64), rows)
    with pytest.raises(ValueError, match="sample_ids and out_rows must be \\(2,\\) int64"):
        transform(flux, flux, ids.astype(np.int32), out, rows)
    with pytest.raises(ValueError, match="invalid input mode"):
        kernels.RowTransform(mode="raw", seed=0, epoch=0, n_pixels=8)
