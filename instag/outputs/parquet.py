"""Parquet output (pyarrow): one row per file and bag, for catalogues where a JSON document of a
million files is not what a job should produce.

Columns: path, status, reason, duration_s, size, mtime_ns, model_id, file_tags, bag_start_s,
bag_end_s, probabilities (map instrument -> probability, unrounded), present (list of
instruments), segments (list of {instrument, start_s, end_s}), artist, title, album (null where
the file's tags have none; absent in older outputs). A failed file is one row with
its status and reason and null bag columns.

Two shapes, each complete or absent: a single ``.parquet`` file (temp file + rename, like every
other output), or a dataset directory of ``part-NNNNN.parquet`` files, filled in a fresh
directory that is marked ``_SUCCESS`` and renamed into place at the end. A later run can
resume from either (`PreviousOutput`): rows whose file is unchanged (same size and mtime)
and whose ``model_id`` is the current one are carried over instead of being computed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instag.common.atomic import SUCCESS, UNCHECKED, atomic_dir, atomic_path
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.inputs import DOCUMENT, regular_file
from instag.common.status import Status
from instag.features.instances import INSTANCE_SECONDS
from instag.outputs.documents import STATUSES, Malformed, check_document, malformed
from instag.outputs.songtags import SONG_FIELDS, song_of
from instag.tagging.bags import Bag
from instag.tagging.results import BagResult, FileResult, display_path

METADATA_KEY = "instag"  # the schema's metadata: the run (model, thresholds), as JSON
ROW_GROUP_ROWS = 20_000  # rows buffered before they are written as one row group
PART_ROWS = 500_000  # rows per part file of a dataset directory
_NO_VALUES = np.zeros((0, 0), np.float32)  # a carried bag's instance values: not in Parquet
PREVIOUS_FIX = ("the previous output is not as instag writes it (it is kept as it is): move it "
                "aside, or write elsewhere")


def schema():
    pa = require("pyarrow")
    return pa.schema([
        ("path", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("duration_s", pa.float64()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
        ("model_id", pa.string()), ("file_tags", pa.string()),
        ("bag_start_s", pa.float64()), ("bag_end_s", pa.float64()),
        ("probabilities", pa.map_(pa.string(), pa.float64())),
        ("present", pa.list_(pa.string())),
        ("segments", pa.list_(pa.struct([("instrument", pa.string()),
                                         ("start_s", pa.float64()),
                                         ("end_s", pa.float64())]))),
        *((name, pa.string()) for name in SONG_FIELDS),
    ])


def parquet_rows(r: FileResult) -> list:
    """The file's rows: one per bag, or one with null bag columns for a failed file. A result
    carried over from a previous output keeps the rows it had there (RowSpans)."""
    if r.rows is not None:
        return r.rows
    base = {"path": r.display_path, "status": r.status.value, "reason": r.reason,
            "duration_s": r.duration, "size": r.size, "mtime_ns": r.mtime_ns,
            "model_id": r.model_id, "file_tags": r.file_tags,
            **{f: r.song.get(f) or None for f in SONG_FIELDS}}
    if not r.ok or not r.bags:
        return [{**base, "bag_start_s": None, "bag_end_s": None, "probabilities": None,
                 "present": None, "segments": None}]
    return [{**base, "bag_start_s": b.bag.start_s, "bag_end_s": b.bag.end_s,
             "probabilities": list(b.probabilities.items()), "present": b.present,
             "segments": [{"instrument": c, "start_s": s, "end_s": e}
                          for c, segs in b.segments.items() for s, e in segs]}
            for b in r.bags]


def parquet_bag(row: dict) -> dict:
    """A row's bag in a document's shape (`documents`), its values as read: the schema's check
    names what is wrong with them; a null segment is Malformed here."""
    segments: dict = {}
    for s in row["segments"] or ():
        if s is None:
            raise Malformed("segments", "a null segment")
        segments.setdefault(s["instrument"], []).append([s["start_s"], s["end_s"]])
    probabilities, present = row["probabilities"], row["present"]
    return {"start_s": row["bag_start_s"], "end_s": row["bag_end_s"],
            "probabilities": None if probabilities is None else dict(probabilities),
            "present": None if present is None else list(present), "segments": segments}


def read_batches(path: Path, columns: list[str] | None = None,
                 batch_size: int = ROW_GROUP_ROWS, option: str = "") -> Iterator:
    """A Parquet file's (or a dataset folder's part files', in order) record batches, read a
    row group at a time as they are asked for: Arrow's dataset scanner reads ahead as fast as
    it can, and a slow consumer then holds most of the file. Each file is an input of
    `guard.inputs`' rule (a regular file: never a FIFO or device)."""
    pq = require("pyarrow.parquet")
    parts = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]
    for part in parts:
        with pq.ParquetFile(regular_file(part, option, DOCUMENT)) as f:
            yield from f.iter_batches(batch_size=batch_size, columns=columns)


def is_instag_parquet(path: Path) -> bool:
    """A Parquet file instag wrote: its schema's metadata holds instag's key."""
    with open(path, "rb") as f:
        if f.read(4) != b"PAR1":
            return False
    pq = require("pyarrow.parquet")
    return METADATA_KEY.encode() in (pq.read_schema(path).metadata or {})


def is_instag_dataset(folder: Path) -> bool:
    """A Parquet dataset folder instag wrote: finished (`_SUCCESS`), only its part files, the
    first of them instag's (an empty folder is fine too)."""
    names = sorted(p.name for p in Path(folder).iterdir())
    if not names:
        return True
    parts = [n for n in names if n != SUCCESS]
    return (SUCCESS in names and all(n.startswith("part-") and n.endswith(".parquet")
                                     for n in parts)
            and (not parts or is_instag_parquet(Path(folder) / parts[0])))


def is_dataset(out: Path) -> bool:
    """A dataset directory: an existing folder, or a name without an extension."""
    return out.is_dir() or not out.suffix


@dataclass(frozen=True)
class RowSpan:
    """Rows start..stop of an Arrow table: a carried file's rows, by reference (a per-file
    slice of a nested table weighs kilobytes of metadata; a million of them would not fit)."""

    table: Any
    start: int
    stop: int

    def arrow(self):
        return self.table.slice(self.start, self.stop - self.start)


class _Rows:
    """Buffers rows into row groups of one Parquet file, or into part files of a directory.
    Rows come as dicts (computed results) or as RowSpans (carried over: copied as they are,
    the spans of consecutive files joined)."""

    def __init__(self, target: Path, dataset: bool, run_info: Callable[[], dict]) -> None:
        self.pa, self.pq = require("pyarrow"), require("pyarrow.parquet")
        self.target, self.dataset = target, dataset
        self.schema = schema()
        self.run_info = run_info
        self.pieces: list = []  # in order: lists of dicts, RowSpans
        self.buffered = 0
        self.writer = None
        self.parts = 0
        self.part_rows = 0

    def add(self, rows: list) -> None:
        for row in rows:
            last = self.pieces[-1] if self.pieces else None
            if isinstance(row, RowSpan):
                if isinstance(last, RowSpan) and last.table is row.table and \
                        last.stop == row.start:
                    self.pieces[-1] = RowSpan(row.table, last.start, row.stop)
                else:
                    self.pieces.append(row)
                self.buffered += row.stop - row.start
            else:
                if not isinstance(last, list):
                    self.pieces.append(last := [])
                last.append(row)
                self.buffered += 1
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.writer is None or (self.dataset and self.part_rows >= PART_ROWS):
            self.close()
            path = (self.target / f"part-{self.parts:05d}.parquet" if self.dataset
                    else self.target)
            if self.parts == 0:  # the run's models are loaded by the first flush
                self.schema = self.schema.with_metadata(
                    {METADATA_KEY: json.dumps(self.run_info(), ensure_ascii=False)})
            self.writer = self.pq.ParquetWriter(path, self.schema)
            self.parts, self.part_rows = self.parts + 1, 0
        if self.pieces:
            tables = [p.arrow() if isinstance(p, RowSpan) else
                      self.pa.Table.from_pylist(p, schema()) for p in self.pieces]
            self.writer.write_table(self.pa.concat_tables(tables).combine_chunks())
            self.part_rows += self.buffered
            self.pieces, self.buffered = [], 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextmanager
def parquet_writer(out: Path, run_info: Callable[[], dict] = dict, replaces=UNCHECKED
                   ) -> Iterator:
    """Yield a function that appends one FileResult's rows; the output appears (a file, or a
    dataset directory marked _SUCCESS) only when the block ends without an exception. The
    schema's metadata holds `run_info()` as JSON under `instag` (the thresholds applied)."""
    dataset = is_dataset(out)
    with ExitStack() as stack:
        target = stack.enter_context(atomic_dir(out) if dataset else
                                     atomic_path(out, replaces, keep_same=True))
        rows = _Rows(target, dataset, run_info)
        try:
            yield lambda r: rows.add(parquet_rows(r))
            rows.flush()  # an empty run still writes a file with the schema
        finally:
            rows.close()


class PreviousOutput:
    """A previous Parquet output, read by columns to resume from it (memory: a few columns of
    the files it may carry over, as Arrow arrays, never a Python object per row).

    `candidates` are the files it may carry over, in its order: rows made by the same models
    and settings (`model_id`) that ended ok or in a failure that will not go away by itself,
    one (path, size, mtime_ns) per file (a file's rows are consecutive; its first stands for
    it). Once the caller knows which of them are unchanged on disk, `results` reads the output
    again and streams their rows as FileResults whose `rows` are the Arrow rows themselves
    (copied into the new output as they are): the k-th file met is candidate k, so nothing is
    looked up by path. A dataset directory without `_SUCCESS` was never finished and gives
    nothing."""

    COLUMNS = ["path", "size", "mtime_ns", "model_id", "status"]

    def __init__(self, out: Path, model_id: str) -> None:
        pa = require("pyarrow")
        self.out, self.model_id = out, model_id
        self.final = pa.array(sorted(s.value for s in Status if s is Status.OK or s.permanent))
        self.statuses = pa.array(sorted(STATUSES))
        self.candidates = pa.table({"path": pa.array([], pa.string()),
                                    "size": pa.array([], pa.int64()),
                                    "mtime_ns": pa.array([], pa.int64())})
        if not out.exists() or (out.is_dir() and not (out / SUCCESS).is_file()):
            return
        if not self._same_schema():
            return  # written by another version of instag: nothing is carried over
        firsts = [table.take([a for _, a, _, first in pieces if first])
                  .select(["path", "size", "mtime_ns"])
                  for table, pieces in self._pieces(self.COLUMNS)]
        if firsts:
            self.candidates = pa.concat_tables(firsts).combine_chunks()

    def _pieces(self, columns: list[str] | None = None) -> Iterator[tuple[object, list]]:
        """Per row batch, its carryable rows as a table and their pieces (k, start, stop,
        whether the piece starts file k), file by file in the output's order; a file cut by a
        batch's end comes in two pieces."""
        pa, pc = require("pyarrow"), require("pyarrow.compute")
        k, last, rows = -1, None, 0
        for batch in self._batches(columns):
            self._check(batch, rows)
            rows += batch.num_rows
            batch = batch.filter(self._carryable(batch))
            if not batch.num_rows:
                continue
            paths = batch["path"]
            before = pa.concat_arrays([pa.array([last], pa.string()),
                                       paths.slice(0, len(paths) - 1)])
            starts = np.flatnonzero(pc.fill_null(pc.not_equal(paths, before), True)
                                    .to_numpy(zero_copy_only=False))
            continues = not len(starts) or starts[0] != 0  # the last batch's file goes on
            bounds = np.unique(np.r_[0, starts, batch.num_rows]).tolist()
            pieces = []
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                first = a != 0 or not continues
                k += first
                pieces.append((k, a, b, first))
            yield _with_song(pa.Table.from_batches([batch]).replace_schema_metadata(None)), \
                pieces
            last = paths[-1].as_py()

    def _same_schema(self) -> bool:
        """Whether the output has this instag's columns (its rows are copied as they are)."""
        pq = require("pyarrow.parquet")
        first = next(iter(sorted(self.out.glob("*.parquet")) if self.out.is_dir() else
                          [self.out]), None)
        try:
            if first is None:
                return False
            columns = pq.read_schema(first).remove_metadata()
            return columns in (schema(), _without_song(schema()))
        except Exception as e:  # pyarrow's own errors: not Parquet at all
            raise InstagError(f"--out {self.out}: cannot read it as a previous Parquet output "
                              f"({str(e)[:200]})", "remove it, or write elsewhere") from None

    def _batches(self, columns: list[str] | None = None):
        try:
            yield from read_batches(self.out, columns, option="--out")
        except InstagError:
            raise
        except Exception as e:  # pyarrow's own errors: not a Parquet output of instag
            raise InstagError(f"--out {self.out}: cannot read it as a previous Parquet output "
                              f"({str(e)[:200]})", "remove it, or write elsewhere") from None

    def _check(self, batch, before: int) -> None:
        """The columns resuming relies on, in every row (`before` rows came earlier): a path,
        a status of instag's; a size and mtime where the row may be carried over."""
        pc = require("pyarrow.compute")
        carryable = self._carryable(batch)
        checks = {
            "path": (pc.fill_null(pc.equal(batch["path"], ""), True), "null or empty"),
            "status": (pc.invert(pc.fill_null(pc.is_in(batch["status"], value_set=self.statuses),
                                              False)), "not a status of instag's"),
            "size": (pc.and_(carryable, pc.fill_null(pc.less(batch["size"], 0), True)),
                     "null or negative"),
            "mtime_ns": (pc.and_(carryable, pc.is_null(batch["mtime_ns"])), "null")}
        for name, (bad, problem) in checks.items():
            wrong = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
            if len(wrong):
                value = batch[name][int(wrong[0])].as_py()
                raise InstagError(f"--out {self.out}, row {before + int(wrong[0]) + 1}: field "
                                  f"{name}: {value!r} is {problem}", PREVIOUS_FIX)

    def _carryable(self, batch):
        pc = require("pyarrow.compute")
        return pc.fill_null(pc.and_(pc.equal(batch["model_id"], self.model_id),
                                    pc.is_in(batch["status"], value_set=self.final)), False)

    def results(self, unchanged: np.ndarray, path_of: Callable[[int], Path]
                ) -> Iterator[FileResult]:
        """The carried-over results: the rows of the candidates marked in `unchanged` (a
        boolean array over `candidates`), in the output's order, each file's result named
        `path_of(k)`."""
        if not unchanged.any():
            return
        held: tuple[int, list[RowSpan]] | None = None  # a file that may go on in the next batch
        for table, pieces in self._pieces():
            for k, a, b, first in pieces:
                if not unchanged[k]:
                    continue
                if held is not None and not first:
                    held[1].append(RowSpan(table, a, b))
                    continue
                if held is not None:
                    yield self._result(path_of(held[0]), held[1])
                held = (k, [RowSpan(table, a, b)])
        if held is not None:
            yield self._result(path_of(held[0]), held[1])

    def _result(self, path: Path, spans: list[RowSpan]) -> FileResult:
        return carried_result(path, spans, f"--out {self.out}, the rows of {display_path(path)}")


def _without_song(columns):
    """The columns of an output written before the song's fields were."""
    for name in SONG_FIELDS:
        columns = columns.remove(columns.get_field_index(name))
    return columns


def _with_song(table):
    """An older output's rows with the song's columns (null), to be copied into a new one."""
    pa = require("pyarrow")
    for name in SONG_FIELDS:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, pa.string()),
                                        pa.nulls(table.num_rows, pa.string()))
    return table


def carried_result(path: Path, spans: list[RowSpan], where: str = "") -> FileResult:
    """A file's result as a previous output's Parquet rows have it: status, sizes, bags with
    probabilities, instruments present and segments (no per-instance values), and the rows
    themselves, to be written again as they are. Rows that break the documents' schema are
    one InstagError naming `where`."""
    first, *_ = listed = [row for span in spans for row in span.arrow().to_pylist()]
    ok = first["status"] == Status.OK.value and first["bag_start_s"] is not None
    try:
        bags = [parquet_bag(row) for row in listed] if ok else []
    except Malformed as e:
        raise malformed(where, e) from None
    check_document({**{k: first[k] for k in ("path", "status", "duration_s", "size",
                                             "mtime_ns", "model_id")},
                    "reason": first["reason"] or "", "file_tags": first["file_tags"] or "",
                    "instruments": [], "segments": {}, "bags": bags, **song_of(first)}, where)
    results = [BagResult(Bag(round(b["start_s"] / INSTANCE_SECONDS),
                             round(b["end_s"] / INSTANCE_SECONDS)),
                         b["probabilities"], _NO_VALUES, _NO_VALUES, b["present"],
                         {c: [tuple(s) for s in segs] for c, segs in b["segments"].items()})
               for b in bags]
    return FileResult(path, Status(first["status"]), first["reason"] or "",
                      duration=first["duration_s"], bags=results, size=first["size"],
                      mtime_ns=first["mtime_ns"], model_id=first["model_id"],
                      file_tags=first["file_tags"] or "", song=song_of(first), rows=spans)
