"""Reading shard sets: the streaming SpectraLoader, whole-split arrays, and the manifest."""

from specstream.data.arrays import SplitArrays, load_split_arrays
from specstream.data.blocks import CorruptShardError
from specstream.data.loader import SpectraLoader
from specstream.data.manifest import ShardSource, read_manifest, resolve_source
from specstream.data.window import Batch

__all__ = ["Batch", "CorruptShardError", "ShardSource", "SpectraLoader", "SplitArrays", "load_split_arrays",
           "read_manifest", "resolve_source"]
