"""Shard writing: `specstream shard INPUT... --out DIR` turns survey files into train/val/test tar shards.

See `format` for the shard layout and `build.write_shards` for the procedure.
"""

from specstream.shards.build import ShardOptions, ShardResult, write_shards
from specstream.shards.format import FORMAT_VERSION, MANIFEST_NAME, SPLITS, shard_name

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "SPLITS", "ShardOptions", "ShardResult", "shard_name",
           "write_shards"]
