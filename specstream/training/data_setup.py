"""The data of a training run: label scaling, the choice between resident and streaming, and the loaders."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from specstream.data import SpectraLoader, read_manifest
from specstream.data.manifest import resolve_source, stats_arrays
from specstream.resident import ResidentLoader, load_rank_part, resident_bytes
from specstream.training.model_setup import compile_support
from specstream.world import World

logger = logging.getLogger(__name__)

RESIDENT_GPU_SHARE = 0.8  # resident when a rank's data takes at most this share of its GPU's free memory
RESIDENT_RAM_SHARE = 0.25  # on the CPU: resident when all local ranks' data take at most this share of free RAM
STREAMING_WINDOW_ROWS = 8192  # SpectraLoader's default shuffle window; smaller eval parts get no workers
GIB = 2**30


@dataclass
class TrainingData:
    """Loaders and facts about the data of one run."""

    train: object  # ResidentLoader or SpectraLoader: len(), set_epoch(), iteration over Batch
    val: object
    test: object
    data_path: str  # "resident" or "streaming"
    data_path_reason: str
    n_pixels: int
    n_train: int  # training samples used (after train_size), all ranks together
    n_val: int
    n_test: int
    label_mean: np.ndarray  # (n_targets,) float64, training split mean of each target label
    label_std: np.ndarray  # (n_targets,) float64
    shard_set: dict  # shard_set_identity() of the data, which a resumed run compares with its checkpoint's


def shard_set_identity(source: str, manifest: dict) -> dict:
    """Return what identifies a shard set: its location, its manifest's digest and its split sizes.

    The digest is the SHA-256 of the manifest as canonical JSON (sorted keys, no spaces). The manifest records
    every shard's size and checksum, the input files' checksums and the split sizes, so two shard sets with
    equal digests hold the same spectra in the same splits, wherever they are stored.
    """
    shard_source = resolve_source(source)
    location = str(shard_source.local_dir.resolve()) if shard_source.local_dir is not None else str(shard_source)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return {
        "data": location,
        "manifest_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "n_samples": {name: int(manifest["splits"][name]["n_samples"])
                      for name in ("train", "val", "test") if name in manifest["splits"]},
    }


def label_scaling(manifest: dict, targets, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the training-split mean and standard deviation of each target, from the manifest's label_stats."""
    missing = [name for name in targets if name not in manifest["label_names"]]
    if missing:
        raise ValueError(f"targets {missing} are not label columns of {source} (it has "
                         f"{', '.join(manifest['label_names'])}); pass --target with those names")
    means, stds = [], []
    for name in targets:
        stats = manifest["label_stats"].get(name) or {}
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None or std is None or not math.isfinite(std) or std <= 0:
            raise ValueError(
                f"label {name!r} of {source} has training-split mean {mean} and std {std}; a target needs a finite "
                "std > 0 (a label that is unset or constant in the training split cannot be learned)"
            )
        means.append(mean)
        stds.append(std)
    return np.array(means, dtype=np.float64), np.array(stds, dtype=np.float64)


def available_ram_bytes() -> int:
    """Return MemAvailable from /proc/meminfo, or the free physical pages where that file is missing."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_data_path(requested: str, manifest: dict, sizes: dict, world: World,
                     device: torch.device) -> tuple[str, str]:
    """Return ("resident" or "streaming", the reason) for --data-path `requested` and split `sizes`."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    n_pixels, n_labels = int(manifest["n_pixels"]), len(manifest["label_names"])
    per_rank = sum(resident_bytes(math.ceil(n / world.world_size), n_pixels, itemsize, bool(manifest["has_mask"]),
                                  n_labels) for n in sizes.values())
    needed = f"{per_rank / GIB:.2f} GiB per rank for train, val and test"
    if requested != "auto":
        return requested, f"--data-path {requested} ({needed})"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fits = per_rank <= RESIDENT_GPU_SHARE * free
        comparison = f"{free / GIB:.2f} GiB free on {device}, resident up to {RESIDENT_GPU_SHARE:.0%} of it"
    else:
        free = available_ram_bytes()
        fits = per_rank * world.local_world_size <= RESIDENT_RAM_SHARE * free
        comparison = (f"{world.local_world_size} rank(s) on this host, {free / GIB:.2f} GiB RAM available, "
                      f"resident up to {RESIDENT_RAM_SHARE:.0%} of it")
    return ("resident" if fits else "streaming"), f"--data-path auto: {needed}; {comparison}"


def build_data(config, world: World, device: torch.device) -> TrainingData:
    """Read the manifest, check the splits against the config and build the three loaders."""
    manifest = read_manifest(config.data)
    label_mean, label_std = label_scaling(manifest, config.targets, config.data)
    sizes = {split: int(manifest["splits"][split]["n_samples"]) if split in manifest["splits"] else 0
             for split in ("train", "val", "test")}
    if config.train_size is not None:
        if config.train_size > sizes["train"]:
            raise ValueError(f"train_size={config.train_size} exceeds the {sizes['train']} samples of the training "
                             f"split of {config.data}; lower --train-size or omit it to use them all")
        sizes["train"] = config.train_size
    for split in ("val", "test"):
        if sizes[split] < world.world_size:
            raise ValueError(f"the {split} split of {config.data} has {sizes[split]} samples, fewer than the "
                             f"{world.world_size} ranks; write the shards with a larger {split} split")
    global_batch = config.batch_size * world.world_size
    if sizes["train"] < global_batch:
        raise ValueError(f"the training split has {sizes['train']} samples (after train_size), fewer than one "
                         f"global batch (batch_size {config.batch_size} x {world.world_size} ranks); lower "
                         "--batch-size")

    data_path, reason = choose_data_path(config.data_path, manifest, sizes, world, device)
    if world.is_main:
        logger.info("data path %s: %s", data_path, reason)
        if data_path == "resident" and config.read_mode != "mmap":
            logger.info("read_mode %r applies to the streaming path only; the resident path reads each split "
                        "once with positioned reads", config.read_mode)
    build = _resident_loaders if data_path == "resident" else _streaming_loaders
    train, val, test = build(config, manifest, world, device)
    return TrainingData(train, val, test, data_path, reason, int(manifest["n_pixels"]), sizes["train"],
                        sizes["val"], sizes["test"], label_mean, label_std, shard_set_identity(config.data, manifest))


def _resident_loaders(config, manifest, world: World, device: torch.device):
    stats = stats_arrays(manifest) if config.input_mode == "standardized" else None
    # On a GPU the torch twin draws the noise; compiling its generator fuses ~200 passes over each batch.
    compile_draws = config.compile and device.type == "cuda" and compile_support(device)[0]
    common = dict(targets=config.targets, batch_size=config.batch_size, device=device, mode=config.input_mode,
                  noise_level=config.noise_level, seed=config.seed, rank=world.rank, stats=stats,
                  compile_draws=compile_draws)
    loaders = []
    for split in ("train", "val", "test"):
        max_samples = config.train_size if split == "train" else None
        part = load_rank_part(config.data, split, rank=world.rank, world_size=world.world_size,
                              max_samples=max_samples, cache_dir=config.cache_dir)
        samples_per_epoch = None
        if split == "train":
            # Drop the last partial global batch, as the streaming loader does, so both paths run the same steps.
            n_train = config.train_size or int(manifest["splits"]["train"]["n_samples"])
            samples_per_epoch = n_train // world.world_size // config.batch_size * config.batch_size
        loaders.append(ResidentLoader(part, shuffle=split == "train", samples_per_epoch=samples_per_epoch,
                                      **common))
        logger.debug("rank %d keeps %d %s samples (%.1f MiB)", world.rank, len(part.sample_ids), split,
                     part.nbytes / 2**20)
    return tuple(loaders)


def _streaming_loaders(config, manifest, world: World, device: torch.device):
    common = dict(batch_size=config.batch_size, rank=world.rank, world_size=world.world_size, seed=config.seed,
                  mode=config.input_mode, noise_level=config.noise_level, targets=tuple(config.targets),
                  pin_memory=device.type == "cuda", read_mode=config.read_mode, cache_dir=config.cache_dir)
    train = SpectraLoader(config.data, "train", num_workers=config.num_workers, max_samples=config.train_size,
                          **common)
    eval_loaders = []
    for split in ("val", "test"):
        per_rank = math.ceil(int(manifest["splits"][split]["n_samples"]) / world.world_size)
        # One window or less: a worker process would only add its start-up time to every evaluation.
        num_workers = config.num_workers if per_rank > STREAMING_WINDOW_ROWS else 0
        eval_loaders.append(SpectraLoader(config.data, split, num_workers=num_workers, **common))
    return (train, *eval_loaders)
