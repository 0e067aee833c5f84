"""Experiment groups: named sets of (model, input) runs with the reference hyperparameters.

A group is plain data. Add one by editing GROUPS or by passing a JSON file to `specstream run --groups-file`
in this form:

    {"MY_GROUP": {"models": ["mlp_2L_1024"], "inputs": ["flux_only", "standardized"],
                  "epochs": 20, "batch_size": 1024, "lr": 1e-3, "train_size": 100000}}

Missing keys take the values of DEFAULTS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Reference training protocol: AdamW (weight decay 1e-4), cosine annealing, early-stopping patience 10.
DEFAULTS = {"epochs": 20, "batch_size": 1024, "lr": 1e-3, "weight_decay": 1e-4, "patience": 10,
            "train_size": None, "targets": ["log_g"]}
RUN_100K = {"epochs": 20, "batch_size": 1024, "lr": 1e-3, "train_size": 100_000}
RUN_1M = {"epochs": 10, "batch_size": 2048, "lr": 5e-4, "train_size": 1_000_000}

GROUPS: dict[str, dict] = {
    "MLP_100k": {"models": ["mlp_3L_1024", "mlp_2L_2048", "mlp_3L_2048", "mlp_2L_1024", "mlp_3L_512"],
                 "inputs": ["flux_only"], **RUN_100K},
    "CNN_100k": {"models": ["cnn_4L_k5_bn"], "inputs": ["flux_only", "whitening"], **RUN_100K},
    "CNN_1M": {"models": ["cnn_4L_k5_wide"], "inputs": ["whitening"], **RUN_1M},
    "MLP_1M": {"models": ["mlp_2L_2048"], "inputs": ["whitening"], **RUN_1M},
    # The main job's small groups: minutes on a 2-core CPU. In a 6k-spectra, 15-epoch trial on stand-in data the
    # MLP reached validation R^2 ~ 0.24 with input standardisation and lr 3e-4, and stayed at ~ 0 without it.
    "DEMO_MLP": {"models": ["mlp_2L_256"], "inputs": ["flux_only", "whitening"],
                 "epochs": 15, "batch_size": 256, "lr": 3e-4, "train_size": None, "input_norm": True},
    # The CNN runs at about 270 spectra/s on 2 CPU cores, so the demo affords it 5 epochs on one input.
    "DEMO_CNN": {"models": ["cnn_4L_k5_bn"], "inputs": ["whitening"],
                 "epochs": 5, "batch_size": 256, "lr": 1e-3, "train_size": None, "input_norm": True},
}


@dataclass(kw_only=True)
class Experiment:
    """One training run of a group: a model, an input mode and its hyperparameters."""

    group: str
    model: str
    input_mode: str
    epochs: int
    batch_size: int  # per rank
    lr: float
    weight_decay: float
    patience: int
    train_size: int | None  # None: the whole training split
    input_norm: bool = False  # standardise the input per pixel (specstream.train --input-norm)
    targets: list = field(default_factory=lambda: ["log_g"])
    seed: int = 0

    @property
    def experiment_id(self) -> str:
        return f"{self.group}-{self.model}-{self.input_mode}-s{self.seed}"

    def as_dict(self) -> dict:
        return asdict(self)


def load_groups(path: str | Path | None = None) -> dict[str, dict]:
    """Return the built-in groups, updated with those of the JSON file at `path` when given."""
    groups = {name: dict(spec) for name, spec in GROUPS.items()}
    if path is None:
        return groups
    path = Path(path)
    try:
        extra = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"groups file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(extra, dict):
        raise ValueError(f"{path}: expected an object mapping group names to settings, found {type(extra).__name__}")
    for name, spec in extra.items():
        if not isinstance(spec, dict) or not spec.get("models") or not spec.get("inputs"):
            raise ValueError(f"{path}: group {name} needs non-empty 'models' and 'inputs' lists")
        groups[name] = spec
    return groups


def expand(names: list[str], groups: dict[str, dict], seeds: list[int] = (0,)) -> list[Experiment]:
    """Return the experiments of the named groups: every model x input x seed, in a stable order."""
    unknown = [name for name in names if name not in groups]
    if unknown:
        raise ValueError(f"unknown experiment groups {unknown}; known groups: {sorted(groups)}")
    known_fields = set(Experiment.__dataclass_fields__)
    experiments = []
    for name in names:
        spec = {**DEFAULTS, **groups[name]}
        settings = {k: v for k, v in spec.items() if k in known_fields and k not in ("group", "model", "input_mode")}
        for model in spec["models"]:
            for input_mode in spec["inputs"]:
                for seed in seeds:
                    experiments.append(Experiment(group=name, model=model, input_mode=input_mode,
                                                  **{**settings, "seed": seed}))
    return experiments
