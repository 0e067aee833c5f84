"""The torch twin: same draws and outputs as the NumPy reference, on CPU and (where present) on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specstream.kernels import FIXED_EPOCH, INPUT_MODES, draw_normals_reference, make_inputs_reference
from specstream.kernels.threefry import threefry2x32_numpy
from specstream.kernels import torch_twin
from specstream.kernels.torch_twin import (_sqrt_f32, draw_normals_torch, make_inputs_torch,
                                           threefry2x32_torch)
from specstream.training.model_setup import compile_support

N_PIXELS = 4096


def _batch(n=16, n_pixels=N_PIXELS):
    rng = np.random.default_rng(1)
    flux = rng.uniform(0.05, 1.5, (n, n_pixels)).astype(np.float32)
    error = rng.uniform(0.07, 0.6, (n, n_pixels)).astype(np.float32)
    error[0, :5] = [0.0, -1.0, np.nan, np.inf, 1e-30]
    flux[1, :3] = [np.nan, np.inf, -np.inf]
    error[2, 7] = 1e-8
    mask = np.zeros((n, n_pixels), dtype=np.int8)
    mask[3, 100:140] = 1
    ids = rng.integers(-(2**62), 2**62, n)
    stats = {
        "flux_mean": rng.uniform(0.3, 0.8, n_pixels),
        "flux_std": rng.uniform(0.1, 0.3, n_pixels),
        "error_mean": rng.uniform(0.1, 0.3, n_pixels),
        "error_std": rng.uniform(0.0, 0.1, n_pixels),
    }
    return flux, error, mask, ids, stats


def _compare_on(device: str, compile_draws: bool = False):
    flux, error, mask, ids, stats = _batch()
    for mode in INPUT_MODES:
        for dtype in (np.float16, np.float32, np.float64):
            kwargs = dict(mode=mode, noise_level=0.9, seed=17, epoch=FIXED_EPOCH, stats=stats)
            reference = make_inputs_reference(flux.astype(dtype), error.astype(dtype), sample_ids=ids, mask=mask,
                                              **kwargs)
            twin = make_inputs_torch(torch.from_numpy(flux.astype(dtype)).to(device),
                                     torch.from_numpy(error.astype(dtype)).to(device),
                                     sample_ids=torch.from_numpy(ids).to(device),
                                     mask=torch.from_numpy(mask).to(device), compile_draws=compile_draws,
                                     **kwargs)
            assert twin.device.type == device
            assert twin.dtype == torch.float32
            result = twin.cpu().numpy()
            assert np.array_equal(result.view(np.uint32), reference.view(np.uint32)), (mode, dtype)


def test_threefry_torch_matches_numpy():
    rng = np.random.default_rng(2)
    words = [rng.integers(0, 2**32, 10_000, dtype=np.uint32) for _ in range(4)]
    expected = threefry2x32_numpy(*words)
    result = threefry2x32_torch(*(torch.from_numpy(w.astype(np.int64)) for w in words))
    for got, want in zip(result, expected):
        assert np.array_equal(got.numpy(), want.astype(np.int64))


def test_sqrt_correctly_rounded():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.uniform(0, 50, 2_000_000), [0.0, 1e-30, 1.0, 2.0, 46.0]]).astype(np.float32)
    assert np.array_equal(_sqrt_f32(torch.from_numpy(values)).numpy(), np.sqrt(values))


def test_torch_twin_matches_reference_on_cpu():
    _compare_on("cpu")


def test_draw_normals_torch_matches_reference():
    ids = np.array([0, 5, -3, 2**50], dtype=np.int64)
    for n_pixels in (1, 7, 4096):
        twin = draw_normals_torch(4, 9, torch.from_numpy(ids), n_pixels).numpy()
        assert np.array_equal(twin, draw_normals_reference(4, 9, ids, n_pixels))


def test_torch_twin_argument_errors():
    flux, error, mask, ids, stats = _batch()
    flux, error, ids = flux[:2], error[:2], ids[:2]
    with pytest.raises(ValueError, match=r"flux and error must be torch tensors; got ndarray and ndarray"):
        make_inputs_torch(flux, error, mode="flux_only", seed=1, epoch=0, sample_ids=ids)
    with pytest.raises(ValueError, match=r"flux has dtype torch.bfloat16; expected float16, float32 or float64"):
        make_inputs_torch(torch.from_numpy(flux).bfloat16(), torch.from_numpy(error), mode="flux_only", seed=1,
                          epoch=0, sample_ids=ids)
    with pytest.raises(ValueError, match=r"invalid input mode 'snr'"):
        make_inputs_torch(torch.from_numpy(flux), torch.from_numpy(error), mode="snr", seed=1, epoch=0,
                          sample_ids=ids)
    with pytest.raises(ValueError, match=r"sample_ids has shape \(3,\); expected \(2,\)"):
        make_inputs_torch(torch.from_numpy(flux), torch.from_numpy(error), mode="flux_only", seed=1, epoch=0,
                          sample_ids=np.arange(3))
    with pytest.raises(ValueError, match=r"invalid n_pixels 0; expected an integer >= 1"):
        draw_normals_torch(1, 0, torch.arange(2), 0)
    with pytest.raises(ValueError, match=r"sample_ids has shape \(2, 1\) and dtype torch.int64; expected"):
        draw_normals_torch(1, 0, torch.zeros((2, 1), dtype=torch.int64), 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_twin_matches_reference_on_cuda():
    _compare_on("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_draws_match_reference_on_cuda():
    _compare_on("cuda", compile_draws=True)


@pytest.mark.slow
@pytest.mark.skipif(not compile_support(torch.device("cpu"))[0], reason="torch.compile cannot run here")
def test_compiled_draws_match_reference_on_cpu():
    _compare_on("cpu", compile_draws=True)  # about 25 s of compilation on 2 cores


def test_compiled_draws_fall_back_to_eager(monkeypatch, caplog):
    def failing_compile(function, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch_twin, "_compiled_threefry", torch_twin._CompiledThreefry())
    monkeypatch.setattr(torch, "compile", failing_compile)
    flux, error, mask, ids, stats = _batch(n=4)
    kwargs = dict(mode="flux_only", seed=3, epoch=1)
    twin = make_inputs_torch(torch.from_numpy(flux), torch.from_numpy(error), sample_ids=torch.from_numpy(ids),
                             compile_draws=True, **kwargs)
    reference = make_inputs_reference(flux, error, sample_ids=ids, **kwargs)
    assert np.array_equal(twin.numpy().view(np.uint32), reference.view(np.uint32))
    assert "compiling the noise generator failed, drawing noise eagerly instead: no C++ compiler" in caplog.text
    assert torch_twin._compiled_threefry.failed
