"""Training: TrainConfig and train(config), run by `python -m specstream.train` or torchrun."""

from specstream.training.config import TrainConfig, build_parser, config_from_args
from specstream.training.loop import train

__all__ = ["TrainConfig", "build_parser", "config_from_args", "train"]
