"""TrainConfig, the settings of one training run, and the command-line parser built from its fields."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import numbers
from pathlib import Path

from specstream.data.blocks import READ_MODES
from specstream.kernels import INPUT_MODES
from specstream.models import MODEL_ZOO

PRECISIONS = ("auto", "fp32", "bf16")
DATA_PATHS = ("auto", "streaming", "resident")
DEVICES = ("auto", "cpu", "cuda")

# Fields whose command-line spelling differs from "--" + the field name with dashes.
OPTION_NAMES = {"out_dir": "--out", "input_mode": "--input", "targets": "--target", "results_csv": "--results"}


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    """Settings of one training run. Defaults are the reference protocol of the 100k-spectra runs."""

    data: str
    """Shard directory (with manifest.json inside) or URL prefix."""
    out_dir: Path = Path("runs")
    """Runs root; the run writes its files to out_dir/experiment_id/."""
    experiment_id: str | None = None
    """Name of the run and of its directory; default "{group}-{model}-{input_mode}-s{seed}"."""
    group: str = "adhoc"
    """Experiment group the run belongs to, written to the results row."""
    model: str = "mlp_3L_1024"
    """Model zoo name."""
    input_mode: str = "flux_only"
    """Network input computed from the noisy flux: flux_only, whitening, standardized or noise_free."""
    targets: tuple[str, ...] = ("log_g",)
    """Label columns to predict (comma list on the command line)."""
    epochs: int = 20
    """Maximum number of passes over the training split."""
    batch_size: int = 1024
    """Samples per step on each rank; the global batch is batch_size x world_size."""
    lr: float = 1e-3
    """Peak learning rate of AdamW, reached after the warm-up and annealed to 0 by a cosine."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    patience: int = 10
    """Epochs without a lower validation loss before training stops early."""
    warmup_epochs: float = 0.0
    """Epochs of linear learning-rate warm-up before the cosine annealing."""
    train_size: int | None = None
    """Train on the first N samples of the training split, in global sample id order; default all."""
    noise_level: float = 1.0
    """Scale of the drawn noise: inputs use flux + noise_level * error * N(0, 1)."""
    seed: int = 0
    """Seed of the weights, the training noise, the batch order and dropout."""
    input_norm: bool = False
    """Standardise each input pixel with its mean and std over the first epoch-0 training batches. Off (the
    default) feeds the raw input, as the reference study did."""
    dropout: float = 0.1
    """Dropout probability of the model's hidden layers."""
    num_workers: int = 0
    """DataLoader worker processes per rank on the streaming data path; 0 builds batches on threads, which
    measured about 3x faster than 2 worker processes on a 2-core machine."""
    read_mode: str = "mmap"
    """Read method of the streaming path for local shards: mmap (memory maps, no copy) or pread (positioned
    reads, for file systems where mapping files is unwise)."""
    cache_dir: Path | None = None
    """Folder where shards of a pipe: or http source are copied on first use, so that each is fetched once."""
    compile: bool = True
    """Compile the model with torch.compile where it works (falls back to eager with a warning)."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16."""
    data_path: str = "auto"
    """resident (split in device memory), streaming (shards read by workers) or auto (resident if it fits)."""
    resume: bool = False
    """Continue from out_dir/experiment_id/checkpoint.pt."""
    results_csv: Path | None = None
    """CSV that gets the run's result row; default out_dir/results.csv."""
    device: str = "auto"
    """auto (this rank's GPU when CUDA is available, else the CPU), cpu or cuda."""
    log_every: int = 50
    """Steps between step log lines."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if isinstance(self.targets, str):
            self.targets = tuple(name.strip() for name in self.targets.split(","))
        self.targets = tuple(self.targets)
        _check_choice("model", self.model, sorted(MODEL_ZOO))
        _check_choice("input_mode", self.input_mode, INPUT_MODES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("data_path", self.data_path, DATA_PATHS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("read_mode", self.read_mode, READ_MODES)
        self.cache_dir = None if self.cache_dir is None else Path(self.cache_dir)
        self._check_numbers()
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a shard directory or URL prefix, got {self.data!r}")
        if not self.targets or any(not name for name in self.targets) or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must be distinct, non-empty label names, got {list(self.targets)}")
        if self.experiment_id is None:
            self.experiment_id = f"{self.group}-{self.model}-{self.input_mode}-s{self.seed}"
        _check_directory_name("experiment_id", self.experiment_id)
        self.results_csv = self.out_dir / "results.csv" if self.results_csv is None else Path(self.results_csv)

    def _check_numbers(self) -> None:
        for name in ("epochs", "batch_size", "patience", "log_every"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_workers", self.num_workers, minimum=0)
        _check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        if self.train_size is not None:
            _check_int("train_size", self.train_size, minimum=1)
        _check_float("lr", self.lr, lambda value: value > 0, "> 0")
        _check_float("weight_decay", self.weight_decay, lambda value: value >= 0, ">= 0")
        _check_float("noise_level", self.noise_level, lambda value: value >= 0, ">= 0")
        _check_float("dropout", self.dropout, lambda value: 0 <= value < 1, "in [0, 1)")
        _check_float("warmup_epochs", self.warmup_epochs, lambda value: 0 <= value <= self.epochs,
                     f"in [0, epochs={self.epochs}]")
        if self.input_mode == "whitening" and self.noise_level == 0:
            raise ValueError("noise_level must be > 0 with input_mode 'whitening', which divides by it; "
                             "use input_mode 'noise_free' for noise-free inputs")

    @property
    def run_dir(self) -> Path:
        """Directory of this run's files."""
        return self.out_dir / self.experiment_id

    def to_dict(self) -> dict:
        """Return the fields as JSON-ready values (paths as strings, targets as a list)."""
        values = dataclasses.asdict(self)
        values["out_dir"] = str(self.out_dir)
        values["results_csv"] = str(self.results_csv)
        values["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        values["targets"] = list(self.targets)
        return values


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_int(name: str, value, *, minimum: int, maximum: int | None = None) -> None:
    valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not valid or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def _check_float(name: str, value, is_valid, expected: str) -> None:
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or not is_valid(value):
        raise ValueError(f"{name} must be a finite number {expected}, got {value!r}")


def _check_directory_name(name: str, value) -> None:
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"{name} must be a plain directory name without slashes, got {value!r}")


def field_docs(cls) -> dict[str, str]:
    """Return the docstring under each dataclass field of `cls`, read from its source code."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}  # the source is not available (e.g. a zip import); the help text lists options without docs
    body = tree.body[0].body
    docs = {}
    for statement, following in zip(body, body[1:]):
        is_field = isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if is_field and is_doc and isinstance(following.value.value, str):
            docs[statement.target.id] = following.value.value
    return docs


def build_parser(prog: str = "python -m specstream.train") -> argparse.ArgumentParser:
    """Build the command-line parser: one option per TrainConfig field, plus --nproc."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train one model on a shard directory, in one process or under torchrun "
                    "(torchrun --nproc-per-node N -m specstream.train ...).",
    )
    docs = field_docs(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        option = OPTION_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
        kwargs = {"dest": field.name, "help": docs.get(field.name, "")}
        if field.name in ("compile", "input_norm"):
            kwargs.update(action=argparse.BooleanOptionalAction, default=field.default)
        elif field.name == "resume":
            kwargs.update(action="store_true")
        elif field.name == "data":
            kwargs.update(required=True)
        else:
            kwargs.update(default=field.default, type=_option_type(field.name))
            if field.default is not None:  # the docstrings of fields defaulting to None state what None means
                kwargs["help"] += f" (default: {_default_text(field.default)})"
        parser.add_argument(option, **kwargs)
    parser.add_argument(
        "--nproc", type=int, default=1,
        help="Processes to start on this machine; above 1, the command reruns itself under "
             "torchrun --standalone --nproc-per-node N (default: 1).",
    )
    return parser


def _option_type(name: str):
    if name in ("epochs", "batch_size", "patience", "train_size", "seed", "num_workers", "log_every"):
        return int
    if name in ("lr", "weight_decay", "warmup_epochs", "noise_level", "dropout"):
        return float
    if name in ("out_dir", "results_csv"):
        return Path
    return str


def _default_text(default) -> str:
    return ",".join(default) if isinstance(default, tuple) else str(default)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a TrainConfig from parsed arguments; raises ValueError naming an invalid field."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values)
