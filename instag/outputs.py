"""What tagging produces for each file, and the CSV / JSON / JSONL writers.

Every input file gets a FileResult, failed ones too (status + reason). Results are streamed, in
order, into a temp file beside the output, which is renamed into place only when the run
completes: a killed run leaves the previous output untouched, and memory does not grow with the
size of the library.

CSV: one row per file, bag and instrument, with a header; a failed file is one row with its
status and reason. JSON: one document with a ``files`` list; JSONL: one file per line. Both hold
each bag's probabilities, the instruments present with their segments, and the per-instance
timeline (instance probabilities and attention weights per instrument) for plotting.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag import __version__
from instag.atomic import atomic_write
from instag.bags import Bag, instance_span
from instag.segments import attention_segments, format_segments, merge_segments

FORMATS = ("csv", "json", "jsonl")
CSV_FIELDS = ("path", "status", "reason", "duration_s", "bag_start_s", "bag_end_s", "instrument",
              "probability", "present", "segments")
DECIMALS = 4


@dataclass
class BagResult:
    bag: Bag
    probabilities: dict[str, float]
    instance_probs: np.ndarray  # float32 [T, C]
    attention: np.ndarray  # float32 [T, C]
    present: list[str]
    segments: dict[str, list[tuple[float, float]]]


@dataclass
class FileResult:
    path: Path
    status: str  # ok, or why not: error, empty, too_short, unsupported, missing, unreadable
    reason: str = ""
    duration: float | None = None
    bags: list[BagResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def display_path(self) -> str:
        """The path as text; bytes that are not UTF-8 appear as \\xNN escapes."""
        return os.fsencode(self.path).decode("utf-8", "backslashreplace")

    def instruments(self) -> list[str]:
        seen = {name for b in self.bags for name in b.present}
        return [c for c in (self.bags[0].probabilities if self.bags else {}) if c in seen]

    def segments(self) -> dict[str, list[tuple[float, float]]]:
        return {c: merge_segments([s for b in self.bags for s in b.segments.get(c, [])])
                for c in self.instruments()}


def bag_result(bag: Bag, classes, bag_probs, instance_probs, attention, thresholds) -> BagResult:
    """Probabilities, presence by per-instrument threshold, and attention segments of a bag."""
    probs = {c: round(float(p), DECIMALS) for c, p in zip(classes, bag_probs, strict=True)}
    present = [c for c in classes if probs[c] >= thresholds[c]]
    col = {c: i for i, c in enumerate(classes)}
    return BagResult(
        bag=bag, probabilities=probs,
        instance_probs=np.asarray(instance_probs, np.float32),
        attention=np.asarray(attention, np.float32), present=present,
        segments={c: attention_segments(attention[:, col[c]], bag.first) for c in present},
    )


def _per_class(values: np.ndarray, classes) -> dict[str, list[float]]:
    return {c: [round(float(v), DECIMALS) for v in values[:, i]] for i, c in enumerate(classes)}


def file_document(r: FileResult) -> dict:
    doc: dict = {"path": r.display_path, "status": r.status}
    if r.reason:
        doc["reason"] = r.reason
    doc["duration_s"] = None if r.duration is None else round(r.duration, 3)
    if not r.ok:
        return doc
    doc["instruments"] = r.instruments()
    doc["segments"] = {c: [list(s) for s in segs] for c, segs in r.segments().items()}
    doc["bags"] = [{
        "start_s": b.bag.start_s, "end_s": b.bag.end_s,
        "probabilities": b.probabilities, "present": b.present,
        "segments": {c: [list(s) for s in segs] for c, segs in b.segments.items()},
        "timeline": {
            "start_s": [instance_span(i)[0] for i in range(b.bag.first, b.bag.stop)],
            "instance_probs": _per_class(b.instance_probs, b.probabilities),
            "attention": _per_class(b.attention, b.probabilities),
        },
    } for b in r.bags]
    return doc


def csv_rows(r: FileResult):
    base = {"path": r.display_path, "status": r.status, "reason": r.reason,
            "duration_s": "" if r.duration is None else f"{r.duration:.3f}"}
    if not r.ok or not r.bags:
        yield {**base, **{k: "" for k in CSV_FIELDS if k not in base}}
        return
    for b in r.bags:
        for c, p in b.probabilities.items():
            yield {**base, "bag_start_s": f"{b.bag.start_s:.2f}", "bag_end_s": f"{b.bag.end_s:.2f}",
                   "instrument": c, "probability": f"{p:.{DECIMALS}f}",
                   "present": "1" if c in b.present else "0",
                   "segments": format_segments(b.segments.get(c, []))}


def format_for(path: Path, fmt: str | None) -> str:
    """--format, else from the extension (.csv, .json, .jsonl), else CSV."""
    if fmt:
        return fmt
    ext = path.suffix.lower().lstrip(".")
    return ext if ext in FORMATS else "csv"


@contextmanager
def result_writer(path: Path, fmt: str, run_info: dict) -> Iterator[Callable[[FileResult], None]]:
    """Yield a function that appends one FileResult to `path`'s temp file; the file replaces
    `path` when the block ends without an exception, and is discarded otherwise."""
    with atomic_write(path, "w", newline="" if fmt == "csv" else None, encoding="utf-8") as f:
        if fmt == "csv":
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)  # RFC 4180 quoting, \r\n endings
            w.writeheader()
            yield lambda r: w.writerows(csv_rows(r))
        elif fmt == "jsonl":
            yield lambda r: f.write(json.dumps(file_document(r), ensure_ascii=False) + "\n")
        else:
            head = json.dumps({"instag_version": __version__, **run_info, "files": []},
                              ensure_ascii=False)
            f.write(head[: -len("]}")])
            sep = [""]

            def write(r: FileResult) -> None:
                f.write(sep[0] + json.dumps(file_document(r), ensure_ascii=False))
                sep[0] = ","

            yield write
            f.write("]}")
