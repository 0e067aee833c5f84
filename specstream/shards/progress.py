"""The progress file of a `specstream shard` run, written whenever a shard is closed, read by --resume.

It is one `.npz` file (replaced atomically): a JSON record of what is done (closed shards per split, where
reading restarts, bad rows so far) plus arrays (ids still pending per split, accumulator states). With it a
resumed run rebuilds exactly the state of the interrupted run at its last closed shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROGRESS_NAME = ".shard-progress.npz"


@dataclass
class SplitProgress:
    """State of one split writer at the checkpoint."""

    finished: list  # manifest entries of closed shards
    fed_through: int  # every id <= this of the split had been added
    n_dropped: int  # invalid rows of this split dropped before `read_from`
    pending_ids: np.ndarray  # ids added but not in a closed shard, ascending
    snapshot: dict  # accumulator states as of the last closed shard


@dataclass
class Progress:
    """A checkpoint of a whole run."""

    fingerprint: dict  # inputs and options; a resumed run must match it
    read_from: int  # first id of the chunk that reading restarts at
    problems: list  # ProblemLog records as of `read_from`
    splits: dict  # split name -> SplitProgress


def save_progress(out_dir: Path, progress: Progress) -> None:
    """Write the progress file under a temporary name, then rename it over the previous one."""
    meta = {"fingerprint": progress.fingerprint, "read_from": progress.read_from, "problems": progress.problems,
            "splits": {name: {"finished": split.finished, "fed_through": split.fed_through,
                              "n_dropped": split.n_dropped}
                       for name, split in progress.splits.items()}}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for name, split in progress.splits.items():
        arrays[f"pending/{name}"] = split.pending_ids
        arrays.update({f"snapshot/{name}/{key}": value for key, value in split.snapshot.items()})
    final = out_dir / PROGRESS_NAME
    tmp = out_dir / f"{PROGRESS_NAME}.partial"
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)


def load_progress(out_dir: Path) -> Progress | None:
    """Return the checkpoint in `out_dir`, or None when there is none; raise ValueError when it is unreadable."""
    path = out_dir / PROGRESS_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable progress file ({exc}); delete it and rerun without --resume") from exc
    splits = {}
    for name, record in meta["splits"].items():
        prefix = f"snapshot/{name}/"
        snapshot = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
        splits[name] = SplitProgress(record["finished"], int(record["fed_through"]), int(record["n_dropped"]),
                                     arrays[f"pending/{name}"].astype(np.int64), snapshot)
    return Progress(meta["fingerprint"], int(meta["read_from"]), meta["problems"], splits)
