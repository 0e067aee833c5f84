"""The results report: a Markdown summary table like the reference study's, and PNG figures beside it."""

from .build import REPORT_NAME, Report, build_report
from .table import build_summary, markdown_table

__all__ = ["REPORT_NAME", "Report", "build_report", "build_summary", "markdown_table"]
