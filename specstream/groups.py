"""Experiment groups: named sets of (model, input) runs with the reference hyperparameters.

A group is plain data. Add one by editing GROUPS or by passing a JSON file to `specstream run --groups-file`
in this form:

    {"MY_GROUP": {"models": ["mlp_2L_1024"], "inputs": ["flux_only", "standardized"],
                  "epochs": 20, "batch_size": 1024, "lr": 1e-3, "train_size": 100000}}

Missing keys take the values of DEFAULTS, or those of the built-in group of the same name, so
{"MLP_100k": {"epochs": 1}} shortens that group. The keys are GROUP_KEYS: models and inputs are lists of
names from the model zoo and INPUT_MODES, targets a list of label names, input_norm true or false.
"""

from __future__ import annotations

import difflib
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
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: group {name} must be an object of settings, found {type(spec).__name__}")
        merged = {**groups.get(name, {}), **spec}  # a built-in group's settings not given stay as they are
        check_group(merged, f"{path}: group {name}")
        groups[name] = merged
    return groups


GROUP_KEYS = ("models", "inputs", "epochs", "batch_size", "lr", "weight_decay", "patience", "train_size",
              "targets", "input_norm")
"""The settings a group may have."""


def check_group(spec: dict, where: str) -> None:
    """Raise ValueError naming `where` and the key when a group's settings are unknown or of the wrong kind."""
    from specstream.kernels.arguments import INPUT_MODES
    from specstream.models import MODEL_ZOO

    for key in spec:
        if key not in GROUP_KEYS:
            close = difflib.get_close_matches(key, GROUP_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(GROUP_KEYS)}")
    for key, allowed, example in (("models", MODEL_ZOO, "mlp_2L_256"), ("inputs", INPUT_MODES, "flux_only"),
                                  ("targets", None, "log_g")):
        values = spec.get(key, DEFAULTS.get(key))
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{where}: {key!r} must be a non-empty list of names, such as [\"{example}\"], "
                             f"got {values!r}")
        unknown = [v for v in values if allowed is not None and v not in allowed]
        if unknown:
            raise ValueError(f"{where}: unknown {key} {unknown}; known {key}: {', '.join(sorted(allowed))}")
    for key, minimum in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("train_size", 1)):
        value = spec.get(key)
        if value is None and key == "train_size":
            continue
        if key in spec and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ValueError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    for key in ("lr", "weight_decay"):
        value = spec.get(key)
        if key in spec and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
                            or (key == "lr" and value == 0)):
            raise ValueError(f"{where}: {key!r} must be a number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}")
    if "input_norm" in spec and not isinstance(spec["input_norm"], bool):
        raise ValueError(f"{where}: 'input_norm' must be true or false, got {spec['input_norm']!r}")


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
