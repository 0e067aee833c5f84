"""Reading survey files in both layouts, and every validation message."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from specstream.io import SURVEY_KEYS, SurveyWriter, describe, iter_chunks, read_labels
from tests.conftest import make_arrays, make_labels


def collect(paths, **kwargs):
    chunks = list(iter_chunks(paths, **kwargs))
    flux = np.concatenate([c.flux for c in chunks])
    labels = pd.concat([c.labels for c in chunks], ignore_index=True)
    return chunks, flux, labels


def test_survey_layout_round_trip(survey_file):
    path = survey_file(n=50, n_pixels=32)
    info = describe(path)
    assert info.layout == "survey"
    assert (info.n_spectra, info.n_pixels, info.has_mask) == (50, 32, False)
    chunks, flux, labels = collect([path], chunk_size=16)
    assert [len(c.flux) for c in chunks] == [16, 16, 16, 2]
    expected_flux, _, _ = make_arrays(50, 32, 0)
    np.testing.assert_array_equal(flux, expected_flux)
    pd.testing.assert_frame_equal(labels, make_labels(50, 0))
    assert np.array_equal(np.concatenate([c.rows for c in chunks]), np.arange(50))


def test_pandas_table_reader_matches_pandas(survey_file):
    path = survey_file(n=30)
    ours = read_labels(path)
    theirs = pd.read_hdf(path, SURVEY_KEYS["labels"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs)


def test_pandas_table_mixed_dtypes(tmp_path, survey_file):
    labels = make_labels(20)
    labels["flag"] = np.arange(20, dtype=np.int64)
    path = survey_file(n=20, labels=labels)
    ours = read_labels(path)
    assert list(ours.columns) == list(labels.columns)
    np.testing.assert_array_equal(ours["flag"].to_numpy(), np.arange(20))


def test_fe_h_read_as_m_h(survey_file):
    labels = make_labels(10).rename(columns={"M_H": "Fe_H"})
    path = survey_file(n=10, labels=labels)
    assert "M_H" in read_labels(path).columns


def test_pickled_code_is_never_run(survey_file, tmp_path):
    path = survey_file(n=10)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with h5py.File(path, "a") as handle:
        handle[SURVEY_KEYS["labels"] + "/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(Exploit(), 0))
    with pytest.raises(ValueError, match="attribute values_block_0_kind: refusing to load io.open"):
        read_labels(path)
    assert not marker.exists()


@pytest.mark.parametrize("label_form", ["group", "compound", "pandas"])
def test_flat_layout(tmp_path, label_form):
    flux, error, wave = make_arrays(12, 16)
    labels = make_labels(12)
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as handle:
        handle["flux"], handle["error"], handle["wave"] = flux, error, wave
        handle["mask"] = np.zeros(flux.shape, np.int8)
        if label_form == "group":
            for name in labels.columns:
                handle[f"labels/{name}"] = labels[name].to_numpy()
        elif label_form == "compound":
            handle["labels"] = labels.to_records(index=False)
    if label_form == "pandas":
        labels.to_hdf(path, key="labels", format="table", mode="a")
    info = describe(path)
    assert (info.layout, info.has_mask) == ("flat", True)
    chunks, got_flux, got_labels = collect([path])
    np.testing.assert_array_equal(got_flux, flux)
    np.testing.assert_allclose(got_labels["log_g"], labels["log_g"])


def test_several_files_form_one_dataset(survey_file):
    a = survey_file(n=10, seed=1, name="a.h5")
    b = survey_file(n=7, seed=2, name="b.h5")
    chunks, flux, _ = collect([a, b], chunk_size=8)
    assert len(flux) == 17
    assert [c.source.name for c in chunks] == ["a.h5", "a.h5", "b.h5"]


def test_grid_mismatch_between_files(survey_file):
    a = survey_file(n=5, n_pixels=16, name="a.h5")
    b = survey_file(n=5, n_pixels=32, name="b.h5")
    with pytest.raises(ValueError, match="b.h5: wavelength grid differs from .*a.h5"):
        list(iter_chunks([a, b]))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="spectrum file not found: .*nope.h5"):
        describe(tmp_path / "nope.h5")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give the survey HDF5 files in it, for example .*/\\*.h5"):
        describe(tmp_path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ValueError, match="broken.h5: not a readable HDF5 file"):
        describe(path)


def test_truncated_file(survey_file):
    path = survey_file(n=50, n_pixels=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        describe(path)


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["spectra"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"other.h5: missing key /dataset/arrays/flux/value .* found: \['spectra'\]"):
        describe(path)


@pytest.mark.parametrize("key,role", [
    (SURVEY_KEYS["error"], "error"), (SURVEY_KEYS["wave"], "wave"), (SURVEY_KEYS["labels"], "label table"),
])
def test_missing_key(survey_file, key, role):
    path = survey_file()
    with h5py.File(path, "a") as handle:
        del handle[key]
    with pytest.raises(ValueError, match=f"survey.h5: missing key {key} \\({role}\\)"):
        describe(path)


def test_error_shape_mismatch(survey_file):
    flux, error, _ = make_arrays(40, 64)
    path = survey_file(error=error[:, :32])
    with pytest.raises(ValueError, match=r"error/value has shape \(40, 32\) but .*flux/value has \(40, 64\)"):
        describe(path)


def test_mask_shape_mismatch(survey_file):
    path = survey_file(mask=np.zeros((40, 10), np.int8))
    with pytest.raises(ValueError, match=r"mask/value has shape \(40, 10\) .* mask must match flux"):
        describe(path)


def test_wave_shape_mismatch(survey_file):
    path = survey_file(wave=np.arange(10.0))
    with pytest.raises(ValueError, match=r"wave has shape \(10,\), expected \(64,\)"):
        describe(path)


def test_label_rows_mismatch(survey_file):
    path = survey_file(labels=make_labels(39))
    with pytest.raises(ValueError, match="params has 39 rows but the file contains 40 spectra"):
        read_labels(path)


def test_missing_label_column(survey_file):
    path = survey_file(labels=make_labels(40).drop(columns=["log_g"]))
    with pytest.raises(ValueError, match=r"params is missing label columns \['log_g'\]"):
        read_labels(path)


def test_integer_flux_rejected(survey_file):
    flux, _, _ = make_arrays(40, 64)
    path = survey_file(flux=(flux * 100).astype(np.int32))
    with pytest.raises(ValueError, match="flux/value has dtype int32, expected float32 or float64"):
        describe(path)


def test_float_mask_rejected(survey_file):
    path = survey_file(mask=np.zeros((40, 64), np.float32))
    with pytest.raises(ValueError, match="mask/value has dtype float32, expected an integer or bool mask"):
        describe(path)


def test_string_label_rejected(survey_file):
    labels = make_labels(40)
    labels["log_g"] = ["high"] * 40
    path = survey_file(labels=labels)
    with pytest.raises(ValueError, match="column log_g has dtype .*, expected numbers"):
        read_labels(path)


BAD_ROW_CASES = [
    ("flux", np.nan, "non-finite flux at unmasked pixels"),
    ("flux", np.inf, "non-finite flux at unmasked pixels"),
    ("error", np.nan, "non-finite error at unmasked pixels"),
    ("error", 0.0, r"error <= 0 at unmasked pixels"),
    ("error", -1.0, r"error <= 0 at unmasked pixels"),
]


@pytest.mark.parametrize("array,value,what", BAD_ROW_CASES)
def test_bad_rows_raise(survey_file, array, value, what):
    flux, error, _ = make_arrays(40, 64)
    target = flux if array == "flux" else error
    target[[3, 17, 35], 5] = value
    path = survey_file(flux=flux, error=error)
    message = f"survey.h5: key .*{array}/value: 3 rows with {what} \\(rows 3, 17, 35; first at row 3, pixel 5: {value}\\)"
    with pytest.raises(ValueError, match=message):
        list(iter_chunks([path]))


def test_nan_label_raises(survey_file):
    labels = make_labels(40)
    labels.loc[[2, 9], "log_g"] = np.nan
    path = survey_file(labels=labels)
    with pytest.raises(ValueError, match=r"params column log_g: 2 rows with NaN log_g \(rows 2, 9\)"):
        list(iter_chunks([path]))


def test_bad_rows_dropped_with_count(survey_file):
    flux, error, _ = make_arrays(40, 64)
    flux[[1, 30], 0] = np.nan
    error[7, 2] = 0.0
    labels = make_labels(40)
    labels.loc[12, "T_eff"] = np.nan
    path = survey_file(flux=flux, error=error, labels=labels)
    problems = []
    chunks = list(iter_chunks([path], chunk_size=16, on_bad="drop", problems=problems))
    rows = np.concatenate([c.rows for c in chunks])
    assert sum(c.n_dropped for c in chunks) == 4
    assert not set(rows) & {1, 7, 12, 30}
    assert len(rows) == 36
    messages = " | ".join(p.message() for p in problems)
    assert "2 rows with non-finite flux at unmasked pixels (rows 1, 30; first at row 1, pixel 0: nan)" in messages
    assert "1 row with error <= 0 at unmasked pixels (rows 7; first at row 7, pixel 2: 0.0)" in messages
    assert "1 row with NaN T_eff (rows 12)" in messages


def test_masked_bad_pixels_are_allowed(survey_file):
    flux, error, _ = make_arrays(40, 64)
    mask = np.zeros(flux.shape, np.int8)
    flux[4, :3] = np.nan
    error[4, :3] = -1
    mask[4, :3] = 1
    path = survey_file(flux=flux, error=error, mask=mask)
    (chunk,) = list(iter_chunks([path]))
    assert np.isfinite(chunk.flux).all()
    assert (chunk.error > 0).all()
    assert chunk.mask[4, :3].tolist() == [1, 1, 1]


def test_fully_masked_row(survey_file):
    mask = np.zeros((40, 64), np.int8)
    mask[6] = 1
    path = survey_file(mask=mask)
    with pytest.raises(ValueError, match=r"mask/value: 1 row with every pixel masked \(rows 6\)"):
        list(iter_chunks([path]))


def test_on_bad_choice_checked(survey_file):
    with pytest.raises(ValueError, match="on_bad must be one of"):
        list(iter_chunks([survey_file()], on_bad="ignore"))


def test_writer_is_atomic(tmp_path):
    flux, error, wave = make_arrays(10, 16)
    path = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with SurveyWriter(path, 10, wave) as writer:
            writer.write(0, flux[:5], error[:5], make_labels(5))
            raise RuntimeError("interrupted")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_constructor_failure_leaves_nothing(tmp_path):
    _, _, wave = make_arrays(10, 16)
    with pytest.raises(TypeError):
        SurveyWriter(tmp_path / "out.h5", 10, wave, attrs={"source": object()})  # HDF5 cannot store an object
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_folder_path(tmp_path):
    _, _, wave = make_arrays(10, 16)
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="data is a folder; give a file name such as .*spectra.h5"):
        SurveyWriter(tmp_path / "data", 10, wave)
    assert [path.name for path in tmp_path.iterdir()] == ["data"]


def test_writer_rejects_incomplete(tmp_path):
    flux, error, wave = make_arrays(10, 16)
    with pytest.raises(ValueError, match="only 5 of 10 spectra were written"):
        with SurveyWriter(tmp_path / "out.h5", 10, wave) as writer:
            writer.write(0, flux[:5], error[:5], make_labels(5))
    assert not (tmp_path / "out.h5").exists()


def test_writer_round_trip(tmp_path):
    flux, error, wave = make_arrays(10, 16)
    labels = make_labels(10)
    path = tmp_path / "out.h5"
    with SurveyWriter(path, 10, wave) as writer:
        writer.write(0, flux[:4], error[:4], labels.iloc[:4])
        writer.write(4, flux[4:], error[4:], labels.iloc[4:])
    (chunk,) = list(iter_chunks([path]))
    np.testing.assert_array_equal(chunk.flux, flux)
    np.testing.assert_array_equal(chunk.error, error)
    pd.testing.assert_frame_equal(chunk.labels, labels)


def test_writer_flat_layout(tmp_path):
    flux, error, wave = make_arrays(10, 16)
    labels = make_labels(10)
    path = tmp_path / "flat.h5"
    with SurveyWriter(path, 10, wave, layout="flat", with_mask=True) as writer:
        writer.write(0, flux, error, labels)
    info = describe(path)
    assert (info.layout, info.has_mask) == ("flat", True)
    (chunk,) = list(iter_chunks([path]))
    np.testing.assert_array_equal(chunk.flux, flux)
    pd.testing.assert_frame_equal(chunk.labels, labels)


def test_writer_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of \\['flat', 'survey'\\], got 'csv'"):
        SurveyWriter(tmp_path / "x.h5", 3, np.arange(4.0), layout="csv")


def test_dropped_rows_logged_without_list(survey_file, caplog):
    flux, error, _ = make_arrays(40, 64)
    flux[3, 0] = np.nan
    path = survey_file(flux=flux, error=error)
    chunks = list(iter_chunks([path], on_bad="drop"))
    assert sum(c.n_dropped for c in chunks) == 1
    assert "left out " in caplog.text
    assert "1 row with non-finite flux at unmasked pixels (rows 3; first at row 3, pixel 0: nan)" in caplog.text
