"""STELIB conversion and the foundation CLI commands (synth, inspect, convert-stelib)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from specstream.cli import app
from specstream.grid import is_mr_grid
from specstream.io import describe, iter_chunks, read_labels
from specstream.paths import stelib_dir
from tests.conftest import make_arrays

runner = CliRunner()
needs_stelib = pytest.mark.skipif(stelib_dir() is None, reason="STELIB reference data not present")


@needs_stelib
def test_stelib_conversion(tmp_path):
    from specstream.stelib import convert_stelib

    path, n = convert_stelib(tmp_path / "stelib.h5", seed=1)
    assert n == 113
    info = describe(path)
    assert info.has_mask
    assert is_mr_grid(info.wave)
    labels = read_labels(path)
    assert labels["log_g"].between(0.0, 5.0).all()
    assert labels["T_eff"].min() > 3000
    (chunk,) = list(iter_chunks([path], chunk_size=1000))
    # Only the five bluest pixels (below 7100 A in air) fall outside STELIB's air-wavelength window.
    masked = chunk.mask != 0
    assert np.flatnonzero(masked[0]).tolist() == [0, 1, 2, 3, 4]
    assert (masked == masked[0]).all()
    assert (chunk.error > 0).all()


@needs_stelib
def test_stelib_teff_filter(tmp_path):
    from specstream.stelib import convert_stelib

    _, n = convert_stelib(tmp_path / "cool.h5", teff_range=(3750, 6000), mag=21.5)
    assert n == 63
    labels = read_labels(tmp_path / "cool.h5")
    assert labels["T_eff"].between(3750, 6000).all()
    np.testing.assert_allclose(labels["mag"], 21.5)


def test_stelib_missing_file(tmp_path):
    from specstream.stelib import convert_stelib

    with pytest.raises(FileNotFoundError, match="STELIB file not found: .*nope.npz"):
        convert_stelib(tmp_path / "out.h5", source=tmp_path / "nope.npz")


def test_stelib_wrong_keys(tmp_path):
    from specstream.stelib import convert_stelib

    np.savez(tmp_path / "bad.npz", flux=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"bad.npz: missing keys \['wave_air_A', 'teff'"):
        convert_stelib(tmp_path / "out.h5", source=tmp_path / "bad.npz")


def test_cli_synth_names_builtin_noise_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSTREAM_DATA", str(tmp_path / "no_reference_data"))
    result = runner.invoke(app, ["synth", str(tmp_path / "s.h5"), "--n", "8"])
    assert result.exit_code == 0, result.output
    assert "noise model: the built-in fit of the PFS ETC tables (within about 7 %); set SPECSTREAM_DATA" in result.output


def test_cli_synth_keeps_existing_file(tmp_path):
    out = tmp_path / "s.h5"
    out.write_bytes(b"survey data")
    result = runner.invoke(app, ["synth", str(out), "--n", "8"])
    assert result.exit_code == 1
    assert f"error: {out} exists; pass --overwrite to replace it" in result.output
    assert out.read_bytes() == b"survey data"
    result = runner.invoke(app, ["synth", str(out), "--n", "8", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


def test_cli_synth_and_inspect(tmp_path):
    out = tmp_path / "s.h5"
    result = runner.invoke(app, ["synth", str(out), "--n", "64", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 64 spectra" in result.output
    assert "noise model: " in result.output
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "64 spectra x 4096 pixels" in result.output
    assert "on the PFS MR grid" in result.output
    assert "problems: none found" in result.output


def test_cli_inspect_reports_problems(tmp_path, survey_file):
    flux, error, _ = make_arrays(40, 64)
    error[5, 3] = 0.0
    path = survey_file(error=error)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert "NOT on the PFS MR grid" in result.output
    assert "1 row with error <= 0 at unmasked pixels (rows 5; first at row 5, pixel" in result.output


def test_cli_inspect_missing_file(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "none.h5")])
    assert result.exit_code == 2
    assert "spectrum file not found" in result.output


def test_cli_synth_bad_dtype(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x.h5"), "--n", "4", "--dtype", "float16"])
    assert result.exit_code == 1
    assert "dtype must be float32 or float64, got float16" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_module_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "specstream", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "synth" in result.stdout


def test_demo_rerun_with_other_settings_stops(tmp_path):
    from specstream.demo import SETTINGS_NAME, DemoConfig, _check_settings, _record_settings

    out = tmp_path / "demo"
    _record_settings(DemoConfig(out_dir=out, n_spectra=4000))
    _check_settings(DemoConfig(out_dir=out, n_spectra=4000))  # the same settings continue the demo
    result = runner.invoke(app, ["demo", "--out", str(out), "--n", "5000"])
    assert result.exit_code != 0
    assert "was written by a demo with other settings (n_spectra 4000 -> 5000); pass another --out" in result.output
    assert sorted(p.name for p in out.iterdir()) == [SETTINGS_NAME]  # stopped before writing any data


def test_failed_demo_records_no_settings(tmp_path, monkeypatch):
    from specstream.demo import SETTINGS_NAME

    monkeypatch.setenv("SPECSTREAM_DATA", str(tmp_path / "no_reference_data"))
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--stelib", "--out", str(out)])
    assert result.exit_code != 0
    assert "STELIB reference data not found" in result.output
    assert not (out / SETTINGS_NAME).exists()  # so a plain demo into the same folder may start
