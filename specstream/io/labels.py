"""Label tables: read pandas `to_hdf(format='table')` tables with h5py alone, never unpickling code.

pandas writes the column names of a table as protocol-0 pickles in HDF5 attributes, and PyTables unpickles
such attributes on access, which can execute code stored in a file. Here the attributes are decoded by an
unpickler that rejects every global, so only plain lists, tuples, strings and numbers come through.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

# Old survey files call the metallicity Fe_H; specstream uses M_H throughout.
COLUMN_ALIASES = {"Fe_H": "M_H"}


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that loads plain containers and scalars and rejects every class or function."""

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle API)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: label tables must contain plain data")

    def persistent_load(self, pid):  # noqa: D102 (pickle API)
        raise pickle.UnpicklingError("refusing persistent ids in a label table attribute")


def _decode_attr(value, where: str = "") -> object:
    """Decode one pandas/PyTables attribute: a plain string, a number, or a protocol-0 pickle.

    Raises ValueError naming `where` when the pickle needs a class or function.
    """
    if isinstance(value, (np.bytes_, bytes)):
        raw = bytes(value)
        try:
            return _PlainDataUnpickler(io.BytesIO(raw)).load()
        except pickle.UnpicklingError as exc:
            if "refusing" in str(exc):
                raise ValueError(f"{where}: {exc}") from exc
            return raw.decode("utf-8", errors="replace")
        except (EOFError, ValueError, KeyError, IndexError):
            return raw.decode("utf-8", errors="replace")
    return value


def is_pandas_table(group: h5py.Group) -> bool:
    """Return whether `group` is a table written by pandas `to_hdf(format='table')`."""
    return isinstance(group, h5py.Group) and "table" in group and isinstance(group["table"], h5py.Dataset)


def read_pandas_table(path: Path, group: h5py.Group, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """Read rows [start, stop) of a pandas table group into a DataFrame, keeping its column order."""
    table = group["table"]
    if table.dtype.names is None:
        raise ValueError(f"{path}: key {table.name} is not a table (no named fields); rewrite it with "
                         "DataFrame.to_hdf(format='table')")
    rows = table[start:stop]
    columns: dict[str, np.ndarray] = {}
    for field in table.dtype.names:
        if field == "index":
            continue
        values = rows[field]
        names = _decode_attr(table.attrs.get(f"{field}_kind", field), f"{path}: key {table.name} attribute {field}_kind")
        if isinstance(names, (list, tuple)):
            if values.ndim == 1:
                values = values[:, None]
            if values.shape[1] != len(names):
                raise ValueError(f"{path}: key {table.name} field {field} has {values.shape[1]} columns but its "
                                 f"attribute lists {len(names)} names")
            for i, name in enumerate(names):
                columns[str(name)] = values[:, i]
        else:
            columns[field] = values if values.ndim == 1 else values[:, 0]
    order = _decode_attr(group.attrs.get("non_index_axes", b""), f"{path}: key {group.name} attribute non_index_axes")
    frame = pd.DataFrame(columns)
    if isinstance(order, list) and order and isinstance(order[0], tuple) and len(order[0]) == 2:
        stored_order = [str(c) for c in order[0][1] if str(c) in frame.columns]
        frame = frame[stored_order + [c for c in frame.columns if c not in stored_order]]
    return _decode_strings(frame)


def read_columns_group(path: Path, group: h5py.Group, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """Read a group of equal-length 1-D datasets, one per label column."""
    columns = {}
    for name, dataset in group.items():
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1:
            raise ValueError(f"{path}: label column {dataset.name} must be a 1-D dataset, "
                             f"found {getattr(dataset, 'shape', 'a group')}")
        columns[name] = dataset[start:stop]
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: label columns in {group.name} differ in length: {lengths}")
    # An optional "columns" attribute gives the column order, since HDF5 lists group members by name.
    order = [c.decode() if isinstance(c, bytes) else str(c) for c in group.attrs.get("columns", [])]
    order = [c for c in order if c in columns] + [c for c in columns if c not in order]
    return _decode_strings(pd.DataFrame({name: columns[name] for name in order}))


def read_structured(path: Path, dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """Read a compound (structured) dataset with one field per label column."""
    if dataset.dtype.names is None:
        raise ValueError(f"{path}: key {dataset.name} must be a compound dataset with one field per label")
    rows = dataset[start:stop]
    return _decode_strings(pd.DataFrame({name: rows[name] for name in dataset.dtype.names}))


def _decode_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn byte-string columns into str and apply COLUMN_ALIASES."""
    for column in frame.columns:
        if frame[column].dtype == object or frame[column].dtype.kind == "S":
            frame[column] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in frame[column]]
    renames = {old: new for old, new in COLUMN_ALIASES.items() if old in frame.columns and new not in frame.columns}
    return frame.rename(columns=renames)
