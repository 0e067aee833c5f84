import shutil

import pytest
import torch
from torch import nn

from specstream.models import (
    MLP,
    MODEL_ZOO,
    build_model,
    compile_model,
    count_parameters,
    register_model,
)


def _mlp_parameter_count(widths):
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:]))


# Exact counts for 4096 pixels and one output, from (fan_in + 1) * fan_out per Linear layer.
MLP_WIDTHS = {
    "mlp_2L_1024": (4096, 1024, 512, 1),
    "mlp_3L_512": (4096, 512, 256, 128, 1),
    "mlp_3L_1024": (4096, 1024, 512, 256, 1),
    "mlp_2L_2048": (4096, 2048, 1024, 1),
    "mlp_3L_2048": (4096, 2048, 1024, 512, 1),
}

# Parameter counts that the reference study states for its models.
REFERENCE_COUNTS = {
    "mlp_3L_1024": 4.85e6,
    "mlp_3L_2048": 11.0e6,
    "cnn_4L_k5_bn": 60.5e3,
    "cnn_4L_k5_wide": 150e3,
}
# Relative tolerance, because the CNN layer lists are reconstructed from a description of the reference models.
REFERENCE_TOLERANCE = 0.02


def test_zoo_contains_reference_models():
    expected = set(MLP_WIDTHS) | {"cnn_4L_k5_bn", "cnn_4L_k5_wide"}
    assert expected <= set(MODEL_ZOO)


@pytest.mark.parametrize("name", sorted(MLP_WIDTHS))
def test_mlp_parameter_count_exact(name):
    assert count_parameters(build_model(name)) == _mlp_parameter_count(MLP_WIDTHS[name])


def test_mlp_3l_1024_count_literal():
    assert count_parameters(build_model("mlp_3L_1024")) == 4_851_713


def test_cnn_parameter_counts_exact():
    assert count_parameters(build_model("cnn_4L_k5_bn")) == 60_481
    assert count_parameters(build_model("cnn_4L_k5_wide")) == 150_977


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_count_matches_reference(name):
    count = count_parameters(build_model(name))
    reference = REFERENCE_COUNTS[name]
    assert abs(count - reference) / reference <= REFERENCE_TOLERANCE


def test_wide_cnn_channels():
    model = build_model("cnn_4L_k5_wide")
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert [conv.out_channels for conv in convolutions] == [32, 64, 128, 128]
    assert all(conv.kernel_size == (1, 5) for conv in convolutions)
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == 4


def test_parameter_count_scales_with_outputs():
    one_output = count_parameters(build_model("mlp_3L_1024", n_outputs=1))
    three_outputs = count_parameters(build_model("mlp_3L_1024", n_outputs=3))
    assert three_outputs - one_output == 2 * (256 + 1)


@pytest.mark.parametrize("name", sorted(MODEL_ZOO))
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_output_shape(name, n_outputs):
    model = build_model(name, n_pixels=256, n_outputs=n_outputs)
    output = model(torch.randn(5, 256))
    assert output.shape == (5, n_outputs)
    assert output.dtype == torch.float32


def test_build_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"unknown model 'mlp_9L'; known models: .*cnn_4L_k5_bn.*mlp_3L_1024"):
        build_model("mlp_9L")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_pixels": 0}, r"n_pixels must be a positive integer, got 0"),
        ({"n_pixels": 4096.0}, r"n_pixels must be a positive integer, got 4096.0"),
        ({"n_outputs": 0}, r"n_outputs must be a positive integer \(one per target label\), got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0.1"),
    ],
)
def test_build_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("mlp_3L_512", **kwargs)


def test_cnn_rejects_too_few_pixels():
    with pytest.raises(ValueError, match=r"needs n_pixels >= 256, got 128"):
        build_model("cnn_4L_k5_bn", n_pixels=128)


@pytest.mark.parametrize("name", ["mlp_3L_512", "cnn_4L_k5_bn"])
def test_forward_rejects_wrong_input_shape(name):
    model = build_model(name, n_pixels=256)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 256\), got \(4, 300\)"):
        model(torch.randn(4, 300))
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 256\), got \(256,\)"):
        model(torch.randn(256))


def test_register_model_adds_to_zoo():
    name = "test_tiny_mlp"
    try:

        @register_model(name)
        def tiny(*, n_pixels, n_outputs, dropout):
            return MLP(n_pixels, (8,), n_outputs, dropout)

        model = build_model(name, n_pixels=16, n_outputs=2)
        assert count_parameters(model) == 17 * 8 + 9 * 2
    finally:
        MODEL_ZOO.pop(name, None)


def test_register_model_rejects_duplicate():
    with pytest.raises(ValueError, match=r"model name 'mlp_3L_512' is already registered"):
        register_model("mlp_3L_512")(lambda **kwargs: None)


@pytest.mark.parametrize("name", sorted(MODEL_ZOO))
def test_model_overfits_tiny_set(name):
    """16 random spectra with 2 random labels each are memorized to a small fraction of the label variance."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 256, generator=generator)
    labels = torch.randn(16, 2, generator=generator)
    torch.manual_seed(1)
    model = build_model(name, n_pixels=256, n_outputs=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    initial_loss = nn.functional.mse_loss(model(inputs), labels).item()
    for _ in range(100):
        loss = nn.functional.mse_loss(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        eval_loss = nn.functional.mse_loss(model(inputs), labels).item()
    assert initial_loss > 0.5
    assert loss.item() < 1e-3
    assert eval_loss < 1e-2


def test_cnn_channels_last_matches_default():
    torch.manual_seed(0)
    model = build_model("cnn_4L_k5_wide", n_pixels=512).eval()
    inputs = torch.randn(6, 512)
    with torch.no_grad():
        expected = model(inputs)
        model = model.to(memory_format=torch.channels_last)
        actual = model(inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp_3L_512", "cnn_4L_k5_bn"])
def test_bf16_autocast_close_to_float32(name):
    torch.manual_seed(0)
    model = build_model(name, n_pixels=256).eval()
    inputs = torch.randn(32, 256)
    with torch.no_grad():
        expected = model(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = model(inputs)
    # bf16 has an 8-bit mantissa, about 0.4 % relative precision per operation.
    scale = expected.abs().max().item()
    assert (actual.float() - expected).abs().max().item() < 0.05 * scale


def _has_cpp_compiler():
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


requires_compiler = pytest.mark.skipif(
    not _has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler (g++, c++ or clang++) on PATH"
)


def _check_compiled_matches_eager(name):
    from torch._dynamo.utils import counters

    torch.compiler.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = build_model(name, n_pixels=256, n_outputs=2, dropout=0.0)
    compiled_model = build_model(name, n_pixels=256, n_outputs=2, dropout=0.0)
    compiled_model.load_state_dict(eager.state_dict())
    forward = compile_model(compiled_model)

    # A full batch compiles once; the smaller last batch must reuse that graph.
    for batch_size in (8, 5):
        inputs = torch.randn(batch_size, 256)
        if batch_size == 5:
            with torch._dynamo.config.patch(error_on_recompile=True):
                actual = forward(inputs)
        else:
            actual = forward(inputs)
        expected = eager(inputs)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)

        actual.sum().backward()
        expected.sum().backward()
        for (param_name, eager_param), compiled_param in zip(eager.named_parameters(), compiled_model.parameters()):
            torch.testing.assert_close(compiled_param.grad, eager_param.grad, rtol=1e-4, atol=1e-5, msg=param_name)
        eager.zero_grad()
        compiled_model.zero_grad()

    assert counters["stats"]["unique_graphs"] == 1
    # The compiled wrapper leaves the model's own state_dict keys unchanged.
    assert set(compiled_model.state_dict()) == set(eager.state_dict())


@requires_compiler
def test_compiled_mlp_matches_eager():
    _check_compiled_matches_eager("mlp_3L_512")


@requires_compiler
@pytest.mark.slow
def test_compiled_cnn_matches_eager():
    _check_compiled_matches_eager("cnn_4L_k5_bn")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cnn_cuda_channels_last_bf16():
    torch.manual_seed(0)
    model = build_model("cnn_4L_k5_wide").eval()
    inputs = torch.randn(64, 4096)
    with torch.no_grad():
        expected = model(inputs)
        model = model.cuda().to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            actual = model(inputs.cuda())
    scale = expected.abs().max().item()
    assert (actual.float().cpu() - expected).abs().max().item() < 0.05 * scale
