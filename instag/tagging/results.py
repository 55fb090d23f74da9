"""What tagging produces for each file: a FileResult (failed files too, with status and reason)
of BagResults, and its written forms: a JSON document, CSV rows, Parquet rows.

Every form carries what a later run needs to tell whether the result still holds: the file's
size and modification time when it was read, and the identity of the models and settings that
made it (`model_id`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instag.common.status import Status
from instag.features.instances import Features
from instag.tagging.bags import Bag
from instag.tagging.segments import SegmentRule, attention_segments

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
    song: dict[str, str] = field(default_factory=dict)  # artist, title, album (its own tags)
    size: int | None = None  # bytes, when the file was read (None: it could not be)
    mtime_ns: int | None = None
    model_id: str = ""  # the models and settings that made this result (see run.Scoring)
    rows: Any = None  # its Parquet rows (outputs.parquet.RowSpans), carried over from before
    segment_rule: SegmentRule = field(default_factory=SegmentRule)  # the run's: segments()

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
        """Each instrument's segments in the file: its bags' under the run's segment rule."""
        return {c: self.segment_rule.apply(s for b in self.bags for s in b.segments.get(c, []))
                for c in self.instruments()}


def display_path(path: Path) -> str:
    """A path as text; bytes that are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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


def audio_path(display: str) -> Path:
    """The file a JSON path names: outputs write bytes that are not UTF-8 as \\xNN; undo that
    unless a file by the literal name exists."""
    if os.path.lexists(display):
        return Path(display)
    parts = re.split(r"\\x([0-9a-f]{2})", display)
    raw = b"".join(bytes([int(p, 16)]) if i % 2 else p.encode("utf-8")
                   for i, p in enumerate(parts))
    return Path(os.fsdecode(raw))
