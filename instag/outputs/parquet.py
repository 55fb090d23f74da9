"""Parquet output (pyarrow): one row per file and bag, for catalogues where a JSON document of a
million files is not what a job should produce.

Columns: path, status, reason, duration_s, size, mtime_ns, model_id, file_tags, bag_start_s,
bag_end_s, probabilities (map instrument -> probability, unrounded), present (list of
instruments), segments (list of {instrument, start_s, end_s}). A failed file is one row with
its status and reason and null bag columns.

Two shapes, each complete or absent: a single ``.parquet`` file (temp file + rename, like every
other output), or a dataset directory of ``part-NNNNN.parquet`` files, filled in a fresh
directory that is marked ``_SUCCESS`` and renamed into place at the end. A later run can
resume from either (`previous_results`): rows whose file is unchanged (same size and mtime)
and whose ``model_id`` is the current one are carried over instead of being computed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from instag.common.atomic import SUCCESS, atomic_dir, atomic_path
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.status import Status
from instag.tagging.results import FileResult

METADATA_KEY = "instag"  # the schema's metadata: the run (model, thresholds), as JSON
ROW_GROUP_ROWS = 20_000  # rows buffered before they are written as one row group
PART_ROWS = 500_000  # rows per part file of a dataset directory


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


def parquet_rows(r: FileResult) -> list[dict]:
    """The file's rows: one per bag, or one with null bag columns for a failed file. A result
    carried over from a previous output keeps the rows it had there."""
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
    """Buffers rows into row groups of one Parquet file, or into part files of a directory."""

    def __init__(self, target: Path, dataset: bool, run_info: Callable[[], dict]) -> None:
        self.pa, self.pq = require("pyarrow"), require("pyarrow.parquet")
        self.target, self.dataset = target, dataset
        self.schema = schema()
        self.run_info = run_info
        self.buffer: list[dict] = []
        self.writer = None
        self.parts = 0
        self.part_rows = 0

    def add(self, rows: list[dict]) -> None:
        self.buffer += rows
        if len(self.buffer) >= ROW_GROUP_ROWS:
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
        if self.buffer:
            self.writer.write_table(self.pa.Table.from_pylist(self.buffer, self.schema))
            self.part_rows += len(self.buffer)
            self.buffer = []

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


def previous_results(out: Path, model_id: str) -> dict[str, list[dict]]:
    """The rows of a previous Parquet output that may be carried over, by path: those made by
    the same models and settings (`model_id`) that ended ok or in a failure that will not go
away by itself. A dataset
    directory without `_SUCCESS` was never finished and gives nothing."""
    if not out.exists() or (out.is_dir() and not (out / SUCCESS).is_file()):
        return {}
    pq = require("pyarrow.parquet")
    try:
        table = pq.read_table(out, schema=schema())
    except Exception as e:  # pyarrow's own errors: not a Parquet output of instag
        raise InstagError(f"--out {out}: cannot read it as a previous Parquet output ({e})",
                          "remove it, or write elsewhere") from None
    final = {s.value for s in Status if s is Status.OK or s.permanent}
    by_path: dict[str, list[dict]] = {}
    for batch in table.to_batches():
        for row in batch.to_pylist():
            if row["model_id"] == model_id and row["status"] in final:
                by_path.setdefault(row["path"], []).append(row)
    return by_path
