"""The kernel throughput benchmark runs end to end and saves a complete report (no timing is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_kernels_quick_report(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_kernels.py", "--quick", "--n-spectra", "256", "--batch-size", "64",
         "--output-dir", str(tmp_path)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "kernels.json").read_text())
    names = [row["name"] for row in report["results"]]
    assert names[0] == "numpy_default_rng"
    assert any(name.startswith("specstream_whitening_") for name in names)
    assert "memory_pass" in names
    assert report["kernel_matches_reference"] is True
    for row in report["results"]:
        assert row["median_spectra_per_s"] > 0, row["name"]
    assert (tmp_path / "kernels.md").read_text().startswith("# Kernel throughput")
