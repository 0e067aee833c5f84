"""specstream: fast, reproducible training of stellar-parameter regressors on PFS MR spectra."""

__version__ = "0.1.0"
