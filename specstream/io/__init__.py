"""Reading, validating and writing survey HDF5 files (survey and flat layouts)."""

from specstream.io.layout import FLAT_KEYS, SURVEY_KEYS, SurveyFile, describe
from specstream.io.reader import (
    DEFAULT_CHUNK_SIZE, Chunk, check_same_grid, iter_chunks, open_survey, read_labels, read_wave,
)
from specstream.io.validate import ON_BAD_CHOICES, REQUIRED_LABELS, Problem
from specstream.io.writer import SurveyWriter

LABEL_COLUMNS = ("T_eff", "log_g", "M_H", "a_M", "C_M", "mag", "redshift", "snr")

__all__ = [
    "DEFAULT_CHUNK_SIZE", "FLAT_KEYS", "LABEL_COLUMNS", "ON_BAD_CHOICES", "REQUIRED_LABELS", "SURVEY_KEYS",
    "Chunk", "Problem", "SurveyFile", "SurveyWriter", "check_same_grid", "describe", "iter_chunks",
    "open_survey", "read_labels", "read_wave",
]
