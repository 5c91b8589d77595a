"""What the benchmark scripts share: the record of the machine and the JSON file of results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine(**versions: str) -> dict:
    """Cores, CPU model and Python version, plus `versions` (e.g. `pillow=PIL.__version__`)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), **versions}


def write_results(path: Path, record: dict) -> None:
    """Writes `record` as indented JSON to `path` (its folder is created) and says where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")
