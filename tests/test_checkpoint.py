import random

import numpy as np
import pytest
import torch

from specstream.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from specstream.models import build_model


def _training_state():
    torch.manual_seed(0)
    model = build_model("cnn_4L_k5_bn", n_pixels=256)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20)
    loss = model(torch.randn(4, 256)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 3,
        "best_val_r2": 0.41,
        "config": {"model": "cnn_4L_k5_bn", "targets": ("log_g",), "dtype": torch.float32},
        "python_rng": random.getstate(),
        "numpy_rng": np.random.default_rng(1).bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }


def test_round_trip_training_state(tmp_path):
    state = _training_state()
    path = save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(path)

    assert loaded["epoch"] == 3
    assert loaded["config"] == state["config"]
    assert loaded["python_rng"] == state["python_rng"]
    assert loaded["numpy_rng"] == state["numpy_rng"]
    torch.testing.assert_close(loaded["torch_rng"], state["torch_rng"])
    for key, tensor in state["model"].items():
        torch.testing.assert_close(loaded["model"][key], tensor, rtol=0, atol=0)

    # The loaded states restore into fresh objects.
    model = build_model("cnn_4L_k5_bn", n_pixels=256)
    model.load_state_dict(loaded["model"])
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(loaded["optimizer"])
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_file_loads_with_plain_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "weights": torch.ones(3)})
    raw = torch.load(path, weights_only=True)
    assert raw["state"]["epoch"] == 1


def test_overwrite_keeps_no_temporary_files(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize(
    "state, message",
    [
        ({"weights": np.zeros(3)}, r"at state\['weights'\] has type ndarray.*torch.from_numpy"),
        ({"lr": np.float64(1e-3)}, r"at state\['lr'\] has type float64"),
        ({"nested": {"items": [1, object()]}}, r"at state\['nested'\]\['items'\]\[1\] has type object"),
        ({"bad": {(1, 2): 3}}, r"checkpoint key \(1, 2\) at state\['bad'\] has type tuple"),
    ],
)
def test_save_rejects_non_plain_content(tmp_path, state, message):
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tmp_path / "x.pt", state)
    assert not (tmp_path / "x.pt").exists()


def test_save_rejects_non_mapping(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint state must be a mapping \(dict\), got list"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*missing.pt not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.99])
def test_load_truncated_file_names_it(tmp_path, keep_fraction):
    path = save_checkpoint(tmp_path / "last.pt", _training_state())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt is truncated or not a torch checkpoint"):
        load_checkpoint(path)


def test_load_corrupt_bytes_detected(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", _training_state())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt is corrupt: member .* fails its CRC check"):
        load_checkpoint(path)


def test_load_without_verify_still_names_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"checkpoint .*last.pt is truncated or corrupt"):
        load_checkpoint(path, verify=False)


def test_load_rejects_pickled_objects(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"foreign.pt contains objects that weights-only loading rejects"):
        load_checkpoint(path)


def test_load_rejects_foreign_state_dict(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match=r"plain.pt is not a specstream checkpoint of format version 1"):
        load_checkpoint(path)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)
