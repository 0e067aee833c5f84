"""Read rows of blocks out of shards: memory maps or positioned reads for local files, tar streaming for URLs.

A piece is `(block, row0, row1, dst0)`: rows [row0, row1) of block `block` of a split go to rows
[dst0, dst0 + row1 - row0) of the destination arrays. Local shards are read with os.preadv straight into the
destination, at the member offsets that the manifest records, or seen through a read-only memory map as
NumPy arrays (`member_view`), which skips the copy out of the page cache. Each member's tar and .npy headers
are checked against the manifest before its first use. Stream sources (pipe:, http) are read member by
member with tarfile, one pass per shard and call, or copied once into a local cache directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import tarfile
import threading
import weakref
from collections import defaultdict
from pathlib import Path

import numpy as np

from specstream.data.manifest import ShardSource, SplitLayout
from specstream.locks import ForkSafeLock
from specstream.shards import format as fmt

logger = logging.getLogger(__name__)

MAX_OPEN_SHARDS = 64  # file descriptors kept open per reader for positioned reads; mapped shards keep none
READ_MODES = ("mmap", "pread")  # how local shards are read by the loader; see SpectraLoader
HEADER_PROBE_BYTES = 4096  # bytes read to parse a .npy header
COPY_PIECE_BYTES = 16 << 20


# Memory maps shared by the readers of a process, keyed by file identity, so that the building threads
# fault each page of a shard into the page tables once. A map is unmapped when its last user drops it.
_shared_maps: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_shared_maps_lock = ForkSafeLock()


def _shared_map(fd: int) -> mmap.mmap:
    """Return a read-only memory map of the whole file `fd`, shared with other readers of the same file."""
    stat = os.fstat(fd)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _shared_maps_lock:
        mapped = _shared_maps.get(key)
        if mapped is None:
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            _shared_maps[key] = mapped
        return mapped


RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)  # out of file descriptors or memory


def _resource_error(exc: OSError, path: Path) -> OSError:
    """Return an OSError for running out of descriptors or memory, which is no fault of the shard."""
    return OSError(exc.errno, f"cannot open or map {path}: {exc.strerror}. The process has run out of file "
                   "descriptors or address space; raise the open-file limit (ulimit -n), write fewer and "
                   "larger shards, or pass read_mode='pread'")


class CorruptShardError(ValueError):
    """A shard is missing, truncated or does not match its manifest entry."""

    def __init__(self, shard: str, detail: str, skip_hint: bool = True):
        self.shard = shard
        hint = "; SpectraLoader(on_corrupt='skip') skips it and counts its samples" if skip_hint else ""
        super().__init__(f"corrupt shard {shard}: {detail}. Copy the shard again, or rewrite the set with "
                         f"`specstream shard`{hint}")


def role_shape(layout: SplitLayout, role: str, n_rows: int) -> tuple:
    """Return the array shape of one member: (n, n_pixels), (n, n_labels) or (n,)."""
    if role in ("flux", "error", "mask"):
        return (n_rows, layout.n_pixels)
    if role == "labels":
        return (n_rows, len(layout.label_names))
    return (n_rows,)


def role_dtype(layout: SplitLayout, role: str) -> np.dtype:
    """Return the stored dtype of one member."""
    return {"flux": layout.dtype, "error": layout.dtype, "mask": fmt.MASK_DTYPE, "labels": fmt.LABEL_DTYPE,
            "ids": fmt.ID_DTYPE}[role]


def roles(layout: SplitLayout) -> tuple:
    """Return the members every block of the layout has."""
    return tuple(role for role in fmt.ROLES if role != "mask" or layout.has_mask)


def allocate(layout: SplitLayout, n_rows: int, among: tuple | None = None) -> dict:
    """Return empty destination arrays for `n_rows` samples, one per member role (of `among` when given)."""
    return {role: np.empty(role_shape(layout, role, n_rows), dtype=role_dtype(layout, role))
            for role in roles(layout) if among is None or role in among}


class BlockReader:
    """Read pieces of one split's blocks; see the module docstring."""

    def __init__(self, source: ShardSource, layout: SplitLayout, cache_dir: str | Path | None = None,
                 read_mode: str = "pread"):
        self._fds: dict[int, int] = {}  # least recently used first
        self._data_offsets: dict[tuple[int, str], int] = {}
        self._maps: dict[int, mmap.mmap] = {}
        self._views: dict[tuple[int, str], np.ndarray] = {}
        if read_mode not in READ_MODES:
            raise ValueError(f"read_mode must be one of {READ_MODES}, got {read_mode!r}")
        self.source, self.layout, self.read_mode = source, layout, read_mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def close(self) -> None:
        """Close the files; each memory map is unmapped once no other reader or view uses it."""
        self._views.clear()
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        self.close()

    def shard_label(self, shard: int) -> str:
        return self.source.url(self.layout.shard_names[shard])

    def read_shard(self, shard: int, pieces: list, dest: dict) -> None:
        """Read the pieces of one shard into `dest` (role -> C-contiguous array); raise CorruptShardError.

        Only the roles present in `dest` are read, so a caller may leave out the mask, for instance.
        """
        path = self.local_file(shard)
        if path is None:
            self._read_stream(shard, pieces, dest)
            return
        fd = self._open(shard, path)
        for block, row0, row1, dst0 in pieces:
            for role in dest:
                target = dest[role][dst0:dst0 + row1 - row0]
                row_bytes = target.itemsize * int(np.prod(target.shape[1:], dtype=np.int64))
                offset = self._data_offset(fd, shard, block, role) + row0 * row_bytes
                self._pread_into(fd, shard, target, offset)

    def local_file(self, shard: int) -> Path | None:
        """Return the shard's local file (a cached copy, made now if needed), or None for a streamed shard."""
        name = self.layout.shard_names[shard]
        path = self.source.local_path(name)
        if path is not None or self.cache_dir is None:
            return path
        cached = self.cache_dir / name
        if not cached.is_file() or cached.stat().st_size != self.layout.shard_sizes[shard]:
            self._copy_to_cache(shard, cached)
        return cached

    def _copy_to_cache(self, shard: int, cached: Path) -> None:
        """Copy a shard into the cache directory, checking its size and SHA-256 against the manifest."""
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Ranks, workers and threads may copy the same shard at once: each writes its own temporary file.
        tmp = cached.with_name(f".{cached.name}.partial-{os.getpid()}-{threading.get_ident()}")
        digest = hashlib.sha256()
        try:
            with self.source.open(self.layout.shard_names[shard]) as stream, open(tmp, "wb") as out:
                while piece := stream.read(COPY_PIECE_BYTES):
                    out.write(piece)
                    digest.update(piece)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CorruptShardError(self.shard_label(shard), f"copy to {cached} failed ({exc})") from exc
        except BaseException:  # an interrupt: leave no partial copy behind
            tmp.unlink(missing_ok=True)
            raise
        problem = fmt.content_mismatch(tmp.stat().st_size, digest.hexdigest(), int(self.layout.shard_sizes[shard]),
                                   self.layout.shard_sha256[shard])
        if problem:
            tmp.unlink()
            raise CorruptShardError(self.shard_label(shard), f"the copy {problem}")
        os.replace(tmp, cached)
        logger.info("copied %s to %s", self.shard_label(shard), cached)

    def _open(self, shard: int, path: Path) -> int:
        if shard in self._fds:
            fd = self._fds.pop(shard)
            self._fds[shard] = fd  # now the most recently used
            return fd
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                raise _resource_error(exc, path) from exc
            raise CorruptShardError(str(path), f"cannot open it ({exc.strerror})") from exc
        size = os.fstat(fd).st_size
        expected = int(self.layout.shard_sizes[shard])
        if size != expected:
            os.close(fd)
            raise CorruptShardError(str(path), f"the file has {size} bytes but the manifest records {expected} "
                                    "(truncated or replaced)")
        if len(self._fds) >= MAX_OPEN_SHARDS:
            os.close(self._fds.pop(next(iter(self._fds))))  # its memory map, if any, stays
        self._fds[shard] = fd
        return fd

    def check_size(self, shard: int) -> None:
        """Raise CorruptShardError if an open local shard no longer has its manifest size.

        A memory-mapped file that shrinks kills the process with SIGBUS at the next access to the lost pages.
        Checking before each use leaves only a file truncated in the middle of one window.
        """
        if shard in self._maps:
            size = self._maps[shard].size()  # the mapped file's current size
        elif shard in self._fds:
            size = os.fstat(self._fds[shard]).st_size
        else:
            return
        expected = int(self.layout.shard_sizes[shard])
        if size != expected:
            raise CorruptShardError(self.shard_label(shard), f"the file now has {size} bytes but the manifest "
                                    f"records {expected} (truncated or rewritten while in use)")

    def member_view(self, shard: int, block: int, role: str) -> np.ndarray:
        """Return all rows of one member of a block in a local shard, as a read-only memory-mapped array.

        The view stays valid as long as the caller keeps it. A reader keeps the map of every shard it has
        viewed until close(), and each map keeps a file descriptor open.
        """
        key = (block, role)
        view = self._views.get(key)
        if view is not None:
            return view
        path = self.local_file(shard)
        if path is None:
            raise ValueError(f"{self.shard_label(shard)} is not a local file; read it with read_shard")
        mapped = self._maps.get(shard)
        if mapped is None:
            fd = self._open(shard, path)
            try:
                mapped = self._maps[shard] = _shared_map(fd)
            except OSError as exc:
                raise _resource_error(exc, path) from exc
            finally:
                os.close(self._fds.pop(shard))  # a map keeps its own descriptor
        offset = self._data_offset(mapped, shard, block, role)
        rows = int(self.layout.block_rows[block])
        shape = role_shape(self.layout, role, rows)
        view = np.frombuffer(self._maps[shard], dtype=role_dtype(self.layout, role),
                             count=int(np.prod(shape, dtype=np.int64)), offset=offset).reshape(shape)
        self._views[key] = view
        return view

    def _pread_into(self, fd: int, shard: int, target: np.ndarray, offset: int) -> None:
        if not target.flags.c_contiguous:
            raise RuntimeError("read target must be C-contiguous, or reshape(-1) would read into a copy")
        view = memoryview(target.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            count = os.preadv(fd, [view[done:]], offset + done)
            if count == 0:
                raise CorruptShardError(self.shard_label(shard), f"unexpected end of file at byte {offset + done}")
            done += count

    def _data_offset(self, file: int | mmap.mmap, shard: int, block: int, role: str) -> int:
        """Return where the array bytes of one member start, after checking its tar and .npy headers.

        `file` is an open descriptor or a memory map of the shard.
        """
        key = (block, role)
        if key in self._data_offsets:
            return self._data_offsets[key]
        offset, size = self.layout.block_members[block][role]
        name = fmt.member_name(self.layout.block_keys[block], role)
        start, length = offset - fmt.TAR_BLOCK_BYTES, fmt.TAR_BLOCK_BYTES + HEADER_PROBE_BYTES
        raw = os.pread(file, length, start) if isinstance(file, int) else file[start:start + length]
        try:
            found_name, found_size = fmt.parse_tar_header(raw[:fmt.TAR_BLOCK_BYTES])
            dtype, shape, header_bytes = fmt.parse_npy_header(raw[fmt.TAR_BLOCK_BYTES:])
        except (tarfile.TarError, ValueError, EOFError) as exc:
            raise CorruptShardError(self.shard_label(shard), f"member {name} at byte {offset} has an invalid "
                                    f"header ({exc})") from exc
        stored_rows = shape[0] if shape else -1
        expected_shape = role_shape(self.layout, role, stored_rows)
        problems = []
        if found_name != name or found_size != size:
            problems.append(f"tar header names {found_name!r} of {found_size} bytes, expected {name!r} of {size}")
        if dtype != role_dtype(self.layout, role) or shape != expected_shape \
                or stored_rows < self.layout.block_rows[block]:
            problems.append(f".npy header has {dtype} {shape}, expected {role_dtype(self.layout, role)} "
                            f"{role_shape(self.layout, role, int(self.layout.block_rows[block]))}")
        elif header_bytes + dtype.itemsize * int(np.prod(shape)) != size:
            problems.append(f".npy header of {header_bytes} bytes and {shape} {dtype} data do not fill the "
                            f"{size}-byte member")
        if problems:
            raise CorruptShardError(self.shard_label(shard), f"member at byte {offset}: {'; '.join(problems)}")
        self._data_offsets[key] = offset + header_bytes
        return offset + header_bytes

    def _read_stream(self, shard: int, pieces: list, dest: dict) -> None:
        """Stream the shard once, up to its last needed block, and copy the pieces' rows into `dest`."""
        # Limitation: without cache_dir a shuffled epoch streams each shard once per window that needs it,
        # reading the blocks before the needed ones again each time.
        pieces_by_key = defaultdict(list)
        for piece in pieces:
            pieces_by_key[self.layout.block_keys[piece[0]]].append(piece)
        needed = {fmt.member_name(key, role) for key in pieces_by_key for role in dest}
        label = self.shard_label(shard)
        try:
            with self.source.open(self.layout.shard_names[shard]) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    for member in archive:
                        if member.name not in needed:
                            continue
                        key, role = member.name.split(".")[:2]
                        data = archive.extractfile(member).read()
                        dtype, shape, header_bytes = fmt.parse_npy_header(data[:HEADER_PROBE_BYTES])
                        array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)),
                                              offset=header_bytes).reshape(shape)
                        self._copy_rows(label, role, array, pieces_by_key[key], dest)
                        needed.discard(member.name)
                        if not needed:
                            break
        except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
            if isinstance(exc, CorruptShardError):
                raise
            raise CorruptShardError(label, f"reading it as a tar stream failed ({exc})") from exc
        if needed:
            raise CorruptShardError(label, f"members {sorted(needed)[:3]} are missing (truncated shard?)")

    def _copy_rows(self, label: str, role: str, array: np.ndarray, pieces: list, dest: dict) -> None:
        block = pieces[0][0]
        rows = int(self.layout.block_rows[block])
        if array.dtype != role_dtype(self.layout, role) or array.shape[0] < rows or \
                array.shape[1:] != role_shape(self.layout, role, rows)[1:]:
            raise CorruptShardError(label, f"member {self.layout.block_keys[block]}.{role}.npy has {array.dtype} "
                                    f"{array.shape}, expected {role_dtype(self.layout, role)} "
                                    f"{role_shape(self.layout, role, rows)}")
        for _, row0, row1, dst0 in pieces:
            dest[role][dst0:dst0 + row1 - row0] = array[row0:row1]
