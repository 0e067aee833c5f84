import csv
import json
import math
import multiprocessing
import subprocess
from pathlib import Path

import numpy as np
import pytest

from specstream.results import (
    KNOWN_COLUMNS,
    REFERENCE_COLUMNS,
    JsonlLog,
    append_result,
    code_revision,
    environment_summary,
    read_jsonl,
    read_results,
)


def _row(experiment_id, **extra):
    row = {
        "experiment_id": experiment_id,
        "model": "mlp_3L_1024",
        "input": "flux_only",
        "target": "log_g",
        "test_r2": 0.4671,
        "test_mae": 0.645,
        "train_size": 100_000,
        "train_time": 204.0,
    }
    row.update(extra)
    return row


def _read_raw(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def test_header_starts_with_reference_columns(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("MLP_100k"))
    header = _read_raw(path)[0]
    assert tuple(header[: len(REFERENCE_COLUMNS)]) == REFERENCE_COLUMNS
    assert tuple(header) == KNOWN_COLUMNS


def test_round_trip_values(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("MLP_100k", seed=np.int64(7), params=4_851_713, world_size=1, device=None))
    table = read_results(path)
    assert len(table) == 1
    assert table.loc[0, "experiment_id"] == "MLP_100k"
    assert table.loc[0, "test_r2"] == 0.4671
    assert table.loc[0, "seed"] == 7
    assert table.loc[0, "params"] == 4_851_713
    assert math.isnan(table.loc[0, "device"])


def test_extra_keys_extend_header(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("a", note="first"))
    append_result(path, _row("b", r2_mag_21="0.5"))
    append_result(path, _row("c"))
    rows = _read_raw(path)
    header = rows[0]
    assert header[len(KNOWN_COLUMNS):] == ["note", "r2_mag_21"]
    assert all(len(row) == len(header) for row in rows)

    table = read_results(path)
    assert list(table["experiment_id"]) == ["a", "b", "c"]
    assert table.loc[0, "note"] == "first"
    assert table.loc[1, "r2_mag_21"] == 0.5
    assert math.isnan(table.loc[2, "r2_mag_21"])


def test_old_file_with_fewer_columns_rewritten(tmp_path):
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(REFERENCE_COLUMNS)
        writer.writerow(["CNN_1M", "cnn_4L_k5_wide", "whitening", "log_g", 0.4337, 0.681, 1_000_000, 13320])
    append_result(path, _row("MLP_100k", epochs_run=20))

    rows = _read_raw(path)
    assert tuple(rows[0]) == KNOWN_COLUMNS
    table = read_results(path)
    assert list(table["experiment_id"]) == ["CNN_1M", "MLP_100k"]
    assert table.loc[0, "test_r2"] == 0.4337
    assert table.loc[1, "epochs_run"] == 20
    assert math.isnan(table.loc[0, "epochs_run"])


def test_values_with_commas_and_quotes(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("x", note='lr=1e-3, "cosine"\nsecond line'))
    assert read_results(path).loc[0, "note"] == 'lr=1e-3, "cosine"\nsecond line'


def test_no_temporary_files_left(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("a"))
    append_result(path, _row("b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.csv.lock"]


def test_rejects_row_without_experiment_id(tmp_path):
    with pytest.raises(ValueError, match=r"has no experiment_id; set row\['experiment_id'\]"):
        append_result(tmp_path / "results.csv", {"model": "mlp_3L_1024"})


def test_rejects_unsupported_value_type(tmp_path):
    with pytest.raises(ValueError, match=r"column 'bins' has a value of type list; expected str, int, float"):
        append_result(tmp_path / "results.csv", _row("a", bins=[1, 2]))


def test_rejects_non_results_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"other.csv has no experiment_id column .* not a specstream results file"):
        append_result(path, _row("a"))
    assert path.read_text() == "a,b\n1,2\n"


def test_rejects_malformed_row(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, _row("a"))
    with open(path, "a") as stream:
        stream.write("b" + "," * (len(KNOWN_COLUMNS) + 2) + "\n")
    with pytest.raises(ValueError, match=r"results.csv line 3 has more fields than its header"):
        append_result(path, _row("c"))


def test_read_results_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results file .*missing.csv not found"):
        read_results(tmp_path / "missing.csv")


def _append_many(path, worker, n_rows):
    for i in range(n_rows):
        # Each worker adds its own extra column, so concurrent calls also widen the header.
        append_result(path, _row(f"w{worker}-{i}", seed=worker, **{f"extra_{worker}": i}))


def test_concurrent_appends_keep_every_row(tmp_path):
    path = tmp_path / "results.csv"
    n_workers, n_rows = 4, 20
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(path, w, n_rows)) for w in range(n_workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * n_workers

    rows = _read_raw(path)
    header = rows[0]
    assert all(len(row) == len(header) for row in rows)
    assert sorted(header[len(KNOWN_COLUMNS):]) == [f"extra_{w}" for w in range(n_workers)]

    table = read_results(path)
    assert len(table) == n_workers * n_rows
    expected_ids = {f"w{w}-{i}" for w in range(n_workers) for i in range(n_rows)}
    assert set(table["experiment_id"]) == expected_ids
    for _, row in table.iterrows():
        worker, index = (int(part) for part in row["experiment_id"][1:].split("-"))
        assert row["seed"] == worker
        assert row[f"extra_{worker}"] == index
        assert row["test_r2"] == 0.4671


def test_jsonl_log_appends_flushed_lines(tmp_path):
    path = tmp_path / "run" / "epochs.jsonl"
    with JsonlLog(path) as log:
        log.write({"epoch": 0, "loss": np.float32(0.5), "val_r2": float("nan")})
        # Flushed per line, so a reader sees the record while the log is still open.
        assert read_jsonl(path) == [{"epoch": 0, "loss": 0.5, "val_r2": None}]
    with JsonlLog(path) as log:
        log.write({"epoch": 1, "path": Path("/tmp/x"), "lr": [1e-3, float("inf")]})
    assert read_jsonl(path) == [
        {"epoch": 0, "loss": 0.5, "val_r2": None},
        {"epoch": 1, "path": "/tmp/x", "lr": [1e-3, None]},
    ]
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))


def test_read_jsonl_skips_torn_last_line(tmp_path):
    path = tmp_path / "epochs.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1, "lo')
    assert read_jsonl(path) == [{"epoch": 0}]


def test_read_jsonl_rejects_bad_middle_line(tmp_path):
    path = tmp_path / "epochs.jsonl"
    path.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match=r"epochs.jsonl line 2 is not valid JSON"):
        read_jsonl(path)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"log file .*none.jsonl not found"):
        read_jsonl(tmp_path / "none.jsonl")


def test_code_revision_of_new_repository(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert code_revision(tmp_path) == "unknown"  # no commit yet

    (tmp_path / "a.txt").write_text("one\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "first"], check=True)
    short_hash = subprocess.run(
        git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_revision(tmp_path) == short_hash

    (tmp_path / "a.txt").write_text("two\n")
    assert code_revision(tmp_path) == f"{short_hash}-dirty"


def test_code_revision_outside_repository(tmp_path):
    assert code_revision(tmp_path) == "unknown"


def test_environment_summary_fields():
    summary = environment_summary()
    for key in ("python", "torch", "numpy", "numba", "device", "cpu_count", "gpu_count"):
        assert key in summary, key
    assert summary["cpu_count"] >= 1
    assert summary["numpy"] == np.__version__


def test_read_results_of_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="results file .*empty.csv is not a results CSV .*; pass the results.csv"):
        read_results(path)
