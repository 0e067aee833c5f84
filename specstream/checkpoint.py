"""Atomic checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint contains plain data only: dicts, lists, tuples, strings, numbers, None and tensors,
e.g. model and optimizer state dicts, the epoch, RNG states and the run config. Restricting the
content this way means loading never runs code stored in the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from specstream.atomic import atomic_write

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
_FORMAT_KEY = "specstream_checkpoint_format"

_PLAIN_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device)
_PLAIN_CONTAINER_TYPES = (dict, list, tuple, set, frozenset)  # subclasses such as OrderedDict, torch.Size too


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt or not written by save_checkpoint."""


def _check_plain(value, key_path: str) -> None:
    # np.float64 subclasses float but pickles as a NumPy object, which weights-only loading rejects.
    if isinstance(value, _PLAIN_LEAF_TYPES) and not isinstance(value, np.generic):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(
                    f"checkpoint key {key!r} at {key_path} has type {type(key).__name__}; use str or int keys"
                )
            _check_plain(item, f"{key_path}[{key!r}]")
        return
    if isinstance(value, _PLAIN_CONTAINER_TYPES):
        for index, item in enumerate(value):
            _check_plain(item, f"{key_path}[{index}]")
        return
    hint = " (convert NumPy arrays with torch.from_numpy and NumPy scalars with .item())"
    raise ValueError(
        f"checkpoint value at {key_path} has type {type(value).__name__}, which "
        f"torch.load(weights_only=True) would reject; store tensors or plain Python values{hint}"
    )


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, object]) -> Path:
    """Write `state` to `path` atomically and return the path.

    The file is written under a temporary name in the same directory, synced to disk and then
    renamed over `path`, so `path` always contains either the previous or the new complete
    checkpoint. Raises ValueError for content that weights-only loading would reject.
    """
    path = Path(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint state must be a mapping (dict), got {type(state).__name__}")
    _check_plain(dict(state), "state")
    envelope = {_FORMAT_KEY: CHECKPOINT_FORMAT_VERSION, "state": dict(state)}
    with atomic_write(path, "wb", fsync=True) as stream:
        torch.save(envelope, stream)
    logger.debug("saved checkpoint %s", path)
    return path


def _verify_archive(path: Path) -> None:
    """Check the zip structure and every member's CRC32, which torch.load does not verify."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a torch checkpoint ({error}); "
            "delete it and resume from an earlier checkpoint, or restart the run"
        ) from error
    if bad_member is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: member {bad_member!r} fails its CRC check; "
            "delete it and resume from an earlier checkpoint, or restart the run"
        )


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu", verify: bool = True
) -> dict:
    """Load a checkpoint written by save_checkpoint and return its state dict.

    Loading uses `torch.load(weights_only=True)`, so it never runs code stored in the file.
    With `verify` (the default), every member's CRC32 is checked first, which reads the
    file one extra time. Raises FileNotFoundError for a missing file and CheckpointError
    (a ValueError) for a truncated, corrupt or foreign file; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if verify:
        _verify_archive(path)

    try:
        envelope = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} contains objects that weights-only loading rejects, "
            f"so save_checkpoint did not write it ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({error}); "
            "delete it and resume from an earlier checkpoint, or restart the run"
        ) from error

    if not isinstance(envelope, dict) or envelope.get(_FORMAT_KEY) != CHECKPOINT_FORMAT_VERSION:
        found = envelope.get(_FORMAT_KEY) if isinstance(envelope, dict) else type(envelope).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a specstream checkpoint of format version "
            f"{CHECKPOINT_FORMAT_VERSION} (found {found!r}); write it with save_checkpoint"
        )
    return envelope["state"]
