"""The distributed world: which rank this process is, how many there are, and its data-loader worker.

Vocabulary: world_size processes (ranks) take part, local_world_size of them on each node.
rank is the global index of a process, local_rank its index on its node and node_rank the
index of the node. Inside a DataLoader worker, worker_id and num_workers split a rank's share further.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_LAUNCH_HINT = (
    "launch with torchrun --nproc-per-node N, which sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class World:
    """Position of this process among all training processes. The defaults describe a single process."""

    rank: int = 0
    """Global rank, 0 <= rank < world_size."""
    local_rank: int = 0
    """Rank on this node, 0 <= local_rank < local_world_size, which is also the index of this rank's GPU."""
    world_size: int = 1
    """Number of processes in all."""
    local_world_size: int = 1
    """Number of processes on each node. world_size must be a multiple of it."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"World.{field.name} must be an int, got {value!r}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if not 1 <= self.local_world_size <= self.world_size:
            raise ValueError(
                f"local_world_size must be in [1, world_size={self.world_size}], got {self.local_world_size}"
            )
        if self.world_size % self.local_world_size:
            # Limitation: nodes with different numbers of ranks are not supported.
            raise ValueError(
                f"world_size={self.world_size} is not a multiple of local_world_size={self.local_world_size}; "
                "run the same number of ranks on every node"
            )
        if not 0 <= self.local_rank < self.local_world_size:
            raise ValueError(
                f"local_rank must be in [0, local_world_size={self.local_world_size}), got {self.local_rank}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> World:
        """Read the world from torchrun's environment variables (default: os.environ).

        With none of RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE set, returns the
        single-process world. RANK and WORLD_SIZE must be set together. LOCAL_WORLD_SIZE
        defaults to WORLD_SIZE (one node) and LOCAL_RANK to RANK modulo LOCAL_WORLD_SIZE.
        """
        environ = os.environ if environ is None else environ
        names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
        values = {name: _read_int(environ, name) for name in names}
        if all(value is None for value in values.values()):
            return cls()
        if values["RANK"] is None or values["WORLD_SIZE"] is None:
            found = ", ".join(f"{name}={environ[name]}" for name in names if name in environ)
            raise ValueError(f"RANK and WORLD_SIZE must both be set, found only {found}; {_LAUNCH_HINT}")

        world_size = values["WORLD_SIZE"]
        local_world_size = values["LOCAL_WORLD_SIZE"] if values["LOCAL_WORLD_SIZE"] is not None else world_size
        local_rank = values["LOCAL_RANK"]
        if local_rank is None:
            local_rank = values["RANK"] % local_world_size if local_world_size > 0 else 0
        try:
            return cls(
                rank=values["RANK"],
                local_rank=local_rank,
                world_size=world_size,
                local_world_size=local_world_size,
            )
        except ValueError as error:
            raise ValueError(f"invalid distributed environment variables: {error}; {_LAUNCH_HINT}") from error

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the rank that logs, writes results and saves checkpoints."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """True on local rank 0 of each node."""
        return self.local_rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return self.world_size // self.local_world_size

    @property
    def node_rank(self) -> int:
        """Index of this node, assuming torchrun's numbering rank = node_rank * local_world_size + local_rank."""
        return self.rank // self.local_world_size

    def device(self) -> torch.device:
        """Return this rank's device: GPU local_rank when CUDA is available, else the CPU."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        n_gpus = torch.cuda.device_count()
        if self.local_rank >= n_gpus:
            raise ValueError(
                f"local_rank={self.local_rank} has no GPU: this node has {n_gpus}; "
                f"start at most {n_gpus} ranks per node (torchrun --nproc-per-node {n_gpus})"
            )
        return torch.device("cuda", self.local_rank)


def _read_int(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer; {_LAUNCH_HINT}") from None


def worker_info() -> tuple[int, int]:
    """Return (worker_id, num_workers) of the current DataLoader worker, or (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return info.id, info.num_workers


def init_distributed(world: World, backend: str | None = None, timeout: timedelta | None = None) -> str | None:
    """Join the default process group for `world` and return the backend used.

    The backend defaults to nccl when CUDA is available and gloo otherwise. A single-process
    world starts no process group and returns None. The rendezvous reads MASTER_ADDR and
    MASTER_PORT from the environment, as torchrun sets them.
    """
    if not world.is_distributed:
        return None
    if dist.is_initialized():
        logger.debug("process group already initialized with backend %s", dist.get_backend())
        return dist.get_backend()
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not set for world_size={world.world_size}; {_LAUNCH_HINT}")

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(world.device())
    kwargs = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.world_size, **kwargs)
    logger.info(
        "joined process group: backend=%s rank=%d local_rank=%d world_size=%d",
        backend, world.rank, world.local_rank, world.world_size,
    )
    return backend


def cleanup() -> None:
    """Leave the default process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
