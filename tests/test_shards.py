"""`specstream shard`: splits, shard contents, manifest, float16, atomic writes and resume."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from specstream.cli import app
from specstream.data import load_split_arrays, read_manifest
from specstream.shards import ShardOptions, write_shards
from specstream.shards import format as fmt
from specstream.shards import writer as writer_module
from specstream.shards.progress import PROGRESS_NAME
from specstream.shards.split import SplitRule, split_keys
from tests.conftest import make_arrays, make_labels, write_survey_file

OPTIONS = dict(test_size=7, val_size=9, block_size=8, shard_size_mb=0.02, chunk_size=13, fsync=False)


def two_files(tmp_path, n1=50, n2=37, n_pixels=64, mask=False):
    """Write two survey files and return their paths and the concatenated arrays in global-id order."""
    paths, fluxes, errors, labels, masks = [], [], [], [], []
    for i, n in enumerate((n1, n2)):
        flux, error, wave = make_arrays(n, n_pixels, seed=i)
        frame = make_labels(n, seed=i)
        file_mask = None
        if mask:
            file_mask = (np.random.default_rng(i).random((n, n_pixels)) < 0.1).astype(np.int8)
            masks.append(file_mask)
        paths.append(write_survey_file(tmp_path / f"in{i}.h5", flux, error, wave, frame, file_mask))
        fluxes.append(flux)
        errors.append(error)
        labels.append(frame)
    all_mask = np.concatenate(masks) if mask else None
    return paths, np.concatenate(fluxes), np.concatenate(errors), pd.concat(labels, ignore_index=True), all_mask


def directory_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# Splits

def test_split_rule_exact_sizes_and_disjoint():
    rule = SplitRule.build(seed=3, n_total=5000, n_test=1000, n_val=250)
    codes = rule.assign(np.arange(5000))
    assert np.count_nonzero(codes == 2) == 1000
    assert np.count_nonzero(codes == 1) == 250
    assert np.count_nonzero(codes == 0) == 3750


def test_split_rule_independent_of_chunking():
    rule = SplitRule.build(seed=1, n_total=1000, n_test=50, n_val=30)
    whole = rule.assign(np.arange(1000))
    pieces = np.concatenate([rule.assign(np.arange(start, min(start + 77, 1000))) for start in range(0, 1000, 77)])
    np.testing.assert_array_equal(whole, pieces)


def test_split_rule_depends_on_seed():
    first = SplitRule.build(seed=0, n_total=1000, n_test=100, n_val=0).assign(np.arange(1000))
    second = SplitRule.build(seed=1, n_total=1000, n_test=100, n_val=0).assign(np.arange(1000))
    assert not np.array_equal(first, second)


def test_split_keys_are_distinct():
    keys = split_keys(5, np.arange(100_000))
    assert len(np.unique(keys)) == 100_000


def test_split_rule_rejects_sizes_without_train():
    with pytest.raises(ValueError, match="leaves no training samples out of 10 spectra"):
        SplitRule.build(seed=0, n_total=10, n_test=6, n_val=4)


# Round trip and manifest

def test_round_trip_every_split(tmp_path):
    paths, flux, error, labels, _ = two_files(tmp_path)
    result = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    seen = []
    for split in fmt.SPLITS:
        arrays = load_split_arrays(tmp_path / "out", split)
        assert np.all(np.diff(arrays.ids) > 0), f"{split} ids are not ascending"
        np.testing.assert_array_equal(arrays.flux, flux[arrays.ids])
        np.testing.assert_array_equal(arrays.error, error[arrays.ids])
        for name in labels.columns:
            np.testing.assert_array_equal(arrays.labels[name].to_numpy(), labels[name].to_numpy()[arrays.ids])
        assert len(arrays.ids) == result.manifest["splits"][split]["n_samples"]
        seen.append(arrays.ids)
    all_ids = np.concatenate(seen)
    assert len(all_ids) == 87
    assert len(np.unique(all_ids)) == 87


def test_split_sizes_and_shard_counts(tmp_path):
    paths, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    splits = manifest["splits"]
    assert splits["test"]["n_samples"] == 7
    assert splits["val"]["n_samples"] == 9
    assert splits["train"]["n_samples"] == 87 - 16
    for split in splits.values():
        assert sum(s["n_samples"] for s in split["shards"]) == split["n_samples"]
        for shard in split["shards"]:
            assert sum(b["n_samples"] for b in shard["blocks"]) == shard["n_samples"]
    assert len(splits["train"]["shards"]) > 1


def test_split_independent_of_chunk_and_block_size(tmp_path):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "a", ShardOptions(**{**OPTIONS, "chunk_size": 5, "block_size": 3}))
    write_shards(paths, tmp_path / "b", ShardOptions(**{**OPTIONS, "chunk_size": 1000, "block_size": 64}))
    for split in fmt.SPLITS:
        np.testing.assert_array_equal(load_split_arrays(tmp_path / "a", split).ids,
                                      load_split_arrays(tmp_path / "b", split).ids)


def test_manifest_sources_and_ids(tmp_path):
    paths, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    assert manifest == read_manifest(tmp_path / "out")
    sources = manifest["sources"]
    assert [s["first_id"] for s in sources] == [0, 50]
    assert [s["n_spectra"] for s in sources] == [50, 37]
    for source, path in zip(sources, paths):
        assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert source["size_bytes"] == path.stat().st_size
    assert manifest["format_version"] == fmt.FORMAT_VERSION
    assert manifest["label_names"] == ["T_eff", "log_g", "M_H", "a_M", "C_M", "mag", "redshift", "snr"]
    assert manifest["dtype"] == "float32"
    np.testing.assert_allclose(manifest["wave"], 7100 + (np.arange(64) + 0.5) * 1750 / 64)


def test_manifest_training_stats(tmp_path):
    paths, flux, error, labels, _ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    ids = load_split_arrays(tmp_path / "out", "train").ids
    stats = manifest["stats"]
    np.testing.assert_allclose(stats["flux_mean"], flux[ids].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["flux_std"], flux[ids].astype(np.float64).std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats["error_mean"], error[ids].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["error_std"], error[ids].astype(np.float64).std(axis=0), rtol=1e-10)
    log_g = labels["log_g"].to_numpy()[ids]
    assert manifest["label_stats"]["log_g"]["count"] == len(ids)
    assert manifest["label_stats"]["log_g"]["mean"] == pytest.approx(log_g.mean(), rel=1e-12)
    assert manifest["label_stats"]["log_g"]["std"] == pytest.approx(log_g.std(), rel=1e-10)
    assert manifest["label_stats"]["log_g"]["min"] == log_g.min()
    assert manifest["label_stats"]["log_g"]["max"] == log_g.max()
    assert manifest["label_stats"]["C_M"]["count"] == 0  # all NaN in the test data


def test_masked_pixels_left_out_of_stats(tmp_path):
    paths, flux, error, _, mask = two_files(tmp_path, mask=True)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    assert manifest["has_mask"] is True
    ids = load_split_arrays(tmp_path / "out", "train").ids
    masked = np.ma.masked_array(flux[ids].astype(np.float64), mask=mask[ids] != 0)
    np.testing.assert_allclose(manifest["stats"]["flux_mean"], masked.mean(axis=0).filled(0), rtol=1e-12)
    np.testing.assert_allclose(manifest["stats"]["flux_std"], masked.std(axis=0).filled(0), rtol=1e-10)


def test_masked_and_unmasked_files_mix(tmp_path):
    paths, flux, *_ = two_files(tmp_path, mask=True)
    extra_flux, extra_error, wave = make_arrays(20, 64, seed=7)
    paths.append(write_survey_file(tmp_path / "no_mask.h5", extra_flux, extra_error, wave, make_labels(20, seed=7)))
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    assert manifest["has_mask"] is True
    splits = [load_split_arrays(tmp_path / "out", split) for split in fmt.SPLITS]
    ids = np.concatenate([arrays.ids for arrays in splits])
    stored_flux = np.concatenate([arrays.flux for arrays in splits])
    assert sorted(ids.tolist()) == list(range(len(flux) + 20))
    from_extra = ids >= len(flux)
    assert np.array_equal(stored_flux[from_extra], extra_flux[ids[from_extra] - len(flux)])


def test_shards_are_plain_tar_files(tmp_path):
    paths, flux, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    shard = manifest["splits"]["train"]["shards"][0]
    with tarfile.open(tmp_path / "out" / shard["name"]) as archive:
        names = archive.getnames()
        block = shard["blocks"][0]
        ids = np.load(io.BytesIO(archive.extractfile(f"{block['key']}.ids.npy").read()))
        block_flux = np.load(io.BytesIO(archive.extractfile(f"{block['key']}.flux.npy").read()))
    assert names[:4] == [f"{block['key']}.{role}.npy" for role in ("flux", "error", "labels", "ids")]
    np.testing.assert_array_equal(block_flux, flux[ids])


def test_shards_readable_by_webdataset(tmp_path):
    import webdataset as wds

    paths, flux, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS)).manifest
    shard = tmp_path / "out" / manifest["splits"]["val"]["shards"][0]["name"]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False).decode())
    assert len(samples) == len(manifest["splits"]["val"]["shards"][0]["blocks"])
    np.testing.assert_array_equal(samples[0]["flux.npy"], flux[samples[0]["ids.npy"]])


def test_output_is_reproducible(tmp_path):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "a", ShardOptions(**OPTIONS))
    write_shards(paths, tmp_path / "b", ShardOptions(**OPTIONS))
    assert directory_bytes(tmp_path / "a") == directory_bytes(tmp_path / "b")


# float16

def test_float16_values_and_reported_loss(tmp_path):
    paths, flux, error, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**{**OPTIONS, "dtype": "float16"})).manifest
    arrays = load_split_arrays(tmp_path / "out", "train", dtype="float16")
    np.testing.assert_array_equal(arrays.flux, flux[arrays.ids].astype(np.float16))
    loss = manifest["float16_loss"]
    all_ids = np.concatenate([load_split_arrays(tmp_path / "out", s).ids for s in fmt.SPLITS])
    exact = flux[all_ids].astype(np.float64)
    over_error = np.abs(exact.astype(np.float16).astype(np.float64) - exact) / error[all_ids]
    assert loss["flux"]["max_abs_over_error"] == pytest.approx(over_error.max(), rel=1e-12)
    assert loss["flux"]["rms_abs_over_error"] == pytest.approx(np.sqrt((over_error ** 2).mean()), rel=1e-9)
    assert 0 < loss["error"]["max_relative_normal"] <= 2.0 ** -11
    assert loss["n_values_per_array"] == exact.size


def test_float16_overflow_is_rejected(tmp_path):
    flux, error, wave = make_arrays(20, 16)
    flux[3, 5] = 1e6
    path = write_survey_file(tmp_path / "big.h5", flux, error, wave, make_labels(20))
    options = ShardOptions(**{**OPTIONS, "dtype": "float16", "test_size": 2, "val_size": 2})
    with pytest.raises(ValueError, match=r"flux value 1e\+06 of sample id 3 \(pixel 5\) exceeds the float16 range"):
        write_shards([path], tmp_path / "out", options)
    assert not (tmp_path / "out" / fmt.MANIFEST_NAME).exists()


# Bad rows

def test_bad_rows_raise_by_default(tmp_path):
    flux, error, wave = make_arrays(30, 16)
    error[4, 2] = 0.0
    path = write_survey_file(tmp_path / "bad.h5", flux, error, wave, make_labels(30))
    with pytest.raises(ValueError, match="error <= 0 at unmasked pixels"):
        write_shards([path], tmp_path / "out", ShardOptions(**{**OPTIONS, "test_size": 3, "val_size": 3}))


def test_same_input_twice_rejected(tmp_path):
    paths, *_ = two_files(tmp_path)
    with pytest.raises(ValueError, match="input files given more than once: .*in0.h5; their spectra"):
        write_shards([paths[0], paths[1], tmp_path / "." / "in0.h5"], tmp_path / "out", ShardOptions(**OPTIONS))


def test_cli_out_is_file(tmp_path):
    paths, *_ = two_files(tmp_path)
    (tmp_path / "out").write_text("")
    result = CliRunner().invoke(app, ["shard", *map(str, paths), "--out", str(tmp_path / "out"), "--test-size", "5",
                                      "--val-size", "5"])
    assert result.exit_code == 1
    assert f"error: failed to create folder {tmp_path / 'out'}: {tmp_path / 'out'} is a file" in result.output


def test_bad_rows_dropped_and_counted(tmp_path):
    flux, error, wave = make_arrays(30, 16)
    flux[[4, 9], 2] = np.nan
    path = write_survey_file(tmp_path / "bad.h5", flux, error, wave, make_labels(30))
    options = ShardOptions(**{**OPTIONS, "test_size": 3, "val_size": 3, "on_bad": "drop"})
    manifest = write_shards([path], tmp_path / "out", options).manifest
    kept = np.concatenate([load_split_arrays(tmp_path / "out", s).ids for s in fmt.SPLITS])
    assert sorted(set(range(30)) - set(kept.tolist())) == [4, 9]
    assert sum(split["n_dropped"] for split in manifest["splits"].values()) == 2
    assert manifest["dropped_rows"][0]["count"] == 2
    assert manifest["dropped_rows"][0]["rows"] == [4, 9]


# Output directory, atomic writes and resume

def test_existing_output_needs_resume_or_overwrite(tmp_path):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    with pytest.raises(ValueError, match="already contains shards or a manifest; pass --resume"):
        write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    before = directory_bytes(tmp_path / "out")
    write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS), overwrite=True)
    assert directory_bytes(tmp_path / "out") == before


class Crash(BaseException):
    """Stands for a kill: a BaseException that no library code catches."""


def crash_at(monkeypatch, method: str, after: int):
    """Make SplitWriter.`method` raise Crash on its call number `after` + 1."""
    original = getattr(writer_module.SplitWriter, method)
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):
        if calls["n"] == after:
            raise Crash()
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(writer_module.SplitWriter, method, wrapper)


def test_failed_run_does_not_block_rerun(tmp_path):
    flux, error, wave = make_arrays(60, 16)
    flux[50, 3] = np.nan
    path = write_survey_file(tmp_path / "bad.h5", flux, error, wave, make_labels(60))
    options = {**OPTIONS, "test_size": 3, "val_size": 3}
    with pytest.raises(ValueError, match="non-finite flux"):
        write_shards([path], tmp_path / "out", ShardOptions(**options))
    assert list((tmp_path / "out").glob(f".*{writer_module.TMP_SUFFIX}"))
    manifest = write_shards([path], tmp_path / "out", ShardOptions(**options, on_bad="drop")).manifest
    assert manifest["dropped_rows"][0]["rows"] == [50]
    assert not list((tmp_path / "out").glob(f".*{writer_module.TMP_SUFFIX}"))


def interrupted_run(tmp_path, monkeypatch, closed_shards: int) -> list:
    """Write two input files, stop a shard run after `closed_shards` closed shards and return the input paths."""
    paths, *_ = two_files(tmp_path)
    crash_at(monkeypatch, "_close_shard", closed_shards)
    with pytest.raises(Crash):
        write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    monkeypatch.undo()
    return paths


def flip_last_data_byte(data: bytes) -> bytes:
    return data[:-1025] + bytes([data[-1025] ^ 0xFF]) + data[-1024:]  # before the two 512-byte end blocks


@pytest.mark.parametrize("damage, message", [(lambda data: data[:1024], "has 1024 bytes, the progress file"),
                                             (flip_last_data_byte, "has SHA-256 .*, the progress file")])
def test_resume_rejects_damaged_closed_shard(tmp_path, monkeypatch, damage, message):
    paths = interrupted_run(tmp_path, monkeypatch, closed_shards=3)
    closed = sorted((tmp_path / "out").glob("*.tar"))[0]
    closed.write_bytes(damage(closed.read_bytes()))
    with pytest.raises(ValueError, match=f"closed shard .*{closed.name} {message}"):
        write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS), resume=True)


@pytest.mark.parametrize("method, after", [("_close_shard", 0), ("_close_shard", 3), ("_write_member", 23),
                                           ("_write_member", 37)])
def test_resume_gives_identical_output(tmp_path, monkeypatch, method, after):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "clean", ShardOptions(**OPTIONS))
    crash_at(monkeypatch, method, after)
    with pytest.raises(Crash):
        write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    monkeypatch.undo()

    out = tmp_path / "out"
    assert not (out / fmt.MANIFEST_NAME).exists()
    assert (out / PROGRESS_NAME).exists() or after == 0
    for shard in out.glob("*.tar"):  # every shard under its final name is complete
        with tarfile.open(shard) as archive:
            assert archive.getnames()
    finished_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    write_shards(paths, out, ShardOptions(**OPTIONS), resume=True)
    assert directory_bytes(out) == directory_bytes(tmp_path / "clean")
    if method == "_close_shard" and after > 0:
        progress_listed = set(finished_before)
        redone = [name for name in progress_listed if (out / name).stat().st_mtime_ns != finished_before[name]]
        assert redone == [], f"resume rewrote finished shards {redone}"


def test_resume_twice_interrupted(tmp_path, monkeypatch):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "clean", ShardOptions(**OPTIONS))
    for after in (2, 2):
        crash_at(monkeypatch, "_close_shard", after)
        with pytest.raises(Crash):
            write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS), resume=True)
        monkeypatch.undo()
    write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS), resume=True)
    assert directory_bytes(tmp_path / "out") == directory_bytes(tmp_path / "clean")


def test_resume_with_drops_and_float16(tmp_path, monkeypatch):
    flux, error, wave = make_arrays(90, 32)
    flux[[5, 40, 41, 77], 3] = np.inf
    path = write_survey_file(tmp_path / "bad.h5", flux, error, wave, make_labels(90))
    options = ShardOptions(**{**OPTIONS, "on_bad": "drop", "dtype": "float16", "shard_size_mb": 0.004})
    write_shards([path], tmp_path / "clean", options)
    crash_at(monkeypatch, "_close_shard", 4)
    with pytest.raises(Crash):
        write_shards([path], tmp_path / "out", options)
    monkeypatch.undo()
    write_shards([path], tmp_path / "out", options, resume=True)
    assert directory_bytes(tmp_path / "out") == directory_bytes(tmp_path / "clean")


def test_resume_rejects_other_options(tmp_path, monkeypatch):
    paths = interrupted_run(tmp_path, monkeypatch, closed_shards=2)
    with pytest.raises(ValueError, match=r"was written for other inputs or options \(seed: 0 -> 5\); rerun"):
        write_shards(paths, tmp_path / "out", ShardOptions(**{**OPTIONS, "seed": 5}), resume=True)


def test_resume_of_finished_run_does_nothing(tmp_path):
    paths, *_ = two_files(tmp_path)
    write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS))
    before = directory_bytes(tmp_path / "out")
    result = write_shards(paths, tmp_path / "out", ShardOptions(**OPTIONS), resume=True)
    assert result.bytes_written == 0
    assert directory_bytes(tmp_path / "out") == before


def test_options_are_validated():
    with pytest.raises(ValueError, match="dtype must be one of"):
        ShardOptions(dtype="float64")
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        ShardOptions(block_size=0)
    with pytest.raises(ValueError, match="on_bad must be one of"):
        ShardOptions(on_bad="ignore")
    with pytest.raises(ValueError, match="shard_size_mb must be > 0"):
        ShardOptions(shard_size_mb=0)


def test_val_size_fraction(tmp_path):
    paths, *_ = two_files(tmp_path)
    manifest = write_shards(paths, tmp_path / "out", ShardOptions(**{**OPTIONS, "val_size": 0.1})).manifest
    assert manifest["splits"]["val"]["n_samples"] == round(0.1 * 87)


def test_invalid_val_size(tmp_path):
    paths, *_ = two_files(tmp_path)
    with pytest.raises(ValueError, match="val_size must be a whole number of samples when >= 1, got 2.5"):
        write_shards(paths, tmp_path / "out", ShardOptions(**{**OPTIONS, "val_size": 2.5}))


# Command line

def test_cli_shard(tmp_path):
    paths, *_ = two_files(tmp_path)
    runner = CliRunner()
    args = ["shard", *map(str, paths), "--out", str(tmp_path / "out"), "--test-size", "7", "--val-size", "9",
            "--block-size", "8", "--shard-size", "0.02"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train 71 in" in result.output
    assert "MB/s written" in result.output
    manifest = json.loads((tmp_path / "out" / fmt.MANIFEST_NAME).read_text())
    assert manifest["splits"]["test"]["n_samples"] == 7


def test_cli_shard_reports_errors(tmp_path):
    paths, *_ = two_files(tmp_path)
    result = CliRunner().invoke(app, ["shard", *map(str, paths), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "test size 1000 + val size 4 leaves no training samples out of 87 spectra" in result.output


def test_cli_shard_drop_bad_lists_left_out_rows(tmp_path):
    flux, error, wave = make_arrays(40, 16, seed=3)
    flux[[4, 21], 7] = np.nan
    path = write_survey_file(tmp_path / "bad.h5", flux, error, wave, make_labels(40, seed=3))
    args = ["shard", str(path), "--out", str(tmp_path / "out"), "--test-size", "5", "--val-size", "5", "--drop-bad"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "left out 2 invalid rows (--drop-bad)" in result.output
    assert "2 rows with non-finite flux at unmasked pixels (rows 4, 21; first at row 4, pixel 7: nan)" in result.output
    manifest = json.loads((tmp_path / "out" / fmt.MANIFEST_NAME).read_text())
    assert manifest["dropped_rows"][0]["example"] == "row 4, pixel 7: nan"


def test_float16_rounding_matches_numpy():
    from specstream.shards.half import round_to_float16

    rng = np.random.default_rng(4)
    exact = (rng.standard_normal((64, 257)) * 10.0 ** rng.uniform(-9, 4, (64, 257))).astype(np.float32)
    exact[0, :8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 65504.0, 65519.99, 2.0**-24 * 0.5]  # ties, edges, zero
    exact[1, :3] = [5.96e-8, -3e-8, 1.0009765625 + 2.0**-12]  # subnormals and a tie to even
    with np.errstate(over="ignore"):
        expected = exact.astype(np.float16)
    half, widened, overflow = round_to_float16(exact)
    assert np.array_equal(half.view(np.uint16), expected.view(np.uint16))
    assert np.array_equal(widened.view(np.uint32), expected.astype(np.float32).view(np.uint32))
    assert overflow is None
    exact[5, 9] = 70000.0
    assert round_to_float16(exact)[2] == (5, 9)


def test_interrupted_shard_suggests_resume(tmp_path, monkeypatch):
    paths, *_ = two_files(tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("specstream.shards.write_shards", interrupt)
    result = CliRunner().invoke(app, ["shard", *map(str, paths), "--out", str(tmp_path / "out"), "--test-size", "5",
                                      "--val-size", "5"])
    assert result.exit_code == 130
    assert "interrupted; closed shards in" in result.output
    assert "rerun the same command with --resume" in result.output
