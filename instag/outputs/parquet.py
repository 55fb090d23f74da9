"""Parquet output (pyarrow): one row per file and bag, for catalogues where a JSON document of a
million files is not what a job should produce.

Columns: path, status, reason, duration_s, size, mtime_ns, model_id, file_tags, bag_start_s,
bag_end_s, probabilities (map instrument -> probability, unrounded), present (list of
instruments), segments (list of {instrument, start_s, end_s}). A failed file is one row with
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
from pathlib import Path

import numpy as np

from instag.common.atomic import SUCCESS, atomic_dir, atomic_path
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.status import Status
from instag.features.instances import INSTANCE_SECONDS
from instag.tagging.bags import Bag
from instag.tagging.results import BagResult, FileResult

METADATA_KEY = "instag"  # the schema's metadata: the run (model, thresholds), as JSON
ROW_GROUP_ROWS = 20_000  # rows buffered before they are written as one row group
PART_ROWS = 500_000  # rows per part file of a dataset directory
# what a reader decodes ahead of the one it hands out: Arrow's defaults (16 batches, 4 files)
# hold a third of a million rows at once
READ_AHEAD = {"batch_readahead": 1, "fragment_readahead": 1}
_NO_VALUES = np.zeros((0, 0), np.float32)  # a carried bag's instance values: not in Parquet


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
    ])


def parquet_rows(r: FileResult):
    """The file's rows: one per bag, or one with null bag columns for a failed file. A result
    carried over from a previous output keeps the rows it had there (an Arrow table)."""
    if r.rows is not None:
        return r.rows
    base = {"path": r.display_path, "status": r.status.value, "reason": r.reason,
            "duration_s": r.duration, "size": r.size, "mtime_ns": r.mtime_ns,
            "model_id": r.model_id, "file_tags": r.file_tags}
    if not r.ok or not r.bags:
        return [{**base, "bag_start_s": None, "bag_end_s": None, "probabilities": None,
                 "present": None, "segments": None}]
    return [{**base, "bag_start_s": b.bag.start_s, "bag_end_s": b.bag.end_s,
             "probabilities": list(b.probabilities.items()), "present": b.present,
             "segments": [{"instrument": c, "start_s": s, "end_s": e}
                          for c, segs in b.segments.items() for s, e in segs]}
            for b in r.bags]


def is_dataset(out: Path) -> bool:
    """A dataset directory: an existing folder, or a name without an extension."""
    return out.is_dir() or not out.suffix


class _Rows:
    """Buffers rows into row groups of one Parquet file, or into part files of a directory.
    Rows come as dicts (computed results) or as Arrow tables (carried over: copied as they
    are)."""

    def __init__(self, target: Path, dataset: bool, run_info: Callable[[], dict]) -> None:
        self.pa, self.pq = require("pyarrow"), require("pyarrow.parquet")
        self.target, self.dataset = target, dataset
        self.schema = schema()
        self.run_info = run_info
        self.dicts: list[dict] = []
        self.tables: list = []  # in order, the dicts before them made tables too
        self.buffered = 0
        self.writer = None
        self.parts = 0
        self.part_rows = 0

    def add(self, rows) -> None:
        if isinstance(rows, list):
            self.dicts += rows
        else:
            self._tabulate()
            self.tables.append(rows)
        self.buffered += len(rows) if isinstance(rows, list) else rows.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def _tabulate(self) -> None:
        if self.dicts:
            self.tables.append(self.pa.Table.from_pylist(self.dicts, schema()))
            self.dicts = []

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
        self._tabulate()
        if self.tables:
            # one contiguous row group: carried files come as thousands of one-file slices
            self.writer.write_table(self.pa.concat_tables(self.tables).combine_chunks())
            self.part_rows += self.buffered
            self.tables, self.buffered = [], 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextmanager
def parquet_writer(out: Path, run_info: Callable[[], dict] = dict) -> Iterator:
    """Yield a function that appends one FileResult's rows; the output appears (a file, or a
    dataset directory marked _SUCCESS) only when the block ends without an exception. The
    schema's metadata holds `run_info()` as JSON under `instag` (the thresholds applied)."""
    dataset = is_dataset(out)
    with ExitStack() as stack:
        target = stack.enter_context(atomic_dir(out) if dataset else atomic_path(out))
        rows = _Rows(target, dataset, run_info)
        try:
            yield lambda r: rows.add(parquet_rows(r))
            rows.flush()  # an empty run still writes a file with the schema
        finally:
            rows.close()


class PreviousOutput:
    """A previous Parquet output, read by columns to resume from it (memory: a few columns of
    the files it may carry over, as Arrow arrays, never a Python object per row).

    `candidates` are the files it may carry over: rows made by the same models and settings
    (`model_id`) that ended ok or in a failure that will not go away by itself, one (path,
    size, mtime_ns) per file. Once the caller knows which of them are unchanged on disk,
    `results` streams their rows, a row batch at a time, as FileResults whose `rows` are the
    Arrow rows themselves (copied into the new output as they are). A dataset directory
    without `_SUCCESS` was never finished and gives nothing."""

    COLUMNS = ["path", "size", "mtime_ns", "model_id", "status"]

    def __init__(self, out: Path, model_id: str) -> None:
        pa, pc = require("pyarrow"), require("pyarrow.compute")
        self.out, self.model_id = out, model_id
        self.final = pa.array(sorted(s.value for s in Status if s is Status.OK or s.permanent))
        empty = pa.table({"path": pa.array([], pa.string()), "size": pa.array([], pa.int64()),
                          "mtime_ns": pa.array([], pa.int64())})
        self.candidates = empty
        if not out.exists() or (out.is_dir() and not (out / SUCCESS).is_file()):
            return
        parts = []
        for batch in self._batches(self.COLUMNS):
            keep = self._carryable(batch)
            if pc.any(keep).as_py():
                parts.append(batch.filter(keep).select(["path", "size", "mtime_ns"]))
        if parts:  # one row per file: its first (its bags' rows repeat the same columns)
            table = pa.Table.from_batches(parts)
            self.candidates = table.group_by("path", use_threads=False).aggregate(
                [("size", "first"), ("mtime_ns", "first")]).rename_columns(
                ["path", "size", "mtime_ns"])

    def _batches(self, columns: list[str] | None = None):
        ds = require("pyarrow.dataset")
        try:
            dataset = ds.dataset(self.out, format="parquet", schema=schema())
            yield from dataset.to_batches(columns=columns, batch_size=ROW_GROUP_ROWS,
                                          **READ_AHEAD)
        except Exception as e:  # pyarrow's own errors: not a Parquet output of instag
            raise InstagError(f"--out {self.out}: cannot read it as a previous Parquet output "
                              f"({str(e)[:200]})", "remove it, or write elsewhere") from None

    def _carryable(self, batch):
        pc = require("pyarrow.compute")
        return pc.fill_null(pc.and_(pc.equal(batch["model_id"], self.model_id),
                                    pc.is_in(batch["status"], value_set=self.final)), False)

    def results(self, unchanged, path_of: Callable[[int], Path]) -> Iterator[FileResult]:
        """The carried-over results: the rows of the candidates at the positions `unchanged`
        (a boolean numpy array over `candidates`) in the previous output's order, each file's
        result named `path_of(position)`."""
        pa, pc = require("pyarrow"), require("pyarrow.compute")
        keep = pa.array(self.candidates["path"].combine_chunks().filter(pa.array(unchanged)))
        if not len(keep):
            return
        held: tuple[int, list] | None = None  # a file whose rows may go on in the next batch
        for batch in self._batches():
            batch = batch.filter(pc.and_(self._carryable(batch),
                                         pc.is_in(batch["path"], value_set=keep)))
            if not batch.num_rows:
                continue
            position = pc.index_in(batch["path"], value_set=self.candidates["path"])
            position = position.to_numpy(zero_copy_only=False)
            starts = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])
            table = pa.Table.from_batches([batch]).replace_schema_metadata(None)
            for start, stop in zip(starts, [*starts[1:], batch.num_rows], strict=True):
                pos, rows = int(position[start]), table.slice(start, stop - start)
                if held is not None and held[0] == pos:
                    held[1].append(rows)
                    continue
                if held is not None:
                    yield carried_result(path_of(held[0]), pa.concat_tables(held[1]))
                held = (pos, [rows])
        if held is not None:
            yield carried_result(path_of(held[0]), pa.concat_tables(held[1]))


def carried_result(path: Path, rows) -> FileResult:
    """A file's result as a previous output's Parquet rows (an Arrow table) have it: status,
    sizes, bags with probabilities, instruments present and segments (no per-instance
    values), and the rows themselves, to be written again as they are."""
    first, *_ = listed = rows.to_pylist()
    bags = []
    if first["status"] == Status.OK.value and first["bag_start_s"] is not None:
        for row in listed:
            segments: dict[str, list[tuple[float, float]]] = {}
            for seg in row["segments"] or ():
                segments.setdefault(seg["instrument"], []).append((seg["start_s"], seg["end_s"]))
            bag = Bag(round(row["bag_start_s"] / INSTANCE_SECONDS),
                      round(row["bag_end_s"] / INSTANCE_SECONDS))
            bags.append(BagResult(bag, dict(row["probabilities"]), _NO_VALUES, _NO_VALUES,
                                  list(row["present"]), segments))
    return FileResult(path, Status(first["status"]), first["reason"] or "",
                      duration=first["duration_s"], bags=bags, size=first["size"],
                      mtime_ns=first["mtime_ns"], model_id=first["model_id"],
                      file_tags=first["file_tags"] or "", rows=rows)
