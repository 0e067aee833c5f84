"""The counter-based noise: known-answer vectors, statistics, independence and determinism of the draws."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy import stats

from specstream.kernels import FIXED_EPOCH, draw_normals, draw_normals_reference, make_inputs
from specstream.kernels.box_muller import box_muller, box_muller_numpy
from specstream.kernels.threefry import threefry2x32, threefry2x32_numpy

# Random123 known-answer vectors for Threefry-2x32-20: (counter, key) -> output words.
THREEFRY_KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]

N_PIXELS = 4096


@njit
def _threefry_scalar(c0, c1, k0, k1):
    return threefry2x32(c0, c1, k0, k1)


@njit(error_model="numpy")
def _box_muller_loop(x0, x1, z0, z1):
    for i in range(x0.shape[0]):
        z0[i], z1[i] = box_muller(x0[i], x1[i])


@pytest.fixture(scope="module")
def many_normals() -> np.ndarray:
    """(20000, 4096) draws of epoch 0: 82 million normals."""
    return draw_normals(seed=11, epoch=0, sample_ids=np.arange(20_000), n_pixels=N_PIXELS)


@pytest.mark.parametrize("counter, key, expected", THREEFRY_KAT)
def test_threefry_numba_known_answers(counter, key, expected):
    words = _threefry_scalar(*(np.uint32(v) for v in counter + key))
    assert (int(words[0]), int(words[1])) == expected


@pytest.mark.parametrize("counter, key, expected", THREEFRY_KAT)
def test_threefry_numpy_known_answers(counter, key, expected):
    x0, x1 = threefry2x32_numpy(*counter, *key)
    assert (int(x0[0]), int(x1[0])) == expected


def test_box_muller_numba_matches_numpy_bitwise():
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 2**32, 200_000, dtype=np.uint32)
    x1 = rng.integers(0, 2**32, 200_000, dtype=np.uint32)
    # The extremes of u (smallest and largest) and every quadrant boundary.
    x0[:4] = [0, 1, 2**32 - 1, 2**31]
    x1[:4] = [0, 2**30, 2**31, 3 * 2**30]
    z0, z1 = np.empty(len(x0), np.float32), np.empty(len(x0), np.float32)
    _box_muller_loop(x0, x1, z0, z1)
    r0, r1 = box_muller_numpy(x0, x1)
    assert np.array_equal(z0.view(np.uint32), r0.view(np.uint32))
    assert np.array_equal(z1.view(np.uint32), r1.view(np.uint32))


def test_box_muller_extreme_words_finite():
    x0 = np.array([0, 2**32 - 1, 2**32 - 128, 1], dtype=np.uint32)
    x1 = np.array([0, 2**32 - 1, 2**31, 2**30], dtype=np.uint32)
    z0, z1 = box_muller_numpy(x0, x1)
    assert np.isfinite(z0).all()
    assert np.isfinite(z1).all()
    radius = np.hypot(z0.astype(np.float64), z1.astype(np.float64))
    assert radius.max() == pytest.approx(np.sqrt(-2 * np.log(2.0**-33)), rel=1e-6)  # x0 = 0 gives the largest |z|


def test_draw_normals_match_reference_bitwise():
    ids = np.array([0, 1, -1, 2**40, -(2**62), 123456789], dtype=np.int64)
    for n_pixels in (1, 2, 3, 4095, 4096):
        fast = draw_normals(7, 3, ids, n_pixels)
        reference = draw_normals_reference(7, 3, ids, n_pixels)
        assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32)), n_pixels


def test_normals_per_pixel_moments(many_normals):
    n = many_normals.shape[0]
    means = many_normals.mean(axis=0, dtype=np.float64)
    variances = many_normals.var(axis=0, dtype=np.float64)
    # Over 4096 pixels the largest deviation of a true N(0, 1) sample stays below about 4.3 sigma.
    assert np.abs(means).max() < 5.5 / np.sqrt(n)
    assert np.abs(variances - 1).max() < 5.5 * np.sqrt(2 / n)
    # The standardised pixel means are themselves N(0, 1): no pixel-dependent bias.
    assert stats.kstest(means * np.sqrt(n), "norm").pvalue > 1e-3
    assert stats.kstest((variances - 1) / np.sqrt(2 / n), "norm").pvalue > 1e-3


def test_normals_per_pixel_gaussian_shape(many_normals):
    for pixel in (0, 1, 2047, 2048, 2049, 4095, 1000, 3000):
        assert stats.kstest(many_normals[:, pixel], "norm").pvalue > 1e-4, pixel


def test_normals_per_spectrum_gaussian_shape(many_normals):
    p_values = np.array([stats.kstest(row, "norm").pvalue for row in many_normals[:300]])
    # Under the null hypothesis the p-values of independent spectra are uniform on [0, 1].
    assert stats.kstest(p_values, "uniform").pvalue > 1e-3


def test_normals_tail_frequencies(many_normals):
    flat = np.abs(many_normals.ravel())
    n = flat.size
    for threshold in (2.0, 3.0, 4.0, 5.0):
        expected = n * 2 * stats.norm.sf(threshold)
        observed = np.count_nonzero(flat > threshold)
        assert abs(observed - expected) < 5 * np.sqrt(expected) + 1, (threshold, observed, expected)
    assert flat.max() < 6.765  # the documented cap of the Box-Muller radius, sqrt(66 ln 2)


def test_normals_independent_across_epochs_ids_and_pixels(many_normals):
    n_rows = 2000
    bound = 5.5 / np.sqrt(N_PIXELS)  # correlation of 4096 independent pairs has sd 1/64
    base = many_normals[:n_rows].astype(np.float64)
    other_epoch = draw_normals(seed=11, epoch=1, sample_ids=np.arange(n_rows), n_pixels=N_PIXELS).astype(np.float64)
    fixed_epoch = draw_normals(seed=11, epoch=FIXED_EPOCH, sample_ids=np.arange(n_rows), n_pixels=N_PIXELS)
    other_seed = draw_normals(seed=12, epoch=0, sample_ids=np.arange(n_rows), n_pixels=N_PIXELS)

    def row_correlations(a, b):
        a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
        b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
        return (a * b).mean(1)

    assert np.abs(row_correlations(base, other_epoch)).max() < bound
    assert np.abs(row_correlations(base, fixed_epoch.astype(np.float64))).max() < bound
    assert np.abs(row_correlations(base, other_seed.astype(np.float64))).max() < bound
    assert np.abs(row_correlations(base[:-1], base[1:])).max() < bound  # neighbouring sample ids
    assert np.abs(row_correlations(base[:, :-1], base[:, 1:])).max() < 5.5 / np.sqrt(N_PIXELS - 1)  # neighbouring pixels
    # The two normals of a Box-Muller pair (pixels j and j + 2048), and their squares.
    first, second = base[:, :2048].ravel(), base[:, 2048:].ravel()
    n_pairs = first.size
    assert abs(np.corrcoef(first, second)[0, 1]) < 5.5 / np.sqrt(n_pairs)
    assert abs(np.corrcoef(first**2, second**2)[0, 1]) < 5.5 / np.sqrt(n_pairs)


def test_draws_pure_function_of_seed_epoch_id():
    ids = np.arange(1000, 1256)
    once = draw_normals(5, 2, ids, N_PIXELS)
    again = draw_normals(5, 2, ids, N_PIXELS)
    assert np.array_equal(once, again)
    assert not np.array_equal(once, draw_normals(5, 3, ids, N_PIXELS))
    assert not np.array_equal(once, draw_normals(6, 2, ids, N_PIXELS))
    assert not np.array_equal(draw_normals(5, FIXED_EPOCH, ids, N_PIXELS), draw_normals(5, 0, ids, N_PIXELS))


def test_draws_same_across_rank_worker_splits():
    rng = np.random.default_rng(3)
    flux = rng.uniform(0.1, 1.0, (240, N_PIXELS)).astype(np.float32)
    error = rng.uniform(0.05, 0.2, (240, N_PIXELS)).astype(np.float32)
    ids = rng.choice(10**9, size=240, replace=False)
    whole = make_inputs(flux, error, mode="flux_only", seed=9, epoch=4, sample_ids=ids, num_threads=2)

    for world_size in (1, 2, 3):
        for num_workers in (1, 2, 4):
            for rank in range(world_size):
                rank_rows = np.arange(rank, 240, world_size)
                for worker in range(num_workers):
                    rows = rank_rows[worker::num_workers]
                    rows = rng.permutation(rows)  # any batch composition and order
                    part = make_inputs(flux[rows], error[rows], mode="flux_only", seed=9, epoch=4,
                                       sample_ids=ids[rows], num_threads=1)
                    assert np.array_equal(part, whole[rows]), (world_size, num_workers, rank, worker)


def test_draws_same_for_any_thread_count():
    ids = np.arange(500)
    single = draw_normals(1, 0, ids, 1000, num_threads=1)
    for threads in (2, 3, 7):
        assert np.array_equal(draw_normals(1, 0, ids, 1000, num_threads=threads), single)
