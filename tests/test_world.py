import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, IterableDataset

from specstream.world import World, cleanup, init_distributed, worker_info


def test_default_is_single_process():
    world = World()
    assert (world.rank, world.local_rank, world.world_size, world.local_world_size) == (0, 0, 1, 1)
    assert world.is_main
    assert world.is_local_main
    assert not world.is_distributed
    assert world.num_nodes == 1
    assert world.node_rank == 0


def test_from_env_without_variables():
    assert World.from_env({}) == World()


def test_from_env_torchrun_two_nodes():
    environ = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    world = World.from_env(environ)
    assert world == World(rank=5, local_rank=1, world_size=8, local_world_size=4)
    assert not world.is_main
    assert not world.is_local_main
    assert world.is_distributed
    assert world.num_nodes == 2
    assert world.node_rank == 1


def test_from_env_defaults_local_values():
    world = World.from_env({"RANK": "3", "WORLD_SIZE": "4"})
    assert world.local_world_size == 4
    assert world.local_rank == 3


def test_from_env_reads_os_environ(monkeypatch):
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert World.from_env() == World(rank=1, local_rank=1, world_size=2, local_world_size=2)


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"RANK": "zero", "WORLD_SIZE": "2"},
            r"environment variable RANK='zero' is not an integer; launch with torchrun",
        ),
        ({"RANK": "1"}, r"RANK and WORLD_SIZE must both be set, found only RANK=1"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, r"found only LOCAL_RANK=0, WORLD_SIZE=2"),
        (
            {"RANK": "4", "WORLD_SIZE": "4"},
            r"invalid distributed environment variables: rank must be in \[0, world_size=4\), got 4",
        ),
        ({"RANK": "0", "WORLD_SIZE": "0"}, r"world_size must be at least 1, got 0"),
        (
            {"RANK": "0", "WORLD_SIZE": "6", "LOCAL_WORLD_SIZE": "4"},
            r"world_size=6 is not a multiple of local_world_size=4; run the same number of ranks on every node",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "2"},
            r"local_rank must be in \[0, local_world_size=2\), got 2",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "0"},
            r"local_world_size must be in \[1, world_size=2\], got 0",
        ),
    ],
)
def test_from_env_rejects_invalid(environ, message):
    with pytest.raises(ValueError, match=message):
        World.from_env(environ)


def test_constructor_rejects_non_int():
    with pytest.raises(ValueError, match=r"World.rank must be an int, got '1'"):
        World(rank="1", world_size=2, local_world_size=2)
    with pytest.raises(ValueError, match=r"World.world_size must be an int, got True"):
        World(world_size=True)


def test_device_is_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    assert World(rank=1, local_rank=1, world_size=2, local_world_size=2).device() == torch.device("cpu")


def test_worker_info_in_main_process():
    assert worker_info() == (0, 1)


class _WorkerInfoDataset(IterableDataset):
    def __iter__(self):
        yield worker_info()


def test_worker_info_inside_dataloader_workers():
    loader = DataLoader(_WorkerInfoDataset(), batch_size=None, num_workers=2)
    # The default collate function turns each tuple into a list.
    assert sorted(loader) == [[0, 2], [1, 2]]


def test_init_single_process_starts_no_group():
    assert init_distributed(World()) is None
    assert not dist.is_initialized()
    cleanup()  # a no-op without a process group


def test_init_requires_rendezvous_address(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match=r"MASTER_ADDR not set for world_size=2; launch with torchrun"):
        init_distributed(World(rank=0, world_size=2, local_world_size=2))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _all_reduce_rank(rank, world_size, port, results):
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
        }
    )
    world = World.from_env()
    backend = init_distributed(world, backend="gloo")
    try:
        total = torch.tensor([float(world.rank + 1)])
        dist.all_reduce(total)
        results[rank] = (backend, world.is_main, total.item(), dist.get_world_size())
    finally:
        cleanup()


@pytest.mark.distributed
def test_init_distributed_gloo_all_reduce():
    world_size = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_all_reduce_rank, args=(world_size, _free_port(), results), nprocs=world_size, join=True)
        results = dict(results)
    assert results[0] == ("gloo", True, 3.0, 2)
    assert results[1] == ("gloo", False, 3.0, 2)
