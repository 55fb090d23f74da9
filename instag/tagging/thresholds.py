"""Per-instrument presence thresholds: one default for all, overridden from a file.

Every threshold is a probability in [0, 1]; anything else (a typo, ``null``, a line that does
not parse) is an error naming where it is, never a silent "always present" or "never".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from instag.common.errors import InstagError, UsageError
from instag.common.guard.inputs import THRESHOLDS, read_text

DEFAULT = 0.5  # the paper's rule, for a model without tuned thresholds
FIX = 'use JSON {"piano": 0.4, ...} or CSV lines piano,0.4 (thresholds in [0, 1])'


def check_threshold(value: object, where: str, fix: str = FIX) -> float:
    """A threshold as a float in [0, 1], or an InstagError saying `where` it is wrong (and
    `fix`: a file's format by default, an example for the option)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"{where}: threshold {value!r} is not a number", fix)
    try:
        t = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise UsageError(f"{where}: threshold {str(value)[:20]}... is outside [0, 1]",
                          fix) from None
    except ValueError:
        raise UsageError(f"{where}: threshold {value!r} is not a number", fix) from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise UsageError(f"{where}: threshold {t:g} is outside [0, 1]", fix)
    return t


def load_thresholds(classes: tuple[str, ...], default: float | None, path: Path | None,
                    tuned: dict[str, float] | None = None) -> dict:
    """`default` for every instrument or, when it is None, the model's `tuned` thresholds (0.5
    where it has none); then overridden by a JSON object or a CSV of `instrument,threshold`
    lines (a header line `instrument,threshold` is allowed)."""
    if default is not None:
        out = dict.fromkeys(classes, check_threshold(default, "--threshold"))
    else:
        out = {c: (tuned or {}).get(c, DEFAULT) for c in classes}
    if path is None:
        return out
    text = read_text(path, "--thresholds-file", THRESHOLDS)  # a regular file; a BOM is read
    given = _from_json(path, text) if text.lstrip().startswith("{") else _from_csv(path, text)
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise InstagError(f"{path}: unknown instruments {unknown}",
                          f"the model's instruments are: {', '.join(classes)}")
    out.update(given)
    return out


def _from_json(path: Path, text: str) -> dict[str, float]:
    try:
        doc = json.loads(text)  # an object: the text starts with "{"
    except (ValueError, RecursionError) as e:
        raise InstagError(f"{path}: not valid JSON ({e})", FIX) from None
    return {name: check_threshold(v, f"{path}: {name!r}") for name, v in doc.items()}


def _from_csv(path: Path, text: str) -> dict[str, float]:
    given = {}
    for n, row in enumerate(csv.reader(text.split("\n")), start=1):  # "\n" only: names may
        # hold U+2028 and the other characters str.splitlines() ends lines at
        cells = [c.strip() for c in row]
        if not any(cells) or (n == 1 and cells[:2] == ["instrument", "threshold"]):
            continue
        if len(cells) != 2 or not cells[0]:
            raise InstagError(f"{path}, line {n}: expected instrument,threshold; got "
                              f"{','.join(row)!r}", FIX)
        given[cells[0]] = check_threshold(cells[1], f"{path}, line {n}")
    return given
