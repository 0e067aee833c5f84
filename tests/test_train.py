"""The trainer in one process: run files, results row, resume, data paths, config and command line."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from specstream.training.input_norm import InputStandardizer, model_from_checkpoint
import torch

from specstream.checkpoint import load_checkpoint, save_checkpoint
from specstream.models import build_model
from specstream.results import KNOWN_COLUMNS, load_predictions, read_jsonl, read_results
import specstream.train as train_module
from specstream.train import main, torchrun_command
from specstream.training import TrainConfig, build_parser, config_from_args, train
from specstream.training import evaluation
from specstream.training.data_setup import build_data, choose_data_path, label_scaling
from specstream.training.loop import Progress
from specstream.training.model_setup import compile_support
from specstream.training.steps import (FAIL_AFTER_STEPS_ENV, SimulatedFailure, Stepper, learning_rate,
                                       masked_squared_error)
from specstream.world import World

from train_data import learnable_shards

EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_r2", "val_mae", "lr", "samples_per_s", "data_wait_share",
              "epoch_time_s"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return learnable_shards(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def other_shards(tmp_path_factory):
    """A second shard set with 40 fewer training spectra."""
    return learnable_shards(tmp_path_factory.mktemp("other_train_data"), n=560)


def make_config(shards, out_dir, **overrides) -> TrainConfig:
    values = dict(data=str(shards), out_dir=out_dir, model="mlp_3L_512", input_mode="standardized", epochs=3,
                  batch_size=32, lr=3e-3, compile=False, num_workers=0, log_every=5, data_path="resident")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def finished_run(shards, tmp_path_factory):
    """One uninterrupted 3-epoch run, shared by the tests that inspect its outputs."""
    config = make_config(shards, tmp_path_factory.mktemp("runs"), experiment_id="reference")
    return config, train(config)


# --- one finished run -------------------------------------------------------------------------------------


def test_run_learns_log_g(finished_run):
    _, row = finished_run
    assert row["test_r2"] > 0.8
    assert row["test_n"] == 80
    assert row["epochs_run"] == 3
    assert row["best_epoch"] in (1, 2)


def test_run_appends_one_csv_row(finished_run):
    config, row = finished_run
    frame = read_results(config.results_csv)
    assert list(frame["experiment_id"]) == ["reference"]
    assert list(frame.columns[: len(KNOWN_COLUMNS)]) == list(KNOWN_COLUMNS)
    stored = frame.iloc[0]
    for key in ("test_r2", "test_mae", "test_rmse", "test_bias"):
        assert stored[key] == pytest.approx(row[key], rel=1e-12)
    assert (stored["model"], stored["input"], stored["target"]) == ("mlp_3L_512", "standardized", "log_g")
    assert (stored["group"], stored["world_size"], stored["train_size"]) == ("adhoc", 1, 440)
    assert stored["params"] == 230_401
    assert stored["spectra_per_s"] > 0


def test_run_writes_epoch_log(finished_run):
    config, _ = finished_run
    records = read_jsonl(config.run_dir / "epochs.jsonl")
    assert [record["epoch"] for record in records] == [0, 1, 2]
    for record in records:
        assert EPOCH_KEYS <= set(record)
        assert 0 <= record["data_wait_share"] <= 1
    assert records[-1]["val_loss"] < records[0]["val_loss"]


def test_run_writes_header_and_log(finished_run):
    config, _ = finished_run
    header = json.loads((config.run_dir / "config.json").read_text())
    assert header["config"]["experiment_id"] == "reference"
    assert header["world_size"] == 1
    assert header["data_path"] == "resident"
    assert header["steps_per_epoch"] == 440 // 32
    assert "torch" in header["environment"]
    assert header["code_revision"]
    log_text = (config.run_dir / "train.log").read_text()
    assert "run header:" in log_text
    assert "epoch=2" in log_text


def test_run_saves_sorted_test_predictions(finished_run):
    config, row = finished_run
    frame = load_predictions(config.run_dir / "test_predictions.npz")
    assert len(frame) == 80
    assert np.all(np.diff(frame["sample_id"]) > 0)
    assert {"mag", "snr"} <= set(frame.columns)
    residual = frame["y_pred"] - frame["y_true"]
    assert float(np.mean(np.abs(residual))) == pytest.approx(row["test_mae"], rel=1e-9)


def test_run_saves_binned_metrics(finished_run):
    config, row = finished_run
    metrics = json.loads((config.run_dir / "test_metrics.json").read_text())
    mag_bins = metrics["binned"]["mag"]
    assert [entry["bin"] for entry in mag_bins] == ["[20.5, 21)", "[21, 21.5)", "[21.5, 22)", "[22, 22.5]"]
    assert sum(entry["n"] for entry in mag_bins) == 80
    assert row["test_r2_mag_20.5_21"] == pytest.approx(mag_bins[0]["r2"])
    assert "snr" in metrics["binned"]


def test_best_checkpoint_loads_into_fresh_model(finished_run):
    config, row = finished_run
    best = load_checkpoint(config.run_dir / "best.pt")
    assert best["epoch"] == row["best_epoch"]
    assert not any(key.startswith("_orig_mod.") for key in best["model"])
    model = model_from_checkpoint(best)
    assert not isinstance(model, InputStandardizer)  # input standardisation is off by default
    raw = build_model(best["model_name"], n_pixels=best["n_pixels"], n_outputs=len(best["targets"]))
    raw.load_state_dict(best["model"])


def test_input_norm_checkpoint_round_trip(shards, tmp_path):
    config = make_config(shards, tmp_path, experiment_id="normed", input_norm=True, epochs=1)
    row = train(config)
    model = model_from_checkpoint(load_checkpoint(config.run_dir / "best.pt"))
    assert isinstance(model, InputStandardizer)
    assert model.std.shape == model.mean.shape
    assert (model.std > 0).all()
    assert np.isfinite(row["test_r2"])


# --- resume ----------------------------------------------------------------------------------------------


def test_resume_after_failure_matches_uninterrupted(finished_run, shards, tmp_path, monkeypatch):
    reference_config, reference_row = finished_run
    config = make_config(shards, tmp_path, experiment_id="interrupted")
    monkeypatch.setenv(FAIL_AFTER_STEPS_ENV, "20")  # 13 steps per epoch: fails inside epoch 1
    with pytest.raises(SimulatedFailure, match="stopping after step 20"):
        train(config)
    assert not config.results_csv.exists()
    assert len(read_jsonl(config.run_dir / "epochs.jsonl")) == 1

    monkeypatch.delenv(FAIL_AFTER_STEPS_ENV)
    row = train(make_config(shards, tmp_path, experiment_id="interrupted", resume=True))
    for key in ("test_r2", "test_mae", "test_rmse", "test_bias", "best_epoch", "epochs_run"):
        assert row[key] == reference_row[key], key
    ours = load_checkpoint(config.run_dir / "best.pt")["model"]
    theirs = load_checkpoint(reference_config.run_dir / "best.pt")["model"]
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0, msg=name)
    assert [r["epoch"] for r in read_jsonl(config.run_dir / "epochs.jsonl")] == [0, 1, 2]
    assert len(read_results(config.results_csv)) == 1


def test_resume_of_finished_run_adds_no_row(finished_run, shards):
    config, row = finished_run
    again = train(make_config(shards, config.out_dir, experiment_id="reference", resume=True))
    assert again == json.loads(json.dumps(row))
    assert len(read_results(config.results_csv)) == 1


def test_resume_rejects_changed_setting(finished_run, shards):
    config, _ = finished_run
    changed = make_config(shards, config.out_dir, experiment_id="reference", resume=True, lr=1e-2)
    (config.run_dir / "result.json").rename(config.run_dir / "result.json.saved")
    try:
        with pytest.raises(ValueError, match=r"settings differ from the interrupted run \(lr: checkpoint 0.003, now "
                                             r"0.01\)"):
            train(changed)
    finally:
        (config.run_dir / "result.json.saved").rename(config.run_dir / "result.json")


def interrupt_after_first_epoch(shards, out_dir, monkeypatch, **overrides) -> TrainConfig:
    """Start a run and stop it in epoch 1 (13 steps per epoch), after the checkpoint of epoch 0."""
    config = make_config(shards, out_dir, experiment_id="interrupted", **overrides)
    monkeypatch.setenv(FAIL_AFTER_STEPS_ENV, "14")
    with pytest.raises(SimulatedFailure):
        train(config)
    monkeypatch.delenv(FAIL_AFTER_STEPS_ENV)
    return config


def test_resume_rejects_other_shard_set(shards, other_shards, tmp_path, monkeypatch):
    config = interrupt_after_first_epoch(shards, tmp_path, monkeypatch)
    checkpoint_bytes = (config.run_dir / "checkpoint.pt").read_bytes()
    other = make_config(other_shards, tmp_path, experiment_id="interrupted", resume=True)
    with pytest.raises(ValueError, match="data differs from the interrupted run") as raised:
        train(other)
    message = str(raised.value)
    assert str(shards.resolve()) in message
    assert str(other_shards.resolve()) in message
    assert "train 440, val 80, test 80" in message
    assert "train 400, val 80, test 80" in message
    assert f"pass the original --data {shards.resolve()}" in message
    assert "rerun without --resume under a new --experiment-id" in message
    assert not config.results_csv.exists()
    assert (config.run_dir / "checkpoint.pt").read_bytes() == checkpoint_bytes


def test_resume_rejects_rewritten_shard_set(shards, other_shards, tmp_path, monkeypatch):
    data_dir = tmp_path / "shards"
    shutil.copytree(shards, data_dir)
    config = interrupt_after_first_epoch(data_dir, tmp_path, monkeypatch)
    shutil.rmtree(data_dir)
    shutil.copytree(other_shards, data_dir)
    with pytest.raises(ValueError, match=f"the shard set at {data_dir.resolve()} changed since the interrupted run"):
        train(make_config(data_dir, tmp_path, experiment_id="interrupted", resume=True))
    assert not config.results_csv.exists()


def test_resume_accepts_moved_shard_set(finished_run, shards, tmp_path, monkeypatch):
    _, reference_row = finished_run
    interrupt_after_first_epoch(shards, tmp_path, monkeypatch)
    moved = tmp_path / "moved"
    shutil.copytree(shards, moved)
    row = train(make_config(moved, tmp_path, experiment_id="interrupted", resume=True))
    assert row["test_r2"] == reference_row["test_r2"]
    assert row["epochs_run"] == reference_row["epochs_run"]


def test_resume_old_checkpoint_warns(shards, tmp_path, monkeypatch, caplog):
    config = interrupt_after_first_epoch(shards, tmp_path, monkeypatch)
    checkpoint = config.run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    del state["shard_set"]  # as written before checkpoints recorded the shard set
    save_checkpoint(checkpoint, state)
    with caplog.at_level(logging.WARNING, logger="specstream.training.run_files"):
        row = train(make_config(shards, tmp_path, experiment_id="interrupted", resume=True))
    assert row["epochs_run"] == 3
    assert "does not record which shard set it was trained on" in caplog.text


def test_new_run_rejects_existing_directory(finished_run, shards):
    config, _ = finished_run
    with pytest.raises(ValueError, match="already contains a run; pass --resume to continue it"):
        train(make_config(shards, config.out_dir, experiment_id="reference"))


def test_resume_without_checkpoint(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint at .*checkpoint.pt"):
        train(make_config(shards, tmp_path, resume=True))


# --- data paths and data checks ----------------------------------------------------------------------------


def test_streaming_path_learns(shards, tmp_path):
    row = train(make_config(shards, tmp_path, data_path="streaming", epochs=2))
    assert row["data_path"] == "streaming"
    assert row["test_r2"] > 0.8


def test_both_paths_predict_the_same(shards, tmp_path):
    """With the same weights, resident and streaming evaluation give identical test predictions."""
    torch.manual_seed(0)
    model = build_model("mlp_3L_512", n_pixels=128, n_outputs=1).eval()
    results = []
    for data_path, read_mode in (("resident", "mmap"), ("streaming", "mmap"), ("streaming", "pread")):
        config = make_config(shards, tmp_path, data_path=data_path, batch_size=24, read_mode=read_mode)
        data = build_data(config, World(), torch.device("cpu"))
        ids, values, extra = evaluation.predict_part(model, data.test, device=torch.device("cpu"),
                                                     autocast=contextlib.nullcontext)
        results.append((ids, values, extra))
    for other in results[1:]:
        torch.testing.assert_close(results[0][0], other[0], rtol=0, atol=0)
        torch.testing.assert_close(results[0][1], other[1], rtol=0, atol=0, equal_nan=True)
        assert results[0][2] == other[2] == ["mag", "snr"]


def test_two_targets(shards, tmp_path):
    row = train(make_config(shards, tmp_path, epochs=1, targets=("log_g", "T_eff")))
    assert row["target"] == "log_g,T_eff"
    assert "test_r2_T_eff" in row
    run_dir = tmp_path / "adhoc-mlp_3L_512-standardized-s0"
    assert len(load_predictions(run_dir / "test_predictions_T_eff.npz")) == 80


def test_train_size_uses_first_samples(shards, tmp_path):
    row = train(make_config(shards, tmp_path, epochs=1, train_size=100))
    header = json.loads((tmp_path / row["experiment_id"] / "config.json").read_text())
    assert row["train_size"] == 100
    assert header["steps_per_epoch"] == 100 // 32


def test_train_size_above_split(shards, tmp_path):
    with pytest.raises(ValueError, match="train_size=5000 exceeds the 440 samples of the training split"):
        train(make_config(shards, tmp_path, train_size=5000))


def test_unknown_target(shards, tmp_path):
    with pytest.raises(ValueError, match=r"targets \['vsini'\] are not label columns of"):
        train(make_config(shards, tmp_path, targets=("vsini",)))


def test_batch_larger_than_split(shards, tmp_path):
    with pytest.raises(ValueError, match=r"fewer than one global batch \(batch_size 1000 x 1 ranks\)"):
        train(make_config(shards, tmp_path, batch_size=1000))


def test_more_ranks_than_val_samples(shards, tmp_path):
    world = World(rank=0, world_size=100, local_world_size=100)
    with pytest.raises(ValueError, match="the val split of .* has 80 samples, fewer than the 100 ranks"):
        build_data(make_config(shards, tmp_path), world, torch.device("cpu"))


def test_label_scaling_rejects_constant_label():
    manifest = {"label_names": ["log_g"], "label_stats": {"log_g": {"mean": 3.0, "std": 0.0}}}
    with pytest.raises(ValueError, match="label 'log_g' of d has training-split mean 3.0 and std 0.0"):
        label_scaling(manifest, ("log_g",), "d")


def _manifest(n_pixels=4096, dtype="float16"):
    return {"dtype": dtype, "n_pixels": n_pixels, "has_mask": False, "label_names": ["log_g"] * 8}


def test_auto_path_on_cpu_uses_free_ram(monkeypatch):
    from specstream.training import data_setup

    sizes = {"train": 1_000_000, "val": 50_000, "test": 1000}
    monkeypatch.setattr(data_setup, "available_ram_bytes", lambda: 100 * 2**30)
    path, reason = choose_data_path("auto", _manifest(), sizes, World(), torch.device("cpu"))
    assert path == "resident"
    assert "16.08 GiB per rank" in reason
    assert "100.00 GiB RAM available" in reason
    monkeypatch.setattr(data_setup, "available_ram_bytes", lambda: 60 * 2**30)
    path, _ = choose_data_path("auto", _manifest(), sizes, World(), torch.device("cpu"))
    assert path == "streaming"


def test_auto_path_counts_local_ranks(monkeypatch):
    from specstream.training import data_setup

    sizes = {"train": 1_000_000, "val": 50_000, "test": 1000}
    monkeypatch.setattr(data_setup, "available_ram_bytes", lambda: 60 * 2**30)
    world = World(rank=0, world_size=4, local_world_size=4)
    path, reason = choose_data_path("auto", _manifest(), sizes, world, torch.device("cpu"))
    assert "4.02 GiB per rank" in reason
    assert path == "streaming"  # 4 ranks x 4.02 GiB exceed 25 % of 60 GiB, though one rank's part would not


@pytest.mark.parametrize("requested", ["resident", "streaming"])
def test_requested_path_is_kept(requested):
    path, reason = choose_data_path(requested, _manifest(), {"train": 10}, World(), torch.device("cpu"))
    assert path == requested
    assert reason.startswith(f"--data-path {requested}")


# --- steps and early stopping ---------------------------------------------------------------------------


def test_learning_rate_warmup_then_cosine():
    def schedule(step):
        return learning_rate(step, peak_lr=1.0, total_steps=110, warmup_steps=10)

    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.5)
    assert schedule(110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(0, peak_lr=2e-3, total_steps=5, warmup_steps=0) == pytest.approx(2e-3)


def test_masked_loss_ignores_unset_labels():
    outputs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    targets = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    total, count = masked_squared_error(outputs, targets)
    assert total.item() == pytest.approx(1.0 + 4.0 + 9.0)
    assert count.item() == 3


def test_early_stopping_after_patience():
    progress = Progress()
    improved = [progress.record_validation(epoch, loss, patience=2)
                for epoch, loss in enumerate([1.0, 0.9, 0.95, math.nan])]
    assert improved == [True, True, False, False]
    assert progress.best_epoch == 1
    assert progress.best_val_loss == 0.9
    assert progress.stopped_early


def test_early_stopping_resets_on_improvement():
    progress = Progress()
    for epoch, loss in enumerate([1.0, 1.1, 0.8, 0.85]):
        progress.record_validation(epoch, loss, patience=2)
    assert not progress.stopped_early
    assert progress.epochs_without_improvement == 1


# --- config and command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ({"model": "mlp_9L"}, "model must be one of .*mlp_3L_1024.*; got 'mlp_9L'"),
    ({"input_mode": "raw"}, "input_mode must be one of flux_only, whitening, standardized, noise_free; got 'raw'"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"batch_size": 8.0}, "batch_size must be an integer >= 1, got 8.0"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ({"lr": math.inf}, "lr must be a finite number > 0, got inf"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
    ({"warmup_epochs": 30.0}, r"warmup_epochs must be a finite number in \[0, epochs=20\], got 30.0"),
    ({"train_size": 0}, "train_size must be an integer >= 1, got 0"),
    ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ({"seed": -1}, r"seed must be an integer in \[0, 9223372036854775807\], got -1"),
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16; got 'fp16'"),
    ({"data_path": "memory"}, "data_path must be one of auto, streaming, resident; got 'memory'"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda; got 'tpu'"),
    ({"read_mode": "mapped"}, "read_mode must be one of mmap, pread; got 'mapped'"),
    ({"targets": ("log_g", "log_g")}, r"targets must be distinct, non-empty label names, got \['log_g', 'log_g'\]"),
    ({"experiment_id": "a/b"}, "experiment_id must be a plain directory name without slashes, got 'a/b'"),
    ({"input_mode": "whitening", "noise_level": 0.0}, "noise_level must be > 0 with input_mode 'whitening'"),
    ({"data": ""}, "data must be a shard directory or URL prefix, got ''"),
])
def test_config_rejects_invalid_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"data": "shards", **overrides})


def test_config_defaults_are_reference_protocol():
    config = TrainConfig(data="shards", group="MLP_100k")
    assert (config.epochs, config.batch_size, config.lr, config.weight_decay, config.patience) == (
        20, 1024, 1e-3, 1e-4, 10)
    assert config.experiment_id == "MLP_100k-mlp_3L_1024-flux_only-s0"
    assert str(config.results_csv) == "runs/results.csv"
    assert config.compile


def test_parser_defaults_match_config():
    config = config_from_args(build_parser().parse_args(["--data", "d"]))
    assert config.input_norm is False  # raw input unless --input-norm, as TrainConfig and the README document
    assert config.compile is True
    assert config == TrainConfig(data="d")
    assert config_from_args(build_parser().parse_args(["--data", "d", "--input-norm"])).input_norm is True


def test_parser_maps_options_to_fields():
    args = build_parser().parse_args([
        "--data", "d", "--out", "o", "--input", "whitening", "--target", "log_g,T_eff", "--results", "r.csv",
        "--no-compile", "--resume", "--train-size", "500", "--warmup-epochs", "0.5", "--data-path", "streaming",
    ])
    config = config_from_args(args)
    assert config.input_mode == "whitening"
    assert config.targets == ("log_g", "T_eff")
    assert str(config.out_dir) == "o"
    assert str(config.results_csv) == "r.csv"
    assert (config.compile, config.resume, config.train_size, config.warmup_epochs) == (False, True, 500, 0.5)
    assert config.data_path == "streaming"


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--out", "--experiment-id", "--group", "--model", "--input", "--target", "--epochs",
                   "--batch-size", "--lr", "--weight-decay", "--patience", "--warmup-epochs", "--train-size",
                   "--noise-level", "--seed", "--num-workers", "--no-compile", "--precision", "--data-path",
                   "--resume", "--results", "--device", "--log-every", "--nproc"):
        assert option in text, option
    assert "Samples per step on each rank" in text  # field docstrings become the help text


def test_main_exit_code_for_invalid_config(capsys):
    assert main(["--data", "d", "--epochs", "0"]) == 2
    assert "error: epochs must be an integer >= 1, got 0" in capsys.readouterr().err


def test_main_exit_code_for_missing_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "runs")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_main_out_is_file(shards, tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    assert main(["--data", str(shards), "--out", str(tmp_path / "runs"), "--no-compile"]) == 2
    assert f"failed to create folder {tmp_path / 'runs'}" in capsys.readouterr().err


def main_arguments(shards, out_dir, experiment_id: str) -> list[str]:
    """Return the command-line options of make_config's settings."""
    return ["--data", str(shards), "--out", str(out_dir), "--experiment-id", experiment_id, "--model", "mlp_3L_512",
            "--input", "standardized", "--epochs", "3", "--batch-size", "32", "--lr", "3e-3", "--no-compile",
            "--num-workers", "0", "--log-every", "5", "--data-path", "resident"]


def press_ctrl_c_in_epoch(monkeypatch, interrupted_epoch: int) -> None:
    """Make the trainer receive SIGINT, as from Ctrl-C, at the start of epoch `interrupted_epoch`."""
    original = Stepper.run_epoch

    def run_epoch(self, loader, epoch, first_step):
        if epoch == interrupted_epoch:
            signal.raise_signal(signal.SIGINT)  # Python raises KeyboardInterrupt on return
        return original(self, loader, epoch, first_step)

    monkeypatch.setattr(Stepper, "run_epoch", run_epoch)


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")


def test_interrupt_then_resume(finished_run, shards, tmp_path, monkeypatch, capsys):
    _, reference_row = finished_run
    argv = main_arguments(shards, tmp_path, "stopped")
    press_ctrl_c_in_epoch(monkeypatch, 1)
    assert run_main(argv) == 130
    run_dir = tmp_path / "stopped"
    checkpoint = run_dir / "checkpoint.pt"
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"interrupted during epoch 1; the last checkpoint is {checkpoint}, saved after epoch 0; "
                     "rerun the same command with --resume to continue"]
    assert load_checkpoint(checkpoint)["progress"]["next_epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))
    assert "stopped by KeyboardInterrupt" in (run_dir / "train.log").read_text()

    monkeypatch.undo()
    assert run_main([*argv, "--resume"]) == 0
    stored = read_results(tmp_path / "results.csv")
    assert list(stored["experiment_id"]) == ["stopped"]
    assert stored.iloc[0]["test_r2"] == pytest.approx(reference_row["test_r2"], rel=1e-12)


def test_interrupt_before_first_checkpoint(shards, tmp_path, monkeypatch, capsys):
    argv = main_arguments(shards, tmp_path, "stopped")
    press_ctrl_c_in_epoch(monkeypatch, 0)
    assert run_main(argv) == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"interrupted during epoch 0; {tmp_path / 'stopped'} has no checkpoint yet, so rerun the same "
                     "command without --resume to start over"]
    monkeypatch.undo()
    assert run_main(argv) == 0


def test_nproc_interrupt_waits_for_torchrun(tmp_path, monkeypatch, capfd):
    # A stand-in for torchrun that takes a while to stop its ranks after SIGINT.
    ready = tmp_path / "torchrun.pid"
    stand_in = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        try:
            Path({str(ready)!r}).write_text(str(os.getpid()))
            time.sleep(60)
        except KeyboardInterrupt:
            time.sleep(1)
            print("ranks stopped", flush=True)
            sys.exit(130)
    """)
    monkeypatch.setattr(train_module, "torchrun_command", lambda nproc, args: [sys.executable, "-c", stand_in])
    main_thread = threading.main_thread().ident

    def press_ctrl_c():
        # The terminal sends SIGINT to the foreground process group: torchrun and this process.
        while not (ready.is_file() and ready.read_text()):
            time.sleep(0.01)
        os.kill(int(ready.read_text()), signal.SIGINT)
        signal.pthread_kill(main_thread, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    status = run_main(["--nproc", "2", "--data", "d"])
    presser.join()
    assert status == 130
    assert "ranks stopped" in capfd.readouterr().out


def test_torchrun_command_uses_nproc_per_node():
    command = torchrun_command(4, ["--data", "d"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert command[-4:] == ["-m", "specstream.train", "--data", "d"]


def test_cli_train_forwards_options(tmp_path):
    from typer.testing import CliRunner

    from specstream.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "manifest not found" in result.output


# --- compiled and GPU runs --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not compile_support(torch.device("cpu"))[0], reason="torch.compile cannot run on this CPU")
def test_compiled_run_compiles_two_graphs(shards, tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    # 440 training samples in 18 full batches of 24; the 80 val and test samples end with a batch of 8.
    row = train(make_config(shards, tmp_path, compile=True, epochs=2, batch_size=24))
    assert row["compiled"] is True
    # One graph for training and one for evaluation: no recompilation per epoch or for the short batch.
    assert counters["stats"]["unique_graphs"] == 2
    assert row["test_r2"] > 0.8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_resident_bf16(shards, tmp_path):
    row = train(make_config(shards, tmp_path, device="cuda", compile=True))
    assert row["device"].startswith("cuda")
    assert row["precision"] == "bf16"
    assert row["data_path"] == "resident"
    assert row["test_r2"] > 0.8
