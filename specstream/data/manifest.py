"""Find a shard set (a directory or a URL template) and read its manifest.

A source is one of
- a local directory that contains `manifest.json` and the shards, or the path of that `manifest.json`;
- a URL template with `{name}` where the file name goes, e.g. `pipe:aws s3 cp s3://bucket/set/{name} -`
  or `/mnt/shared/set/{name}`;
- an http(s) or other URL of the directory, e.g. `https://host/set/` (file names are appended);
- a list of locations (paths or URLs) that contains the manifest and every shard to be read, each
  recognised by the file name it contains (`manifest.json`, `train-000000.tar`, ...).
Non-local files are opened with webdataset's `gopen`, which runs `pipe:` commands in a shell and reads
http(s) URLs with curl.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from specstream.shards.format import FORMAT_VERSION, MANIFEST_NAME, ROLES

logger = logging.getLogger(__name__)

FILE_NAME = re.compile(r"manifest\.json|(?:train|val|test)-\d{6}\.tar")
REQUIRED_KEYS = ("format_version", "sources", "n_pixels", "dtype", "has_mask", "label_names", "splits", "stats",
                 "label_stats", "wave")


@dataclass(frozen=True)
class ShardSource:
    """Location of the manifest and shards of one shard set."""

    template: str  # location of a file, with "{name}" in place of its file name
    local_dir: Path | None  # the directory when the files are local, else None
    locations: tuple = ()  # (file name, location) pairs of a source given as a list; they replace the template

    def url(self, name: str) -> str:
        """Return the location (path or URL) of file `name`."""
        if self.locations:
            found = dict(self.locations).get(name)
            if found is None:
                raise FileNotFoundError(f"{name} is missing from the list of shard locations; add its path or URL")
            return found
        return self.template.replace("{name}", name)

    def local_path(self, name: str) -> Path | None:
        """Return the local path of file `name`, or None when the source is not local."""
        return None if self.local_dir is None else self.local_dir / name

    def open(self, name: str):
        """Open file `name` for binary reading (a local file, or a webdataset gopen stream)."""
        path = self.local_path(name)
        if path is not None:
            return open(path, "rb")
        from webdataset.gopen import gopen

        return gopen(self.url(name), "rb")

    def __str__(self) -> str:
        if self.locations:
            return f"a list of {len(self.locations)} locations"
        return str(self.local_dir) if self.local_dir is not None else self.template


def _is_url(text: str) -> bool:
    scheme = urlparse(text).scheme
    return text.startswith("pipe:") or (len(scheme) > 1 and scheme != "file")


def _source_from_list(locations: list) -> ShardSource:
    """Return the ShardSource of a list of locations, keyed by the shard-set file name each one contains."""
    pairs = []
    for location in map(str, locations):
        names = FILE_NAME.findall(location)
        if len(set(names)) != 1:
            raise ValueError(f"shard location {location!r} must contain exactly one file name of a shard set "
                             f"(manifest.json or SPLIT-NNNNNN.tar), found {sorted(set(names))}")
        pairs.append((names[0], location))
    if MANIFEST_NAME not in dict(pairs):
        raise ValueError(f"the list of shard locations has no {MANIFEST_NAME}; add the manifest's path or URL")
    return ShardSource("", None, tuple(pairs))


def resolve_source(source: str | Path | ShardSource | list | tuple) -> ShardSource:
    """Return the ShardSource of a directory, a manifest path, a URL template, a directory URL or a list."""
    if isinstance(source, ShardSource):
        return source
    if isinstance(source, (list, tuple)):
        return _source_from_list(list(source))
    text = str(source)
    if text.startswith("file://"):
        text = urlparse(text).path
    if "{name}" in text:
        if _is_url(text):
            return ShardSource(text, None)
        directory = Path(text.replace("{name}", MANIFEST_NAME)).parent
        return ShardSource(str(directory / "{name}"), directory)
    if _is_url(text):
        if text.startswith("pipe:"):
            raise ValueError(f"pipe: source {text!r} has no {{name}} placeholder; write the command with {{name}} "
                             "where the file name goes, e.g. 'pipe:aws s3 cp s3://bucket/set/{name} -'")
        return ShardSource(text.rstrip("/") + "/{name}", None)
    path = Path(text)
    directory = path.parent if path.suffix == ".json" else path
    return ShardSource(str(directory / "{name}"), directory)


def read_manifest(source: str | Path | ShardSource) -> dict:
    """Read and check the manifest of a shard set (see the module docstring for the accepted sources).

    Raises FileNotFoundError when a local manifest is missing and ValueError when it is unreadable, was
    written by another format version, or misses a key.
    """
    shard_source = resolve_source(source)
    location = shard_source.url(MANIFEST_NAME)
    local = shard_source.local_path(MANIFEST_NAME)
    if local is not None and not local.is_file():
        raise FileNotFoundError(f"manifest not found: {local}; write the shards first with "
                                f"`specstream shard INPUT... --out {shard_source.local_dir}`")
    try:
        with shard_source.open(MANIFEST_NAME) as handle:
            manifest = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{location}: unreadable manifest ({exc}); check the source, or rewrite the shards "
                         "with `specstream shard`") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{location}: the manifest must be a JSON object, found {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{location}: format_version is {version!r}, this specstream reads version "
                         f"{FORMAT_VERSION}; rewrite the shards with this version's `specstream shard`")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{location}: manifest is missing keys {missing}; rewrite the shards with "
                         "`specstream shard`")
    _check_counts(manifest, location)
    return manifest


def _check_counts(manifest: dict, location: str) -> None:
    """Raise ValueError when a split's or shard's n_samples differs from the sum over its shards or blocks."""
    for name, split in manifest["splits"].items():
        in_shards = 0
        for shard in split["shards"]:
            in_blocks = sum(int(block["n_samples"]) for block in shard["blocks"])
            if int(shard["n_samples"]) != in_blocks:
                raise ValueError(f"{location}: shard {shard['name']} has n_samples {shard['n_samples']}, but its "
                                 f"blocks contain {in_blocks}; the manifest was edited or damaged, so rewrite the "
                                 "shards with `specstream shard`")
            in_shards += in_blocks
        if int(split["n_samples"]) != in_shards:
            raise ValueError(f"{location}: splits.{name}.n_samples is {split['n_samples']}, but its shards contain "
                             f"{in_shards}; the manifest was edited or damaged, so rewrite the shards with "
                             "`specstream shard`")


@dataclass(frozen=True)
class SplitLayout:
    """The blocks of one split in storage order (ascending sample id), as flat arrays."""

    split: str
    shard_names: list  # (n_shards,) file names
    shard_sizes: np.ndarray  # (n_shards,) bytes
    shard_sha256: list  # (n_shards,) hex digests
    block_shard: np.ndarray  # (n_blocks,) int64 index into shard_names
    block_rows: np.ndarray  # (n_blocks,) int64 samples per block, after max_samples
    block_keys: list  # (n_blocks,) member-name prefixes
    block_members: list  # (n_blocks,) dict role -> (offset of the .npy file, .npy size in bytes)
    n_pixels: int
    dtype: np.dtype  # storage dtype of flux and error
    has_mask: bool
    label_names: list

    @property
    def n_samples(self) -> int:
        return int(self.block_rows.sum())

    @classmethod
    def from_manifest(cls, manifest: dict, split: str, max_samples: int | None = None) -> SplitLayout:
        """Collect the blocks of `split`; keep only the first `max_samples` samples when given."""
        if split not in manifest["splits"]:
            raise ValueError(f"unknown split {split!r}; the manifest has {sorted(manifest['splits'])}")
        if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                        or max_samples < 1):
            raise ValueError(f"max_samples must be an integer >= 1 or None, got {max_samples!r}")
        shards = manifest["splits"][split]["shards"]
        block_shard, block_rows, keys, members = [], [], [], []
        remaining = max_samples if max_samples is not None else np.iinfo(np.int64).max
        for shard_index, shard in enumerate(shards):
            for block in shard["blocks"]:
                rows = min(int(block["n_samples"]), remaining)
                if rows <= 0:
                    break
                block_shard.append(shard_index)
                block_rows.append(rows)
                keys.append(block["key"])
                members.append({role: tuple(block["members"][role]) for role in ROLES if role in block["members"]})
                remaining -= rows
        return cls(split, [s["name"] for s in shards], np.array([s["size_bytes"] for s in shards], np.int64),
                   [s.get("sha256") for s in shards], np.array(block_shard, np.int64),
                   np.array(block_rows, np.int64), keys, members, int(manifest["n_pixels"]),
                   np.dtype(manifest["dtype"]), bool(manifest["has_mask"]), list(manifest["label_names"]))


def stats_arrays(manifest: dict) -> dict:
    """Return the manifest's per-pixel training statistics as float32 arrays, the form the kernels take.

    Raises ValueError when an array has the wrong length, a non-finite value, or a negative spread or error.
    """
    arrays = {}
    n_pixels = int(manifest["n_pixels"])
    for key in ("flux_mean", "flux_std", "error_mean", "error_std"):
        values = np.asarray(manifest["stats"][key], dtype=np.float32)
        invalid = ~np.isfinite(values) if key == "flux_mean" else ~(np.isfinite(values) & (values >= 0))
        if values.shape != (n_pixels,):
            raise ValueError(f"manifest stats.{key} has shape {values.shape}, expected ({n_pixels},); rewrite the "
                             "shards with `specstream shard`")
        if invalid.any():
            pixel = int(np.flatnonzero(invalid)[0])
            count = int(invalid.sum())
            raise ValueError(f"manifest stats.{key} has {count} invalid value{'s' if count > 1 else ''} (first at "
                             f"pixel {pixel}: {values[pixel]}); rewrite the shards with `specstream shard`")
        arrays[key] = values
    return arrays
