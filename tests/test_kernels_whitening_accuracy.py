"""Safe whitening trains as well as flux_only where naive whitening collapses (small MLP, stand-in data)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark():
    sys.path.insert(0, str(BENCHMARKS_DIR))  # for its sibling module _kernels_report
    try:
        spec = importlib.util.spec_from_file_location("bench_whitening_accuracy",
                                                      BENCHMARKS_DIR / "bench_whitening_accuracy.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    return module


@pytest.mark.slow
def test_safe_whitening_trains_where_naive_collapses():
    pytest.importorskip("specstream.synth")
    bench = _load_benchmark()
    config = bench.QUICK
    flux, error, log_g = bench.load_data(config)
    defective = bench.add_defects(error)

    # On clean stand-in errors the floor never applies, so safe and naive whitening are the same input.
    clean_safe = bench.make_batch_inputs("whitening", flux[:200], error[:200], np.arange(200), 0)
    clean_naive = bench.make_batch_inputs("naive_whitening", flux[:200], error[:200], np.arange(200), 0)
    np.testing.assert_allclose(clean_safe, clean_naive, rtol=1e-5)

    results = {kind: bench.train_and_test(kind, flux, defective, log_g, config, torch_seed=0)
               for kind in ("flux_only", "whitening", "naive_whitening")}
    flux_only, whitening, naive = (results[k] for k in ("flux_only", "whitening", "naive_whitening"))
    assert flux_only["predictions_finite"] and whitening["predictions_finite"]
    assert flux_only["r2"] > 0.03, "flux_only did not learn; the comparison below would be empty"
    assert whitening["r2"] >= flux_only["r2"] - 0.02, (whitening["r2"], flux_only["r2"])
    assert not naive["r2"] > flux_only["r2"] - 0.1, (naive["r2"], flux_only["r2"])  # NaN also counts as collapse
