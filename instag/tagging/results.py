"""What tagging produces for each file: a FileResult (failed files too, with status and reason)
of BagResults, and its written forms: a JSON document, CSV rows, Parquet rows.

Every form carries what a later run needs to tell whether the result still holds: the file's
size and modification time when it was read, and the identity of the models and settings that
made it (`model_id`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag.common.errors import InstagError
from instag.common.status import Status
from instag.features.instances import Features, instance_span
from instag.tagging.bags import Bag
from instag.tagging.segments import attention_segments, format_segments, merge_segments

CSV_FIELDS = ("path", "status", "reason", "duration_s", "bag_start_s", "bag_end_s", "instrument",
              "probability", "present", "segments", "file_tags", "size", "mtime_ns", "model_id")
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
    status: Status
    reason: str = ""
    duration: float | None = None
    bags: list[BagResult] = field(default_factory=list)
    features: Features | None = None  # the file's instances (ok files), not written out
    file_tags: str = ""  # what writing the file's own tags did (with --write-tags)
    size: int | None = None  # bytes, when the file was read (None: it could not be)
    mtime_ns: int | None = None
    model_id: str = ""  # the models and settings that made this result (see run.Scoring)
    rows: list[dict] | None = None  # its Parquet rows, carried over from a previous output

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def display_path(self) -> str:
        return display_path(self.path)

    def instruments(self) -> list[str]:
        seen = {name for b in self.bags for name in b.present}
        return [c for c in (self.bags[0].probabilities if self.bags else {}) if c in seen]

    def best(self) -> dict[str, float]:
        """Each instrument's highest bag probability."""
        return {c: max(b.probabilities[c] for b in self.bags)
                for c in (self.bags[0].probabilities if self.bags else {})}

    def segments(self) -> dict[str, list[tuple[float, float]]]:
        return {c: merge_segments([s for b in self.bags for s in b.segments.get(c, [])])
                for c in self.instruments()}


def display_path(path: Path) -> str:
    """A path as text; bytes that are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def result_identity(*parts: str) -> str:
    """A short digest of everything a result depends on besides the file itself."""
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def bag_result(bag: Bag, classes, bag_probs, instance_probs, attention, thresholds) -> BagResult:
    """Probabilities, presence by per-instrument threshold, and attention segments of a bag.
    Presence is decided on the model's own values; they are rounded only where written."""
    probs = {c: float(p) for c, p in zip(classes, bag_probs, strict=True)}
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
    if r.file_tags:
        doc["file_tags"] = r.file_tags
    doc.update(size=r.size, mtime_ns=r.mtime_ns, model_id=r.model_id)
    if not r.ok:
        return doc
    doc["instruments"] = r.instruments()
    doc["segments"] = {c: [list(s) for s in segs] for c, segs in r.segments().items()}
    doc["bags"] = [{
        "start_s": b.bag.start_s, "end_s": b.bag.end_s,
        "probabilities": {c: round(p, DECIMALS) for c, p in b.probabilities.items()},
        "present": b.present,
        "segments": {c: [list(s) for s in segs] for c, segs in b.segments.items()},
        "timeline": {
            "start_s": [instance_span(i)[0] for i in range(b.bag.first, b.bag.stop)],
            "instance_probs": _per_class(b.instance_probs, b.probabilities),
            "attention": _per_class(b.attention, b.probabilities),
        },
    } for b in r.bags]
    return doc


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula


def csv_cell(text: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP's leading "'"); reversibly: a
    cell that starts with "'" gets one more, and `csv_value` undoes both."""
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def csv_value(cell: str) -> str:
    """What `csv_cell` was given."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS + ("'",)) \
        else cell


def csv_rows(r: FileResult):
    base = {"path": csv_cell(r.display_path), "status": r.status, "reason": csv_cell(r.reason),
            "duration_s": "" if r.duration is None else f"{r.duration:.3f}",
            "file_tags": csv_cell(r.file_tags), "size": "" if r.size is None else r.size,
            "mtime_ns": "" if r.mtime_ns is None else r.mtime_ns, "model_id": r.model_id}
    if not r.ok or not r.bags:
        yield {**base, **{k: "" for k in CSV_FIELDS if k not in base}}
        return
    for b in r.bags:
        for c, p in b.probabilities.items():
            yield {**base, "bag_start_s": f"{b.bag.start_s:.2f}", "bag_end_s": f"{b.bag.end_s:.2f}",
                   "instrument": c, "probability": f"{p:.{DECIMALS}f}",
                   "present": "1" if c in b.present else "0",
                   "segments": format_segments(b.segments.get(c, []))}


def read_documents(tags_file: Path) -> list[dict]:
    """The per-file documents of a .json or .jsonl that `instag tag` wrote."""
    try:
        text = Path(tags_file).read_text(encoding="utf-8")
        # "\n" only: names may hold U+2028, U+0085 and the other characters splitlines() takes
        # for line ends (JSON writes them raw)
        return ([json.loads(line) for line in text.split("\n") if line.strip()]
                if Path(tags_file).suffix == ".jsonl" else json.loads(text)["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InstagError(f"{tags_file}: not a tags file from `instag tag` ({e})",
                          "pass the .json or .jsonl that `instag tag --out` wrote") from e


def audio_path(display: str) -> Path:
    """The file a JSON path names: outputs write bytes that are not UTF-8 as \\xNN; undo that
    unless a file by the literal name exists."""
    if os.path.lexists(display):
        return Path(display)
    parts = re.split(r"\\x([0-9a-f]{2})", display)
    raw = b"".join(bytes([int(p, 16)]) if i % 2 else p.encode("utf-8")
                   for i, p in enumerate(parts))
    return Path(os.fsdecode(raw))
