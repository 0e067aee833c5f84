"""The model zoo: MLPs and 1-D CNNs that map a spectrum to stellar labels.

Every model takes `(batch, n_pixels)` float32 input and returns `(batch, n_outputs)`, one column per
target label (log_g alone by default). Add a model with one factory function and one
`@register_model("name")` line; `build_model(name, ...)` then finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_DROPOUT = 0.1
"""Dropout probability of the hidden layers when the caller gives none."""

ModelFactory = Callable[..., nn.Module]

MODEL_ZOO: dict[str, ModelFactory] = {}
"""Model name -> factory taking keyword arguments n_pixels, n_outputs and dropout."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory under `name` in MODEL_ZOO (used as a decorator)."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in MODEL_ZOO:
            raise ValueError(f"model name {name!r} is already registered; choose another name")
        MODEL_ZOO[name] = factory
        return factory

    return decorator


def build_model(
    name: str, n_pixels: int = 4096, n_outputs: int = 1, dropout: float = DEFAULT_DROPOUT
) -> nn.Module:
    """Build the zoo model `name` for `n_pixels` input pixels and `n_outputs` target labels."""
    if name not in MODEL_ZOO:
        known = ", ".join(sorted(MODEL_ZOO))
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    if isinstance(n_pixels, bool) or not isinstance(n_pixels, int) or n_pixels < 1:
        raise ValueError(f"n_pixels must be a positive integer, got {n_pixels!r}")
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        raise ValueError(f"n_outputs must be a positive integer (one per target label), got {n_outputs!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return MODEL_ZOO[name](n_pixels=n_pixels, n_outputs=n_outputs, dropout=dropout)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _check_input(inputs: torch.Tensor, n_pixels: int, model_name: str) -> None:
    if inputs.ndim != 2 or inputs.shape[1] != n_pixels:
        raise ValueError(
            f"{model_name} expects input of shape (batch, {n_pixels}), got {tuple(inputs.shape)}; "
            f"build the model with n_pixels={inputs.shape[-1]} or pass one spectrum per row"
        )


class MLP(nn.Module):
    """Fully connected network: [Linear -> GELU -> Dropout] per hidden width, then a Linear output layer.

    Each Linear layer has (fan_in + 1) * fan_out parameters. For 4096 inputs, hidden widths
    (1024, 512, 256) and one output, the total is 4,851,713.
    """

    def __init__(self, n_pixels: int, hidden_widths: Sequence[int], n_outputs: int, dropout: float) -> None:
        super().__init__()
        self.n_pixels = n_pixels
        self.n_outputs = n_outputs
        layers: list[nn.Module] = []
        fan_in = n_pixels
        for width in hidden_widths:
            layers += [nn.Linear(fan_in, width), nn.GELU(), nn.Dropout(dropout)]
            fan_in = width
        layers.append(nn.Linear(fan_in, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_input(inputs, self.n_pixels, type(self).__name__)
        return self.layers(inputs)  # (batch, n_outputs)


class SpectrumCNN(nn.Module):
    """1-D convolutional network with BatchNorm and an MLP head.

    Layers, for channels (c1, c2, c3, c4):
      4 x [Conv(k=5, padding 2, with bias) -> BatchNorm -> GELU -> MaxPool(pool_size)],
      global average over the remaining pixels -> (batch, c4),
      Linear(c4, head_width) -> GELU -> Dropout -> Linear(head_width, n_outputs).
    With pool_size 4, 4096 pixels shrink to 1024, 256, 64 and 16 positions before the average.

    The convolutions are Conv2d with (1, k) kernels over a height-1 image, which have the same
    parameters as Conv1d. That lets `model.to(memory_format=torch.channels_last)` apply, which
    cuDNN prefers for bf16 convolutions, and changes nothing on CPU.
    """

    def __init__(
        self,
        n_pixels: int,
        channels: Sequence[int],
        n_outputs: int,
        dropout: float,
        *,
        kernel_size: int = 5,
        pool_size: int = 4,
        head_width: int = 128,
    ) -> None:
        super().__init__()
        min_pixels = pool_size ** len(channels)
        if n_pixels < min_pixels:
            raise ValueError(
                f"{type(self).__name__} with {len(channels)} pooling layers of size {pool_size} needs "
                f"n_pixels >= {min_pixels}, got {n_pixels}; use more pixels or an MLP"
            )
        self.n_pixels = n_pixels
        self.n_outputs = n_outputs
        blocks: list[nn.Module] = []
        in_channels = 1
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, kernel_size // 2)),
                nn.BatchNorm2d(out_channels),
                nn.GELU(),
                nn.MaxPool2d((1, pool_size)),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(in_channels, head_width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_width, n_outputs),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_input(inputs, self.n_pixels, type(self).__name__)
        images = inputs[:, None, None, :]  # (batch, 1 channel, height 1, n_pixels)
        features = self.features(images)  # (batch, c4, 1, n_pixels / pool_size**4)
        pooled = features.mean(dim=(2, 3))  # (batch, c4)
        return self.head(pooled)  # (batch, n_outputs)


# Reference zoo. MLP names give the number of hidden layers and the first width; each
# further hidden layer has half the width of the one before.


@register_model("mlp_2L_1024")
def mlp_2l_1024(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (1024, 512), n_outputs, dropout)


@register_model("mlp_3L_512")
def mlp_3l_512(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (512, 256, 128), n_outputs, dropout)


@register_model("mlp_3L_1024")
def mlp_3l_1024(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (1024, 512, 256), n_outputs, dropout)


@register_model("mlp_2L_2048")
def mlp_2l_2048(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (2048, 1024), n_outputs, dropout)


@register_model("mlp_3L_2048")
def mlp_3l_2048(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (2048, 1024, 512), n_outputs, dropout)


# Small MLP for CPU demos and quick checks: 1,065,345 parameters for 4096 pixels and one output.
@register_model("mlp_2L_256")
def mlp_2l_256(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    return MLP(n_pixels, (256, 128), n_outputs, dropout)


@register_model("cnn_4L_k5_bn")
def cnn_4l_k5_bn(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    # 60,481 parameters for 4096 pixels and one output.
    return SpectrumCNN(n_pixels, (32, 64, 64, 64), n_outputs, dropout)


@register_model("cnn_4L_k5_wide")
def cnn_4l_k5_wide(*, n_pixels: int, n_outputs: int, dropout: float) -> nn.Module:
    # 150,977 parameters for 4096 pixels and one output.
    return SpectrumCNN(n_pixels, (32, 64, 128, 128), n_outputs, dropout)


def compile_model(model: nn.Module, **compile_kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile `model` with torch.compile and return a forward function with a dynamic batch size.

    The returned function marks dimension 0 of each input as dynamic before the call, so a
    smaller last batch reuses the compiled graph instead of triggering a recompilation.
    Train and eval mode still compile one graph each. Save and load `model` itself:
    its state_dict keys stay free of the compiled wrapper's prefix.
    """
    compiled = torch.compile(model, **compile_kwargs)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        # Limitation: a batch of 1 still recompiles once, because torch specializes sizes 0 and 1.
        torch._dynamo.maybe_mark_dynamic(inputs, 0)
        return compiled(inputs)

    return forward
