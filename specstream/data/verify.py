"""Check every shard of a set against its manifest: size and SHA-256 checksum.

The loader checks sizes and headers as it reads, which catches truncated and rewritten shards, but not
bytes changed inside a shard of the right size (a bad disk, a partial copy over an old file). Comparing
checksums catches those, at the cost of reading every shard once.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable

from specstream.data.manifest import read_manifest, resolve_source
from specstream.shards.format import content_mismatch

logger = logging.getLogger(__name__)

READ_BYTES = 16 << 20


@dataclass(frozen=True)
class ShardCheck:
    """The outcome of checking one shard."""

    split: str
    name: str
    location: str
    problem: str  # empty when the shard matches its manifest entry


def verify_shards(source, splits: tuple[str, ...] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[ShardCheck]:
    """Read every shard of `source` (any form SpectraLoader accepts) and compare it with the manifest.

    `progress` is called with the bytes read. Returns one ShardCheck per shard, in manifest order.
    """
    source = resolve_source(source)
    manifest = read_manifest(source)
    checks = []
    for split, entry in manifest["splits"].items():
        if splits is not None and split not in splits:
            continue
        for shard in entry["shards"]:
            problem = _check_one(source, shard, progress)
            checks.append(ShardCheck(split, shard["name"], source.url(shard["name"]), problem))
            if problem:  # the caller reports the returned checks, so a warning here would print each twice
                logger.debug("shard %s: %s", source.url(shard["name"]), problem)
    return checks


def _check_one(source, shard: dict, progress: Callable[[int], None] | None) -> str:
    """Return what is wrong with one shard, or an empty string."""
    digest, size = hashlib.sha256(), 0
    try:
        with source.open(shard["name"]) as stream:
            while piece := stream.read(READ_BYTES):
                digest.update(piece)
                size += len(piece)
                if progress is not None:
                    progress(len(piece))
    except OSError as exc:
        return f"cannot be read ({exc})"
    problem = content_mismatch(size, digest.hexdigest(), int(shard["size_bytes"]), shard.get("sha256"))
    if not problem and not shard.get("sha256"):
        problem = "the manifest records no SHA-256 to compare with"
    return problem
