"""Per-instrument presence thresholds: one default for all, overridden from a file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from instag.common.errors import InstagError


def load_thresholds(classes: tuple[str, ...], default: float, path: Path | None) -> dict:
    """`default` for every instrument, overridden by a JSON object or a CSV of
    `instrument,threshold` lines."""
    out = dict.fromkeys(classes, default)
    if path is None:
        return out
    try:
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            given = {k: float(v) for k, v in json.loads(text).items()}
        else:
            given = {row[0].strip(): float(row[1]) for row in csv.reader(text.splitlines())
                     if len(row) >= 2 and row[0].strip() and row[0].strip() != "instrument"}
    except (OSError, ValueError) as e:
        raise InstagError(f"{path}: unreadable thresholds ({e})",
                          'use JSON {"piano": 0.4, ...} or CSV lines piano,0.4') from e
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise InstagError(f"{path}: unknown instruments {unknown}",
                          f"the model's instruments are: {', '.join(classes)}")
    out.update(given)
    return out
