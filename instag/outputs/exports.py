"""A tagged file's segments in the formats people open them in: JAMS (the MIR community's
annotation format, namespace `tag_open`), Audacity label tracks and Sonic Visualiser
annotation layers. One file per audio file, named after the audio file's path relative to the
library's root with its extension kept (`album/01.flac` -> `album/01.flac.jams`: two `01.flac`
in two albums, or `01.flac` beside `01.mp3`, never collide; names that are not UTF-8 keep their
bytes), each written atomically.

A segment is one bag's run of instances that attention points at for an instrument present in
that bag, with the bag's probability as its confidence: overlapping bags (`--hop`) give
overlapping segments, as they should in an annotation."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from instag.common import VERSION
from instag.common.atomic import atomic_write
from instag.common.enums import TextEnum
from instag.common.errors import InstagError
from instag.common.extras import require
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


@dataclass(frozen=True, order=True)
class Segment:
    start_s: float
    end_s: float
    instrument: str
    probability: float  # its bag's


def segments_of(doc: dict) -> list[Segment]:
    """Every bag's segments of a tagged file's document (`outputs.readback`), by start time;
    probabilities to the 4 decimals every output has (Parquet keeps more), so that exports
    from any output are the same."""
    return sorted(Segment(s, e, c, round(b["probabilities"][c], DECIMALS))
                  for b in doc.get("bags", ()) for c, segs in b["segments"].items()
                  for s, e in segs)


def library_root(paths: list[Path]) -> Path:
    """The deepest folder holding every file (a folder given is its own root)."""
    folders = [os.fsencode(os.path.abspath(p)) if os.path.isdir(p) else
               os.path.dirname(os.fsencode(os.path.abspath(p))) for p in paths]
    return Path(os.fsdecode(os.path.commonpath(folders))) if folders else Path("/")


class SegmentsWriter:
    """Writes each tagged file's segments into `out` (a folder), the audio file's path relative
    to `root` mirrored under it. `run`: what the annotations say of the run (the model's
    identity, the thresholds applied), as far as it is known."""

    def __init__(self, out: Path, fmt: SegmentsFormat | str, root: Path,
                 run: dict | None = None) -> None:
        self.out, self.fmt, self.root = Path(out), SegmentsFormat(fmt), Path(root)
        self.run = run or {}
        self.written = 0
        if self.fmt is SegmentsFormat.JAMS:
            self.jams = require("jams")

    @contextlib.contextmanager
    def staged(self) -> Iterator[SegmentsWriter]:
        """Files go into a hidden folder inside `out` and move into place only when the block
        ends without error (`tag --segments-out`: a run that fails or is stopped leaves the
        previous segment files as they were, as it leaves the previous output)."""
        final = self.out
        final.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".instag-staging-", dir=final))
        self.out = staging
        try:
            yield self
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self.out = final
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                dest = final / path.relative_to(staging)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        shutil.rmtree(staging, ignore_errors=True)

    def target(self, audio: Path) -> Path:
        relative = os.path.relpath(os.fsencode(audio), os.fsencode(self.root))
        if relative.startswith(b".." + os.fsencode(os.sep)) or relative == b"..":
            raise InstagError(f"{audio}: not under the library's root {self.root}",
                              "pass --root with a folder that holds every file")
        return Path(os.fsdecode(os.path.join(os.fsencode(self.out), relative) +
                                EXTENSION[self.fmt].encode()))

    def __call__(self, doc: dict) -> None:
        """Write one document's file; failed files have no segments and get none."""
        if doc.get("status") != "ok":
            return
        target = self.target(audio_path(doc["path"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        segments = segments_of(doc)
        with atomic_write(target, "w", newline="", encoding="utf-8") as f:
            if self.fmt is SegmentsFormat.JAMS:
                self._jams(doc, segments).save(f, fmt="json")
            elif self.fmt is SegmentsFormat.AUDACITY:
                f.writelines(f"{s.start_s:.6f}\t{s.end_s:.6f}\t{s.instrument}\n"
                             for s in segments)
            else:
                w = csv.writer(f)
                w.writerow(["time", "value", "duration", "label"])
                w.writerows([f"{s.start_s:.6f}", f"{s.probability:.4f}",
                             f"{s.end_s - s.start_s:.6f}", s.instrument] for s in segments)
        self.written += 1

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
