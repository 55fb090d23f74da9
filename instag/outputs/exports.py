"""A tagged file's segments in the formats people open them in: JAMS (the MIR community's
annotation format, namespace `tag_open`), Audacity label tracks and Sonic Visualiser
annotation layers. One file per audio file, named after the audio file's path relative to the
library's root with its extension kept (`album/01.flac` -> `album/01.flac.jams`: two `01.flac`
in two albums, or `01.flac` beside `01.mp3`, never collide; names that are not UTF-8 keep their
bytes), each written atomically.

A segment is one of the file's segments (its bags' under the segment rule, `tagging.segments`:
the same as the tags file's and the browse page's), with the highest probability of the bags
it overlaps that hold its instrument as its confidence."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from instag.common import VERSION
from instag.common.enums import TextEnum
from instag.common.extras import require
from instag.common.guard.targets import (
    Recognise,
    head,
    starts_with,
)
from instag.outputs.folders import FolderOutput
from instag.tagging.results import DECIMALS, audio_path

TOOL = f"instag {VERSION}"
DATA_SOURCE = ("instag: VGGish features, the attention model of Gururani, Sharma & Lerch "
               "(ISMIR 2019)")


class SegmentsFormat(TextEnum):
    JAMS = "jams"  # .jams: JSON, validated by the jams package's schema
    AUDACITY = "audacity"  # .txt: start<TAB>end<TAB>label lines (File > Import > Labels)
    SV = "sv"  # .csv: time,value,duration,label (File > Import Annotation Layer: regions)


EXTENSION = {SegmentsFormat.JAMS: ".jams", SegmentsFormat.AUDACITY: ".txt",
             SegmentsFormat.SV: ".csv"}
SV_HEADER = "time,value,duration,label"
LABEL_LINE = re.compile(rb"\d+\.\d{6}\t\d+\.\d{6}\t[^\t]+")
MAX_RECOGNISED = 16 << 20  # what is read of an existing file to recognise it as instag's


@dataclass(frozen=True, order=True)
class Segment:
    start_s: float
    end_s: float
    instrument: str
    probability: float  # the highest of the bags it overlaps that hold its instrument


def segments_of(doc: dict) -> list[Segment]:
    """A tagged file's segments (its document's, `outputs.readback`), by start time;
    probabilities to the 4 decimals every output has (Parquet keeps more), so that exports
    from any output are the same."""
    bags = doc.get("bags", ())
    return sorted(Segment(s, e, c, round(max(
        (b["probabilities"][c] for b in bags
         if c in b["present"] and b["start_s"] < e and s < b["end_s"]), default=0.0), DECIMALS))
        for c, segs in (doc.get("segments") or {}).items() for s, e in segs)


def library_root(paths: Iterable[Path]) -> Path:
    """The deepest folder holding every file (a folder given is its own root); the paths are
    folded one at a time, so a document's million paths are never held at once."""
    root: bytes | None = None
    for p in paths:
        folder = (os.fsencode(os.path.abspath(p)) if os.path.isdir(p) else
                  os.path.dirname(os.fsencode(os.path.abspath(p))))
        root = folder if root is None else os.path.commonpath([root, folder])
    return Path(os.fsdecode(root)) if root is not None else Path("/")


def _jams_by_instag(path: Path) -> bool:
    return b'"annotation_tools": "instag' in head(path, MAX_RECOGNISED)


def _labels_by_instag(path: Path) -> bool:
    """An Audacity label track in instag's exact shape (six decimals, one label a line)."""
    return all(LABEL_LINE.fullmatch(line) for line in head(path, MAX_RECOGNISED).splitlines())


RECOGNISE: dict[SegmentsFormat, Recognise] = {
    SegmentsFormat.JAMS: _jams_by_instag,
    SegmentsFormat.AUDACITY: _labels_by_instag,
    SegmentsFormat.SV: starts_with(SV_HEADER.encode() + b"\r\n"),
}


class SegmentsWriter(FolderOutput):
    """Writes each tagged file's segments into `out` (a folder), the audio file's path relative
    to `root` mirrored under it (`folders.FolderOutput`: through the output-target rule,
    staged with `staged()`). `run`: what the annotations say of the run (the model's
    identity, the thresholds applied), as far as it is known."""

    def __init__(self, out: Path, fmt: SegmentsFormat | str, root: Path,
                 run: dict | None = None, note: Callable[[str], None] = lambda line: None
                 ) -> None:
        self.fmt = SegmentsFormat(fmt)
        super().__init__(out, root, EXTENSION[self.fmt], RECOGNISE[self.fmt], note)
        self.run = run or {}
        if self.fmt is SegmentsFormat.JAMS:
            self.jams = require("jams")

    def __call__(self, doc: dict) -> None:
        """Write one document's file; failed files have no segments and get none."""
        if doc.get("status") == "ok":
            self.add(audio_path(doc["path"]), lambda path: self._content(doc, path))

    def _content(self, doc: dict, path: Path) -> None:
        segments = segments_of(doc)
        with open(path, "w", newline="", encoding="utf-8") as f:
            if self.fmt is SegmentsFormat.JAMS:
                self._jams(doc, segments).save(f, fmt="json")
            elif self.fmt is SegmentsFormat.AUDACITY:
                f.writelines(f"{s.start_s:.6f}\t{s.end_s:.6f}\t{s.instrument}\n"
                             for s in segments)
            else:
                w = csv.writer(f)
                w.writerow(SV_HEADER.split(","))
                w.writerows([f"{s.start_s:.6f}", f"{s.probability:.4f}",
                             f"{s.end_s - s.start_s:.6f}", s.instrument] for s in segments)

    def _jams(self, doc: dict, segments: list[Segment]):
        jams = self.jams
        jam = jams.JAMS()
        jam.file_metadata.duration = doc["duration_s"]
        jam.file_metadata.title = Path(doc["path"]).name
        ann = jams.Annotation(namespace="tag_open", time=0, duration=doc["duration_s"])
        ann.annotation_metadata.annotation_tools = TOOL
        ann.annotation_metadata.version = VERSION
        ann.annotation_metadata.data_source = DATA_SOURCE
        ann.sandbox.instag = {"model_id": doc.get("model_id", ""), **self.run}
        for s in segments:
            ann.append(time=s.start_s, duration=s.end_s - s.start_s, value=s.instrument,
                       confidence=s.probability)
        jam.annotations.append(ann)
        return jam
