"""Experiment groups and the queue that runs them."""

from __future__ import annotations

import json
import sys

import pytest

from specstream import runner
from specstream.groups import GROUPS, expand, load_groups
from specstream.results import append_result, read_results


def test_reference_groups_hyperparameters():
    experiments = expand(["MLP_100k", "CNN_1M"], GROUPS)
    ids = [e.experiment_id for e in experiments]
    assert ids[:2] == ["MLP_100k-mlp_3L_1024-flux_only-s0", "MLP_100k-mlp_2L_2048-flux_only-s0"]
    assert len(experiments) == 6
    mlp, cnn = experiments[0], experiments[-1]
    assert (mlp.epochs, mlp.batch_size, mlp.lr, mlp.train_size) == (20, 1024, 1e-3, 100_000)
    assert (cnn.model, cnn.input_mode, cnn.epochs, cnn.batch_size, cnn.lr) == ("cnn_4L_k5_wide", "whitening",
                                                                               10, 2048, 5e-4)
    assert (cnn.weight_decay, cnn.patience) == (1e-4, 10)


def test_seeds_multiply_experiments():
    experiments = expand(["CNN_100k"], GROUPS, seeds=[0, 1, 2])
    assert len(experiments) == 6
    assert {e.seed for e in experiments} == {0, 1, 2}


def test_unknown_group():
    with pytest.raises(ValueError, match=r"unknown experiment groups \['NOPE'\]; known groups: \["):
        expand(["NOPE"], GROUPS)


def test_groups_file_adds_group(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"MINE": {"models": ["mlp_2L_1024"], "inputs": ["standardized"], "epochs": 3}}))
    (experiment,) = expand(["MINE"], load_groups(path))
    assert (experiment.model, experiment.input_mode, experiment.epochs, experiment.batch_size) == (
        "mlp_2L_1024", "standardized", 3, 1024)


@pytest.mark.parametrize("text,message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected an object mapping group names"),
    ('{"G": {"models": []}}', r"group G: 'models' must be a non-empty list of names, such as \[\"mlp_2L_256\"\]"),
    ('{"G": {"models": ["mlp_2L_256"]}}', "group G: 'inputs' must be a non-empty list of names"),
    ('{"G": {"models": "mlp_2L_256", "inputs": ["flux_only"]}}', "'models' must be a non-empty list of names"),
    ('{"G": {"models": ["mlp_9L_9"], "inputs": ["flux_only"]}}', r"unknown models \['mlp_9L_9'\]; known models: "),
    ('{"G": {"models": ["mlp_2L_256"], "inputs": ["flux_onyl"]}}', r"unknown inputs \['flux_onyl'\]"),
    ('{"G": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "batch_sise": 128}}',
     "unknown key 'batch_sise'; did you mean 'batch_size'\\?"),
    ('{"G": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "epochs": "two"}}',
     "'epochs' must be an integer >= 1, got 'two'"),
    ('{"G": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "lr": 0}}', "'lr' must be a number > 0, got 0"),
    ('{"G": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "input_norm": 1}}', "'input_norm' must be true or"),
    ('{"G": 3}', "group G must be an object of settings, found int"),
])
def test_groups_file_errors(tmp_path, text, message):
    path = tmp_path / "groups.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_groups(path)


def test_groups_file_changes_builtin_group(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"MLP_100k": {"epochs": 1}}))
    experiments = expand(["MLP_100k"], load_groups(path))
    assert len(experiments) == 5
    assert {(e.epochs, e.batch_size, e.train_size) for e in experiments} == {(1, 1024, 100_000)}


def test_run_command_checks_arguments(tmp_path):
    from typer.testing import CliRunner

    from specstream.cli import app

    base = ["run", "-e", "DEMO_MLP", "--data", str(tmp_path), "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, [*base, "--seeds", "a"])
    assert result.exit_code == 1
    assert "--seeds must be comma-separated integers such as 0,1,2, got 'a'" in result.output
    result = CliRunner().invoke(app, [*base, "--train-args", "--model mlp_3L_512 --no-compile"])
    assert result.exit_code == 1
    assert "--train-args must not set --model" in result.output
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(app, ["groups", "--groups-file", str(tmp_path / "bad.json")])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {tmp_path / 'bad.json'}: invalid JSON")
    assert not (tmp_path / "runs").exists()


def test_groups_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="groups file not found"):
        load_groups(tmp_path / "none.json")


def test_train_command_caps_train_size(tmp_path):
    (experiment,) = expand(["CNN_1M"], GROUPS)
    command = runner.train_command(experiment, "shards", tmp_path, tmp_path / "r.csv", ["--no-compile"],
                                   train_size_cap=5000)
    assert "--train-size" not in command
    assert command[-1] == "--no-compile"
    command = runner.train_command(experiment, "shards", tmp_path, tmp_path / "r.csv", [], train_size_cap=None)
    assert command[command.index("--train-size") + 1] == "1000000"


def fake_train_command(experiment, data, out_dir, results_csv, extra_args, train_size_cap=None):
    """A stand-in for the trainer: appends a result row, or fails for the whitening input."""
    code = (
        "import sys; from specstream.results import append_result\n"
        f"if {experiment.input_mode!r} == 'whitening': sys.exit(3)\n"
        f"append_result({str(results_csv)!r}, {{'experiment_id': {experiment.experiment_id!r}, 'test_r2': 0.5}})\n"
    )
    return [sys.executable, "-c", code]


def test_queue_runs_and_skips_completed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runner, "train_command", fake_train_command)
    monkeypatch.setattr(runner, "POLL_INTERVAL_S", 0.05)
    monkeypatch.setattr(runner, "_cuda_device_count", lambda: 0)
    results_csv = tmp_path / "results.csv"
    experiments = expand(["CNN_100k", "MLP_1M"], GROUPS)  # flux_only, whitening, whitening
    append_result(results_csv, {"experiment_id": experiments[2].experiment_id, "test_r2": 0.1})

    outcomes = runner.run_experiments(experiments, data="d", out_dir=tmp_path / "runs", results_csv=results_csv,
                                      gpus=["0", "1"])
    codes = {o.experiment.experiment_id: o.returncode for o in outcomes}
    assert codes == {experiments[0].experiment_id: 0, experiments[1].experiment_id: 3,
                     experiments[2].experiment_id: None}
    ids = list(read_results(results_csv)["experiment_id"])
    assert sorted(ids) == sorted([experiments[2].experiment_id, experiments[0].experiment_id])
    assert (tmp_path / "runs" / experiments[1].experiment_id / "run.log").exists()
    assert "--gpus 0,1 given, but this machine shows no CUDA device: the 2 runs train on the CPU, 2 at a time" \
        in caplog.text


def test_train_command_input_norm_flag(tmp_path):
    demo = expand(["DEMO_MLP"], GROUPS)[0]
    reference = expand(["MLP_100k"], GROUPS)[0]
    assert "--input-norm" in runner.train_command(demo, "d", tmp_path, tmp_path / "r.csv", [])
    reference_command = runner.train_command(reference, "d", tmp_path, tmp_path / "r.csv", [])
    assert "--no-input-norm" in reference_command
    assert "--input-norm" not in reference_command


def test_groups_command_shows_input_choice():
    from typer.testing import CliRunner

    from specstream.cli import app

    result = CliRunner().invoke(app, ["groups"])
    assert result.exit_code == 0
    lines = {line.split(":")[0]: line for line in result.output.splitlines()}
    assert lines["MLP_100k"].endswith("input raw")
    assert lines["DEMO_MLP"].endswith("input standardised per pixel")


def test_bench_reads_groups_file(tmp_path):
    from typer.testing import CliRunner

    from specstream.cli import app

    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"TINY": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "epoch": 2}}))
    result = CliRunner().invoke(app, ["bench", "--data", str(tmp_path), "-e", "TINY", "--groups-file", str(path)])
    assert result.exit_code == 1
    assert "group TINY: unknown key 'epoch'; did you mean 'epochs'?" in result.output
    path.write_text(json.dumps({"TINY": {"models": ["mlp_2L_256"], "inputs": ["flux_only"], "epochs": 2}}))
    result = CliRunner().invoke(app, ["bench", "--data", str(tmp_path), "-e", "TINY", "--groups-file", str(path)])
    assert result.exit_code == 1
    assert "manifest not found" in result.output
