"""Device, precision, model, DDP wrapper, torch.compile and optimizer of a training run."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from specstream.models import build_model, compile_model, count_parameters
from specstream.training.input_norm import InputStandardizer
from specstream.world import World

logger = logging.getLogger(__name__)

DROPOUT_SEED_TAG = 0xD50  # separates the per-epoch dropout seeds from other seeds derived from the run seed


def resolve_device(name: str, world: World) -> torch.device:
    """Return the device for "auto", "cpu" or "cuda"; raise ValueError for cuda without a GPU."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but torch finds no CUDA device; pass --device cpu or auto")
    return world.device()


def use_bf16(precision: str, device: torch.device) -> bool:
    """Return whether to run the forward pass under bf16 autocast (auto: on CUDA only)."""
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def autocast_factory(device: torch.device, bf16: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """Return a function that opens the run's autocast context (a no-op context in fp32)."""
    if not bf16:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)


def compile_support(device: torch.device) -> tuple[bool, str]:
    """Return (whether torch.compile can run here, the reason when it cannot)."""
    try:
        from torch._dynamo import is_dynamo_supported

        if not is_dynamo_supported():
            return False, "torch.compile (dynamo) does not support this Python version or platform"
    except ImportError:
        return False, "this torch build has no torch._dynamo"
    if device.type == "cpu" and not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return False, "inductor's CPU backend needs a C++ compiler (g++, c++ or clang++) and none is on PATH"
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return False, "this torch build cannot check for Triton"
        if not has_triton():
            return False, "inductor's CUDA backend needs Triton, which is not installed"
    return True, ""


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Return the torch RNG seed for dropout in `epoch` on `rank`: a pure function, so a resumed run repeats it."""
    state = np.random.SeedSequence([seed, epoch, rank, DROPOUT_SEED_TAG]).generate_state(1, dtype=np.uint64)
    return int(state[0])


@dataclass
class ModelBundle:
    """The trained module and the functions and optimizer that act on it."""

    model: nn.Module  # plain module: its state_dict is what checkpoints store
    train_module: nn.Module  # DDP wrapper under several ranks, else `model`
    train_forward: Callable[[torch.Tensor], torch.Tensor]
    eval_forward: Callable[[torch.Tensor], torch.Tensor]  # never goes through DDP, so ranks need not be in step
    optimizer: torch.optim.Optimizer
    n_parameters: int
    compiled: bool


def build_bundle(config, *, n_pixels: int, device: torch.device, world: World,
                 input_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> ModelBundle:
    """Build the model on `device` with the seed's initial weights, wrap it for DDP and compile it.

    With `input_stats` (per-pixel mean, std), the model standardises its input with them.
    """
    torch.manual_seed(config.seed)
    model = build_model(config.model, n_pixels=n_pixels, n_outputs=len(config.targets), dropout=config.dropout)
    if input_stats is not None:
        model = InputStandardizer(model, *input_stats)
    model = model.to(device)
    if device.type == "cuda" and any(isinstance(module, nn.Conv2d) for module in model.modules()):
        model = model.to(memory_format=torch.channels_last)  # cuDNN's preferred layout for bf16 convolutions

    train_module: nn.Module = model
    if world.is_distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        train_module = DistributedDataParallel(model, device_ids=device_ids)

    compiled = False
    if config.compile:
        supported, reason = compile_support(device)
        if supported:
            compiled = True
        else:
            logger.warning("running eagerly: %s", reason)
    if compiled:
        train_forward = compile_model(train_module)
        eval_forward = compile_model(model) if world.is_distributed else train_forward
    else:
        train_forward = eval_forward = train_module
        if world.is_distributed:
            eval_forward = model

    # The fused CUDA kernel updates all parameters in one launch; the CPU keeps torch's default implementation.
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda" or None)
    return ModelBundle(model, train_module, train_forward, eval_forward, optimizer, count_parameters(model),
                       compiled)
