"""The summary table of a results CSV: test scores per experiment, differences to ridge and the oracle, best per group.

Every column except test_r2 is optional: a missing column shows as an em dash, so the table renders from the
results CSV of any specstream version and from hand-made files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

RIDGE_MODELS = ("ridge",)
ORACLE_MODELS = ("oracle_moe", "oracle-moe")
NO_GROUP = "(no group)"
MISSING = "\u2014"  # em dash
MAX_LISTED_ROWS = 10  # max rows named in one warning, which counts the others


@dataclass
class SummaryTable:
    """Result rows ready to print, and the facts the report's footnotes state."""

    rows: pd.DataFrame  # one row per experiment in display order, with the added columns below
    ridge_reference: dict[str, str]  # experiment_id -> experiment_id of the ridge row it is compared with
    oracle_reference: dict[str, str]  # experiment_id -> experiment_id of the oracle row it is compared with
    n_duplicates: int  # earlier rows dropped because a later row had the same experiment_id


def normalise_results(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Fill missing optional columns, keep the last row of each experiment_id, parse numbers.

    Logs a warning naming the rows whose test_r2 is present but not a finite number.

    Raises ValueError when the CSV has no test_r2 column, since the table has nothing to show without it.
    """
    if "test_r2" not in frame.columns:
        raise ValueError(f"the results have no test_r2 column (columns: {', '.join(map(str, frame.columns))}); "
                         "pass a results CSV written by specstream train or specstream baseline")
    frame = frame.copy()
    if "experiment_id" not in frame.columns:
        frame["experiment_id"] = [f"row {i + 1}" for i in range(len(frame))]
    frame["experiment_id"] = frame["experiment_id"].astype(str)
    for column in ("group", "model", "input", "target"):
        if column not in frame.columns:
            frame[column] = np.nan
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["group"] = frame["group"].fillna(NO_GROUP)
    n_before = len(frame)
    frame = frame.drop_duplicates("experiment_id", keep="last").reset_index(drop=True)
    for column in ("test_r2", "test_mae", "train_size", "train_time"):
        values = frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)
        frame[column] = pd.to_numeric(values, errors="coerce")
        if column == "test_r2":
            _warn_invalid_r2(frame["experiment_id"], values, frame[column])
    return frame, n_before - len(frame)


def _warn_invalid_r2(experiment_ids: pd.Series, raw: pd.Series, parsed: pd.Series) -> None:
    """Log one warning naming the rows whose test_r2 is present but not a finite number."""
    invalid = raw.notna() & ~np.isfinite(parsed.to_numpy(dtype=float))
    if not invalid.any():
        return
    listed = [f"{experiment_id} ({value!r})" for experiment_id, value in
              zip(experiment_ids[invalid].iloc[:MAX_LISTED_ROWS], raw[invalid].iloc[:MAX_LISTED_ROWS])]
    more = f" and {int(invalid.sum()) - len(listed)} more" if invalid.sum() > len(listed) else ""
    logger.warning("test_r2 is not a finite number in %d row(s) of the results: %s%s. The table shows %s for "
                   "them and does not mark them best. Fix these rows of the results CSV or rerun the experiments",
                   int(invalid.sum()), ", ".join(listed), more, MISSING)


def _same(values: pd.Series, value) -> pd.Series:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return values.isna()
    return values == value


def find_reference(frame: pd.DataFrame, row: pd.Series, models: tuple[str, ...]) -> pd.Series | None:
    """Return the reference row (e.g. ridge) to compare `row` with, or None.

    Candidates have a model in `models`, a finite test_r2 and the row's target. Among them the first
    non-empty tier wins: same train size and input, same train size, same input, any. Within a tier the
    last row of the CSV (the most recent run) is taken.
    """
    has_r2 = np.isfinite(frame["test_r2"])
    candidates = frame[frame["model"].isin(models) & has_r2 & _same(frame["target"], row["target"])]
    if candidates.empty:
        return None
    same_size = _same(candidates["train_size"], row["train_size"])
    same_input = _same(candidates["input"], row["input"])
    for tier in (same_size & same_input, same_size, same_input):
        if tier.any():
            return candidates[tier].iloc[-1]
    return candidates.iloc[-1]


def build_summary(frame: pd.DataFrame) -> SummaryTable:
    """Add the differences to ridge and to the oracle and the best-per-group flag; sort by group and R^2."""
    frame, n_duplicates = normalise_results(frame)
    is_oracle = frame["model"].isin(ORACLE_MODELS)
    ridge_reference, oracle_reference = {}, {}
    delta_ridge, delta_oracle = [], []
    for _, row in frame.iterrows():
        for models, references, deltas in ((RIDGE_MODELS, ridge_reference, delta_ridge),
                                           (ORACLE_MODELS, oracle_reference, delta_oracle)):
            reference = find_reference(frame, row, models)
            if reference is None or reference["experiment_id"] == row["experiment_id"]:
                deltas.append(np.nan)
                continue
            references[row["experiment_id"]] = reference["experiment_id"]
            deltas.append(row["test_r2"] - reference["test_r2"])
    frame["delta_r2_ridge"] = delta_ridge
    frame["delta_r2_oracle"] = delta_oracle
    frame["is_oracle"] = is_oracle

    # Best per group: the highest test R^2 among deployable models (oracle rows are upper bounds). Rows without
    # a group (e.g. a truncated CSV row) or without a finite test R^2 are not ranked.
    frame["is_best"] = False
    rankable = ~is_oracle & np.isfinite(frame["test_r2"]) & (frame["group"] != NO_GROUP)
    for _, members in frame[rankable].groupby("group", sort=False):
        frame.loc[members["test_r2"].idxmax(), "is_best"] = True

    group_order = {group: i for i, group in enumerate(dict.fromkeys(frame["group"]))}
    frame["group_order"] = frame["group"].map(group_order)
    frame = frame.sort_values(["group_order", "test_r2"], ascending=[True, False], na_position="last",
                              kind="stable").drop(columns="group_order").reset_index(drop=True)
    return SummaryTable(frame, ridge_reference, oracle_reference, n_duplicates)


def format_seconds(seconds: float) -> str:
    """Format a duration like the reference table: "45 s", "3.4 min", "3.7 h"."""
    if seconds is None or not np.isfinite(seconds):
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_count(value: float) -> str:
    """Format a sample count like the reference table: 1000, "100k", "1M"."""
    if value is None or not np.isfinite(value):
        return MISSING
    value = int(value)
    if value >= 1_000_000 and value % 100_000 == 0:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000 and value % 1000 == 0:
        return f"{value // 1000}k"
    return str(value)


def _number(value: float, digits: int, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    value = round(float(value), digits) + 0.0  # + 0.0 turns -0.0 into 0.0, so no "-0.0000" appears
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _text(value) -> str:
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def markdown_table(summary: SummaryTable) -> str:
    """Render the summary as a Markdown table; bold marks the best deployable model of each group."""
    rows = summary.rows
    show_target = rows["target"].nunique(dropna=True) > 1
    header = ["group", "experiment", "model", "input"] + (["target"] if show_target else []) + [
        "train size", "test R^2", "MAE", "ΔR^2 vs ridge", "ΔR^2 vs oracle MoE", "train time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for _, row in rows.iterrows():
        experiment = _text(row["experiment_id"])
        model = _text(row["model"]) + (" †" if row["is_oracle"] else "")
        r2 = _number(row["test_r2"], 4)
        if row["is_best"]:
            experiment, r2 = f"**{experiment}**", f"**{r2}**"
        cells = [_text(row["group"]), experiment, model, _text(row["input"])]
        if show_target:
            cells.append(_text(row["target"]))
        cells += [format_count(row["train_size"]), r2, _number(row["test_mae"], 3),
                  _number(row["delta_r2_ridge"], 4, signed=True), _number(row["delta_r2_oracle"], 4, signed=True),
                  format_seconds(row["train_time"])]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def table_notes(summary: SummaryTable) -> list[str]:
    """Return the footnotes that explain the table's marks and reference rows."""
    notes = [
        "Bold: the highest test R^2 of its group among deployable models (oracle rows, rows without a group "
        "and rows without a finite test R^2 excluded).",
        "ΔR^2 = test R^2 of the row minus that of the reference row with the same target, matched on train "
        "size and input where such a row exists (otherwise on train size, then input, then any).",
    ]
    if summary.rows["is_oracle"].any():
        notes.append("† Oracle mixture of experts: ridge experts chosen by the true labels of each spectrum. "
                     "It is an upper bound, not a deployable model.")
    references = sorted(set(summary.ridge_reference.values()))
    if references:
        notes.append("Ridge reference rows: " + ", ".join(references) + ".")
    references = sorted(set(summary.oracle_reference.values()))
    if references:
        notes.append("Oracle reference rows: " + ", ".join(references) + ".")
    if summary.n_duplicates:
        notes.append(f"{summary.n_duplicates} earlier row(s) with a repeated experiment_id were left out; "
                     "the last row of each experiment is shown.")
    return notes
