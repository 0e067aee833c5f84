"""The reference study's data path, kept as the baseline that speed-ups are measured against.

One spectrum at a time: a map-style torch Dataset opens the survey HDF5 files with h5py, reads one row of
flux and error per `__getitem__`, adds NumPy Gaussian noise, and a torch DataLoader with worker processes
collates batches. Training on it is eager and fp32. Nothing here is used for real training.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from specstream.io import describe, read_labels


class ReferenceHDF5Dataset(Dataset):
    """Spectra read one by one from survey HDF5 files, with NumPy noise drawn per read."""

    def __init__(self, paths: list[str | Path], target: str = "log_g", noise_level: float = 1.0):
        self.files = [describe(p) for p in paths]
        self.offsets = np.cumsum([0] + [f.n_spectra for f in self.files])
        self.targets = np.concatenate([read_labels(f.path, f)[target].to_numpy(np.float32) for f in self.files])
        self.noise_level = noise_level
        self._handles: dict[int, h5py.File] = {}  # opened lazily, once per worker process

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        file_index = int(np.searchsorted(self.offsets, index, side="right") - 1)
        row = index - int(self.offsets[file_index])
        info = self.files[file_index]
        if file_index not in self._handles:
            self._handles[file_index] = h5py.File(info.path, "r")
        handle = self._handles[file_index]
        flux = handle[info.keys["flux"]][row].astype(np.float32)
        error = handle[info.keys["error"]][row].astype(np.float32)
        noisy = flux + self.noise_level * error * np.random.default_rng().standard_normal(flux.shape, np.float32)
        return torch.from_numpy(noisy), torch.tensor([self.targets[index]])


def reference_loader(paths: list[str | Path], batch_size: int, num_workers: int, target: str = "log_g",
                     noise_level: float = 1.0) -> DataLoader:
    """Return the reference DataLoader: shuffled, per-sample reads, `num_workers` worker processes."""
    dataset = ReferenceHDF5Dataset(paths, target=target, noise_level=noise_level)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      persistent_workers=num_workers > 0, drop_last=False)


def time_reference_steps(model: torch.nn.Module, loader: DataLoader, n_steps: int, lr: float = 1e-3,
                         device: str = "cpu", warmup_steps: int = 2) -> dict:
    """Train eagerly in fp32 for `n_steps` steps after `warmup_steps`; return timings of the timed steps.

    Returns spectra_per_s, seconds, steps and data_wait_share (time blocked on the loader / total).
    """
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = torch.nn.MSELoss()
    iterator = iter(loader)
    n_spectra, wait, started = 0, 0.0, None
    for step in range(warmup_steps + n_steps):
        if step == warmup_steps:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started, n_spectra, wait = time.perf_counter(), 0, 0.0
        before = time.perf_counter()
        try:
            inputs, targets = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            inputs, targets = next(iterator)
        wait += time.perf_counter() - before
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        n_spectra += len(inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"spectra_per_s": n_spectra / seconds, "seconds": seconds, "steps": n_steps,
            "data_wait_share": wait / seconds}
