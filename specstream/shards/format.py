"""The shard file format: tar files of `.npy` members, one group of members per block of spectra.

A shard `{split}-{index:06d}.tar` is a plain POSIX (ustar) tar archive. Each block of up to `block_size`
consecutive samples of one split is stored as the members

    {key}.flux.npy    (n, n_pixels) float32 or float16, noise-free flux
    {key}.error.npy   (n, n_pixels) same dtype, 1-sigma error per pixel
    {key}.mask.npy    (n, n_pixels) int8, non-zero = bad pixel (only when an input file has a mask)
    {key}.labels.npy  (n, n_labels) float64, columns as the manifest's `label_names`
    {key}.ids.npy     (n,) int64 global sample ids

where `key` is the block's index within its split, zero-padded to 6 digits. Any tar or webdataset reader can
read the members. The manifest also records the byte offset of every member, so local readers seek straight
to a block. Member headers carry mtime 0, uid and gid 0, and mode 0644, so the same input always gives the
same bytes.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np

from specstream.locks import ForkSafeLock

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
ROLES = ("flux", "error", "mask", "labels", "ids")  # member order inside a block
TAR_BLOCK_BYTES = tarfile.BLOCKSIZE  # 512: tar headers and member data are aligned to this
TAR_RECORD_BYTES = tarfile.RECORDSIZE  # 10240: archives are padded to a multiple of this, as GNU tar does
LABEL_DTYPE = np.dtype("<f8")
ID_DTYPE = np.dtype("<i8")
MASK_DTYPE = np.dtype("i1")
STORAGE_DTYPES = ("float32", "float16")


def shard_name(split: str, index: int) -> str:
    """Return the file name of shard `index` of `split`, e.g. "train-000003.tar"."""
    return f"{split}-{index:06d}.tar"


def block_key(index: int) -> str:
    """Return the member-name prefix of block `index` of a split."""
    return f"{index:06d}"


def member_name(key: str, role: str) -> str:
    """Return the tar member name of one array of a block, e.g. "000012.flux.npy"."""
    return f"{key}.{role}.npy"


def npy_header(array: np.ndarray) -> bytes:
    """Return the .npy version 1.0 header (magic, length, dict, padding) that precedes `array`'s bytes."""
    if not array.flags.c_contiguous:
        raise ValueError("shard arrays must be C-contiguous")
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


def tar_header(name: str, size: int) -> bytes:
    """Return the 512-byte ustar header of a regular-file member with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def padding_after(size: int) -> bytes:
    """Return the zero bytes that pad `size` bytes of member data to the next tar block."""
    return b"\0" * (-size % TAR_BLOCK_BYTES)


def end_of_archive(offset: int) -> bytes:
    """Return the end-of-archive marker for an archive whose members end at `offset`.

    The marker is two zero blocks, padded with zeros to a whole record of TAR_RECORD_BYTES.
    """
    end = offset + 2 * TAR_BLOCK_BYTES
    return b"\0" * (end - offset + (-end % TAR_RECORD_BYTES))


def parse_tar_header(raw: bytes) -> tuple[str, int]:
    """Return (name, size) of a tar member header; raise tarfile.HeaderError when it is invalid."""
    info = tarfile.TarInfo.frombuf(raw, "utf-8", "surrogateescape")
    return info.name, info.size


# NumPy parses .npy headers with ast.literal_eval. On Python 3.11, two threads building ASTs at once can
# raise "SystemError: AST constructor recursion depth mismatch", so the loader's threads take turns here.
_header_lock = ForkSafeLock()


def parse_npy_header(raw: bytes) -> tuple[np.dtype, tuple, int]:
    """Return (dtype, shape, header length in bytes) of a .npy file that starts with `raw`.

    Raises ValueError when `raw` is not the start of a C-ordered .npy file.
    """
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    with _header_lock:
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    if fortran_order:
        raise ValueError("Fortran-ordered .npy arrays are not written by specstream")
    return dtype, tuple(shape), stream.tell()


def content_mismatch(size: int, sha256: str, expected_size: int, expected_sha256: str | None,
                     record: str = "the manifest") -> str:
    """Return how a shard's size and SHA-256 differ from its entry in `record`, or "" when they match.

    Without a recorded SHA-256 only the size is compared.
    """
    if size != expected_size:
        return f"has {size} bytes, {record} records {expected_size}"
    if expected_sha256 and sha256 != expected_sha256:
        return f"has SHA-256 {sha256}, {record} records {expected_sha256}"
    return ""
