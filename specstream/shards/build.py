"""`specstream shard`: read survey files once and write train/val/test tar shards plus a manifest.

One pass over the inputs in id order. Every chunk's rows are assigned to a split (`split.SplitRule`) and
appended to that split's SplitWriter, which buffers one block, so memory stays at one input chunk plus one
block per split whatever the input size. Training-split statistics accumulate per written block. Whenever
a shard is closed a progress file records the state, so `resume=True` continues an interrupted run and
ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from specstream.atomic import fsync_directory, make_folder
from specstream.io import ON_BAD_CHOICES
from specstream.shards import format as fmt
from specstream.shards.inputs import InputSet, ProblemLog
from specstream.shards.progress import PROGRESS_NAME, Progress, SplitProgress, load_progress, save_progress
from specstream.shards.split import SplitRule, resolve_size
from specstream.shards.stats import Float16Loss, TrainStats
from specstream.shards.writer import TMP_SUFFIX, ShardFinalizer, SplitWriter, sha256_file

logger = logging.getLogger(__name__)



@dataclasses.dataclass(kw_only=True)
class ShardOptions:
    """Options of `write_shards`; the defaults are those of `specstream shard`."""

    test_size: float = 1000
    """Test split: a count of samples (>= 1) or a fraction of all input spectra (< 1)."""
    val_size: float = 0.05
    """Validation split: a count of samples (>= 1) or a fraction of all input spectra (< 1)."""
    seed: int = 0
    """Seed of the split assignment."""
    dtype: str = "float32"
    """Storage dtype of flux and error: float32 or float16."""
    block_size: int = 1024
    """Samples per block (one group of .npy members); the loader's unit of reading."""
    shard_size_mb: float = 512.0
    """Target shard size in MB (10**6 bytes); a shard holds at least one block."""
    chunk_size: int = 4096
    """Spectra read from the input files per step."""
    on_bad: str = "raise"
    """Action on an invalid input row: "raise" stops with an error, "drop" leaves the row out and counts it."""
    fsync: bool = True
    """Sync each shard to disk before renaming it, so a crash never leaves a damaged shard."""

    def __post_init__(self) -> None:
        for name in ("test_size", "val_size"):
            value = getattr(self, name)
            if isinstance(value, float) and value >= 1 and value.is_integer():
                setattr(self, name, int(value))  # 1000.0 from the command line is the count 1000
        if self.dtype not in fmt.STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {fmt.STORAGE_DTYPES}, got {self.dtype!r}")
        if self.on_bad not in ON_BAD_CHOICES:
            raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {self.on_bad!r}")
        for name in ("block_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.shard_size_mb > 0:
            raise ValueError(f"shard_size_mb must be > 0, got {self.shard_size_mb!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


@dataclasses.dataclass
class ShardResult:
    """Outcome of one `write_shards` call."""

    manifest: dict
    out_dir: Path
    seconds: float  # wall time of this call
    bytes_written: int  # shard bytes written by this call (less than the total after a resume)
    spectra_read: int  # input spectra read by this call


def _fingerprint(inputs: InputSet, options: ShardOptions) -> dict:
    """Return what a resumed run must share with the interrupted one: the inputs and the options."""
    files = []
    for info in inputs.files:
        stat = info.path.stat()
        files.append({"path": str(info.path.resolve()), "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"format_version": fmt.FORMAT_VERSION, "inputs": files, "options": dataclasses.asdict(options)}


def _describe_changes(saved: dict, current: dict) -> str:
    """Return what differs between two fingerprints, as "name: saved value -> current value" items."""
    changes = []
    if saved.get("format_version") != current["format_version"]:
        changes.append(f"format_version: {saved.get('format_version')} -> {current['format_version']}")
    if saved.get("inputs") != current["inputs"]:
        before = [(f["path"], f["size_bytes"], f["mtime_ns"]) for f in saved.get("inputs", [])]
        now = [(f["path"], f["size_bytes"], f["mtime_ns"]) for f in current["inputs"]]
        changes.append(f"input files (path, size, modification time): {before} -> {now}")
    saved_options = saved.get("options", {})
    for name, value in current["options"].items():
        if saved_options.get(name) != value:
            changes.append(f"{name}: {saved_options.get(name)!r} -> {value!r}")
    return "; ".join(changes) or "unknown difference"


def _prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create `out_dir`, or check that its contents allow this run; remove leftovers of earlier runs."""
    make_folder(out_dir)
    # Temporary files alone do not block a new run: a run that failed before closing a shard leaves only those.
    ours = [p for p in out_dir.iterdir() if p.is_file() and (
        p.name in (fmt.MANIFEST_NAME, PROGRESS_NAME) or (p.suffix == ".tar" and p.name.split("-")[0] in fmt.SPLITS))]
    temporary = list(out_dir.glob(f".*{TMP_SUFFIX}"))  # partial files of an interrupted or failed run
    if overwrite:
        for path in ours + temporary:
            path.unlink()
        return
    has_progress = (out_dir / PROGRESS_NAME).exists()
    if ours and not resume:
        raise ValueError(f"{out_dir} already contains shards or a manifest; pass --resume to continue an "
                         "interrupted run, --overwrite to replace them, or choose another --out")
    finished = [p for p in ours if p.suffix == ".tar"]
    if resume and not has_progress and not (out_dir / fmt.MANIFEST_NAME).exists() and finished:
        raise ValueError(f"{out_dir} contains shards but no progress file {PROGRESS_NAME} to resume from; "
                         "rerun with --overwrite")
    for path in temporary:
        path.unlink()  # a resumed run rebuilds their content


class _ShardRun:
    """One call of write_shards: writers, checkpoints and the reading loop."""

    def __init__(self, inputs: InputSet, out_dir: Path, options: ShardOptions, rule: SplitRule):
        self.inputs, self.out_dir, self.options, self.rule = inputs, out_dir, options, rule
        self.fingerprint = _fingerprint(inputs, options)
        sample_bytes = inputs.n_pixels * (2 * np.dtype(options.dtype).itemsize + inputs.has_mask)
        blocks_per_shard = max(1, int(options.shard_size_mb * 1e6 // (options.block_size * sample_bytes)))
        block_mb = options.block_size * sample_bytes / 1e6
        if options.shard_size_mb < block_mb:
            logger.warning("a block of %d spectra takes %.1f MB, more than the shard size %g MB, so each shard "
                           "contains one block; lower --block-size for smaller shards", options.block_size, block_mb,
                           options.shard_size_mb)
        self.stats = TrainStats(inputs.n_pixels, inputs.label_names)
        self.finalizer = ShardFinalizer(out_dir, options.fsync)
        self.writers = {
            split: SplitWriter(out_dir, split, block_size=options.block_size, blocks_per_shard=blocks_per_shard,
                               dtype=options.dtype, n_pixels=inputs.n_pixels, n_labels=len(inputs.label_names),
                               has_mask=inputs.has_mask, stats=self.stats if split == "train" else None,
                               finalizer=self.finalizer, on_shard=self._checkpoint)
            for split in fmt.SPLITS
        }
        self.problems = ProblemLog()
        self.n_dropped = dict.fromkeys(fmt.SPLITS, 0)
        self.read_from = 0
        self._problems_at_read_from: list = []
        self._dropped_at_read_from = dict(self.n_dropped)

    def _checkpoint(self, _writer: SplitWriter | None = None) -> Callable[[], None]:
        """Capture the run's state now and return the call that saves it (after the closed shard's rename)."""
        splits = {name: SplitProgress(list(w.finished), w.fed_through, self._dropped_at_read_from[name],
                                      w.pending_ids(), dict(w.snapshot))
                  for name, w in self.writers.items()}
        progress = Progress(self.fingerprint, self.read_from, list(self._problems_at_read_from), splits)
        return lambda: save_progress(self.out_dir, progress)

    def restore(self, progress: Progress) -> None:
        """Rebuild the state of an interrupted run from its progress file.

        The samples of each split's unfinished shard (at most one shard per split) are read again from the
        inputs by id and written anew. Closed shards are kept as they are.
        """
        if progress.fingerprint != self.fingerprint:
            raise ValueError(f"{self.out_dir / PROGRESS_NAME} was written for other inputs or options "
                             f"({_describe_changes(progress.fingerprint, self.fingerprint)}); rerun with the same "
                             "inputs and options, or with --overwrite to start again")
        self._check_closed_shards(progress)
        self.problems = ProblemLog(progress.problems)
        self._problems_at_read_from = progress.problems
        self.read_from = progress.read_from
        for name, writer in self.writers.items():
            split = progress.splits[name]
            writer.restore(split.finished, split.snapshot)
            self.n_dropped[name] = self._dropped_at_read_from[name] = split.n_dropped
            if len(split.pending_ids):
                writer.add(self.inputs.read_ids(split.pending_ids))
            writer.fed_through = split.fed_through
        logger.info("resuming at sample id %d with %s closed shards", self.read_from,
                    {name: len(w.finished) for name, w in self.writers.items()})

    def _check_closed_shards(self, progress: Progress) -> None:
        """Raise ValueError when a shard closed by the interrupted run is missing or differs from its record."""
        entries = [entry for split in progress.splits.values() for entry in split.finished]
        logger.info("checking the size and SHA-256 of %d closed shards", len(entries))
        record = f"the progress file {PROGRESS_NAME}"
        for entry in entries:
            path = self.out_dir / entry["name"]
            if path.is_file():
                size = path.stat().st_size
                digest = sha256_file(path) if size == entry["size_bytes"] else ""  # a wrong size needs no digest
                problem = fmt.content_mismatch(size, digest, entry["size_bytes"], entry.get("sha256"), record)
            else:
                problem = "is missing"
            if problem:
                raise ValueError(f"closed shard {path} {problem}; rerun with --overwrite to build every shard again")

    def run(self, progress: Callable[[int], None] | None) -> None:
        """Read every chunk from `read_from` on and hand its rows to the split writers."""
        for first, end, rows in self.inputs.iter_rows(self.read_from, self.options.chunk_size, self.options.on_bad,
                                                      self.problems):
            self.read_from = first
            codes = self.rule.assign(rows.ids)
            if len(rows.ids) < end - first:
                self._count_dropped(first, end, rows.ids)
            for code, (name, writer) in enumerate(self.writers.items()):
                selected = np.flatnonzero((codes == code) & (rows.ids > writer.fed_through))
                if len(selected):
                    writer.add(rows, selected)
            for writer in self.writers.values():
                writer.fed_through = max(writer.fed_through, end - 1)
            self.read_from = end
            self._problems_at_read_from = self.problems.records()
            self._dropped_at_read_from = dict(self.n_dropped)
            if progress is not None:
                progress(end - first)
        for writer in self.writers.values():
            writer.finish()
        self.finalizer.wait()
        self.finalizer.shutdown()

    def _count_dropped(self, first: int, end: int, valid_ids: np.ndarray) -> None:
        dropped = np.ones(end - first, dtype=bool)
        dropped[valid_ids - first] = False
        codes = self.rule.assign(first + np.flatnonzero(dropped))
        for code, name in enumerate(self.writers):
            self.n_dropped[name] += int(np.count_nonzero(codes == code))

    def abort(self) -> None:
        """Let queued shards finish (so their checkpoints are saved) and close the open shard files."""
        self.finalizer.shutdown()
        for writer in self.writers.values():
            writer.abort()

    def manifest(self, checksums: list[str]) -> dict:
        """Assemble the manifest of a finished run."""
        float16_loss = None
        if self.options.dtype == "float16":
            total = Float16Loss()
            for writer in self.writers.values():
                total.merge(writer.float16_loss)
            float16_loss = total.report()
        sources = [{"path": str(info.path.resolve()), "size_bytes": info.size_bytes, "sha256": checksum,
                    "n_spectra": info.n_spectra, "first_id": int(self.inputs.offsets[i]), "layout": info.layout,
                    "dtype": str(info.dtype)}
                   for i, (info, checksum) in enumerate(zip(self.inputs.files, checksums))]
        splits = {name: {"n_samples": w.n_samples, "n_dropped": self.n_dropped[name], "shards": w.finished}
                  for name, w in self.writers.items()}
        return {
            "format_version": fmt.FORMAT_VERSION,
            "sources": sources,
            "sample_id": "first_id of the source file + row in that file",
            "n_pixels": self.inputs.n_pixels,
            "wave": self.inputs.wave.tolist(),
            "dtype": self.options.dtype,
            "has_mask": self.inputs.has_mask,
            "label_names": self.inputs.label_names,
            "block_size": self.options.block_size,
            "split": self.rule.to_manifest(),
            "splits": splits,
            "stats": self.stats.pixel_stats(),
            "label_stats": self.stats.label_stats(),
            "float16_loss": float16_loss,
            "dropped_rows": self.problems.records(),
            "options": dataclasses.asdict(self.options),
        }


def _write_manifest(out_dir: Path, manifest: dict, fsync: bool) -> None:
    tmp = out_dir / f".{fmt.MANIFEST_NAME}{TMP_SUFFIX}"
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(tmp, out_dir / fmt.MANIFEST_NAME)
    if fsync:
        fsync_directory(out_dir)


def write_shards(inputs: list[str | Path], out: str | Path, options: ShardOptions | None = None, *,
                 resume: bool = False, overwrite: bool = False,
                 progress: Callable[[int], None] | None = None) -> ShardResult:
    """Write the train/val/test shards and `manifest.json` of `inputs` into directory `out`.

    `progress`, when given, is called with the number of input spectra read after each chunk. Raises
    ValueError on invalid input (with on_bad="raise"), on an `out` directory holding another run, or on
    a resume whose inputs or options differ from the interrupted run.
    """
    options = options or ShardOptions()
    start = time.perf_counter()
    input_set = InputSet(list(inputs))
    out_dir = Path(out)
    n_test = resolve_size(options.test_size, input_set.n_total, "test_size")
    n_val = resolve_size(options.val_size, input_set.n_total, "val_size")
    rule = SplitRule.build(options.seed, input_set.n_total, n_test, n_val)
    _prepare_out_dir(out_dir, resume, overwrite)
    shard_run = _ShardRun(input_set, out_dir, options, rule)
    if resume and (out_dir / fmt.MANIFEST_NAME).exists() and not (out_dir / PROGRESS_NAME).exists():
        manifest = json.loads((out_dir / fmt.MANIFEST_NAME).read_text())
        sources = [(s["path"], s["size_bytes"]) for s in manifest.get("sources", [])]
        expected = [(f["path"], f["size_bytes"]) for f in shard_run.fingerprint["inputs"]]
        if manifest.get("options") != shard_run.fingerprint["options"] or sources != expected:
            raise ValueError(f"{out_dir / fmt.MANIFEST_NAME} was written for other inputs or options; rerun "
                             "with --overwrite to replace it")
        logger.info("%s is already complete; nothing to resume", out_dir)
        return ShardResult(manifest, out_dir, time.perf_counter() - start, 0, 0)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="specstream-sha256") as pool:
        checksum_futures = [pool.submit(sha256_file, info.path) for info in input_set.files]
        saved = load_progress(out_dir) if resume else None
        if saved is not None:
            shard_run.restore(saved)
        if progress is not None and shard_run.read_from:
            progress(shard_run.read_from)
        first_id = shard_run.read_from
        try:
            shard_run.run(progress)
        except BaseException:
            shard_run.abort()
            raise
        manifest = shard_run.manifest([future.result() for future in checksum_futures])
    _write_manifest(out_dir, manifest, options.fsync)
    (out_dir / PROGRESS_NAME).unlink(missing_ok=True)

    bytes_written = sum(entry["size_bytes"] for w in shard_run.writers.values() for entry in w.finished)
    if saved is not None:
        bytes_written -= sum(entry["size_bytes"] for split in saved.splits.values() for entry in split.finished)
    return ShardResult(manifest, out_dir, time.perf_counter() - start, bytes_written,
                       input_set.n_total - first_id)
