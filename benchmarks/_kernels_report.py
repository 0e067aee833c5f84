"""Report files of the benchmarks: JSON and a short markdown table, with hardware, versions and git revision."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from specstream.atomic import write_text_atomically

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_revision() -> str:
    """Return `git describe --always --dirty` of the repository, or 'unknown' outside a git checkout."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Return hardware and library versions for a report header."""
    import numba
    import numpy
    import torch

    return {
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "utc_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_report(name: str, report: dict, markdown: str, directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Save `report` as DIRECTORY/NAME.json and `markdown` as DIRECTORY/NAME.md, and return both paths."""
    json_path = Path(directory) / f"{name}.json"
    markdown_path = Path(directory) / f"{name}.md"
    write_text_atomically(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomically(markdown_path, markdown)
    return json_path, markdown_path
