"""instag's outputs read back, whatever their format: one document per file, streamed, for
`write-tags`, `plot`, `export` and `browse` (memory flat in the number of files).

A document has the JSON output's shape (`forms.file_document`), and every one is checked
against `documents`' schema as it is read: a malformed record is one InstagError naming the
document, the record (a line; a Parquet row) and the field. `Documents` reads an output once
to check it in full before the first document is handed out, so that a command stops before
it touches a file. Only JSON and JSONL written with `--timeline` carry the per-instance
timeline; `plot` recomputes it for the others. CSV rows are regrouped per file (a file's rows
are consecutive: one per bag and instrument), their formula-safe cells read back as written;
Parquet is read a row batch at a time. Outputs are inputs under `common.guard.inputs`: regular
files, read as a stream of lines of bounded length.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from pathlib import Path

from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.inputs import DOCUMENT, text_lines
from instag.common.status import Status
from instag.outputs.documents import FIX, Malformed, check_bags, check_document, malformed
from instag.outputs.forms import CSV_FIELDS, csv_value
from instag.outputs.parquet import METADATA_KEY, parquet_bag, read_batches, schema
from instag.outputs.songtags import SONG_FIELDS, song_of
from instag.tagging.results import audio_path
from instag.tagging.segments import SegmentRule

PARQUET_BATCH_ROWS = 10_000
OPTION = "TAGS_FILE"  # the commands' argument that names an output
NOT_AN_OUTPUT = "pass a .csv, .json, .jsonl or .parquet that `instag tag --out` wrote"
OPTIONAL = frozenset({"file_tags", *SONG_FIELDS})  # columns older outputs lack
CSV_NEEDED = tuple(f for f in CSV_FIELDS if f not in OPTIONAL)
HEADER_END = '"files": ['


def read_documents(tags_file: Path, option: str = OPTION) -> Iterator[dict]:
    """The per-file documents of any output `instag tag` writes, in its order, each checked
    against the schema as it comes."""
    tags_file = Path(tags_file)
    suffix = tags_file.suffix.lower()
    try:
        if suffix == ".csv":
            yield from _csv_documents(tags_file, option)
        elif suffix == ".parquet" or tags_file.is_dir():
            yield from _parquet_documents(tags_file, option)
        elif suffix == ".jsonl":
            yield from _jsonl_documents(tags_file, option)
        else:
            yield from _json_documents(tags_file, option)
    except InstagError:
        raise
    except (OSError, ValueError, csv.Error) as e:
        raise InstagError(f"{tags_file}: not an output of `instag tag` ({str(e)[:200]})",
                          NOT_AN_OUTPUT) from None


class Documents:
    """An output's documents, checked in full before the first is handed out: one pass reads
    and checks every record, each iteration then streams them again (memory flat; the output
    is read twice). An output that changes between the passes is refused."""

    def __init__(self, tags_file: Path, option: str = OPTION) -> None:
        self.path, self.option = Path(tags_file), option
        self.stamp = _stamp(self.path)
        self.count = sum(1 for _ in read_documents(self.path, option))

    def __iter__(self) -> Iterator[dict]:
        if _stamp(self.path) != self.stamp:
            raise InstagError(f"{self.option} {self.path}: changed while it was read",
                              "run again once whatever writes it is done")
        return read_documents(self.path, self.option)


def checked_documents(tags_file: Path, option: str = OPTION) -> Documents:
    """`Documents`: an output checked in full, then streamed."""
    return Documents(tags_file, option)


def _stamp(path: Path) -> tuple:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    try:
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns)
                     for st in (os.stat(f) for f in files))
    except OSError:
        return ()


def read_run_info(tags_file: Path) -> dict:
    """What an output says of its run (the model, the bag setting, the thresholds applied):
    JSON's header, Parquet's schema metadata; CSV and JSONL say nothing of it."""
    tags_file = Path(tags_file)
    info: object = {}
    try:
        if tags_file.suffix.lower() == ".parquet" or tags_file.is_dir():
            ds = require("pyarrow.dataset")
            meta = ds.dataset(tags_file, format="parquet").schema.metadata or {}
            info = json.loads(meta.get(METADATA_KEY.encode(), b"{}"))
        elif tags_file.suffix.lower() == ".json":
            head = next(text_lines(tags_file, OPTION, DOCUMENT), "")
            if head.rstrip().endswith(HEADER_END):
                info = _header(head, f"{tags_file}, line 1")
    except (OSError, ValueError) as e:  # pyarrow's errors are of these kinds too
        raise InstagError(f"{tags_file}: not an output of `instag tag` ({str(e)[:200]})",
                          NOT_AN_OUTPUT) from None
    if not isinstance(info, dict):
        raise InstagError(f"{tags_file}: field {METADATA_KEY} (the run): not an object", FIX)
    return {k: v for k, v in info.items() if k != "files"}


def _json(text: str, where: str, first: bool = False) -> object:
    """A record's JSON; the first of a file that is not JSON is a file that is not an output
    (its fix says what to pass), a later one a damaged record."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InstagError(f"{where}: not JSON ({str(e)[:200]})",
                          NOT_AN_OUTPUT if first else FIX) from None


def _header(head: str, where: str) -> dict:
    header = _json(head + "]}", where, first=True)
    if not isinstance(header, dict):
        raise InstagError(f"{where}: field (header): not an object", FIX)
    return header


def _jsonl_documents(path: Path, option: str) -> Iterator[dict]:
    first = True
    for n, line in enumerate(text_lines(path, option, DOCUMENT), start=1):
        if line.strip():
            where = f"{path}, line {n}"
            yield check_document(_json(line, where, first), where)
            first = False


def _json_documents(path: Path, option: str) -> Iterator[dict]:
    """The JSON output: a header line ending in `"files": [`, one document a line, `]}`. A
    file in another layout (an older instag's) is one record, read whole (up to a record's
    cap)."""
    lines = text_lines(path, option, DOCUMENT)
    head = next(lines, "")
    if not head.rstrip().endswith(HEADER_END):
        yield from _whole_json(path, head, lines)
        return
    _header(head, f"{path}, line 1")
    for n, line in enumerate(lines, start=2):
        line = line.strip()
        if not line:
            continue
        if line == "]}":
            return
        where = f"{path}, line {n}"
        yield check_document(_json(line.removesuffix(","), where), where)
    raise ValueError("the file ends before its closing `]}` (an unfinished copy?)")


def _whole_json(path: Path, head: str, lines: Iterator[str]) -> Iterator[dict]:
    parts, size = [head], len(head)
    for line in lines:
        size += len(line) + 1
        if size > DOCUMENT.max_line:
            raise InstagError(f"{path}: a JSON document in one piece of over "
                              f"{DOCUMENT.max_line >> 20} MiB", "tag again: instag writes one "
                              "document a line")
        parts.append(line)
    doc = _json("\n".join(parts), str(path), first=True)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise InstagError(f"{path}: field files: not a JSON object with a list of files",
                          NOT_AN_OUTPUT)
    for i, record in enumerate(doc["files"]):
        yield check_document(record, f"{path}, files[{i}]")


def _csv_documents(path: Path, option: str) -> Iterator[dict]:
    rows = csv.DictReader(text_lines(path, option, DOCUMENT, keepends=True))
    missing = [f for f in CSV_NEEDED if f not in (rows.fieldnames or ())]
    if missing and {"path", "status", "instruments"} <= set(rows.fieldnames or ()):
        raise InstagError(f"{path}: a --summary file, for people: it has no bags or "
                          "probabilities", "pass the run's tags file (its --out)")
    if missing:
        raise InstagError(f"{path}: field {missing[0]}: no such column (a CSV from `instag "
                          "tag` has the columns " + ",".join(CSV_FIELDS) + ")", NOT_AN_OUTPUT)

    def converted() -> Iterator[tuple[str, dict]]:
        for row in rows:
            where = f"{path}, line {rows.line_num}"
            try:
                yield where, _csv_row(row)
            except Malformed as e:
                raise malformed(where, e) from None

    for _, group in groupby(converted(), key=lambda item: item[1]["path"]):
        where, *_ = listed = list(group)
        yield check_document(_document([row for _, row in listed], _csv_bag, where[0]),
                             where[0])


def _csv_row(row: dict) -> dict:
    """A CSV row's cells as values (numbers parsed, formula-safe text undone)."""
    for field in CSV_NEEDED:
        if row.get(field) is None:
            raise Malformed(field, "missing (the row is short)")
    out = {"path": csv_value(row["path"]), "status": row["status"],
           "reason": csv_value(row["reason"]), "duration_s": _cell(row, "duration_s", float),
           "file_tags": csv_value(row.get("file_tags") or ""), "size": _cell(row, "size", int),
           "mtime_ns": _cell(row, "mtime_ns", int), "model_id": row["model_id"],
           **{f: csv_value(row.get(f) or "") for f in SONG_FIELDS},
           "bag": row["status"] == Status.OK.value and bool(row["instrument"])}
    if out["bag"]:
        if row["present"] not in ("0", "1"):
            raise Malformed("present", f"{row['present']!r} is not 1 or 0")
        out.update(bag_start_s=_cell(row, "bag_start_s", float),
                   bag_end_s=_cell(row, "bag_end_s", float), instrument=row["instrument"],
                   probability=_cell(row, "probability", float), present=row["present"] == "1",
                   segments=_segments(row["segments"]))
    return out


def _cell(row: dict, field: str, kind: Callable[[str], object]):
    value = row[field]
    try:
        return None if value == "" else kind(value)
    except ValueError:
        raise Malformed(field, f"{value[:40]!r} is not a number") from None


def _csv_bag(rows: list[dict]) -> dict:
    return {"start_s": rows[0]["bag_start_s"], "end_s": rows[0]["bag_end_s"],
            "probabilities": {r["instrument"]: r["probability"] for r in rows},
            "present": [r["instrument"] for r in rows if r["present"]],
            "segments": {r["instrument"]: r["segments"] for r in rows if r["segments"]}}


def _segments(cell: str) -> list[list[float]]:
    """'1.92-5.76;8.64-9.60' -> [[1.92, 5.76], [8.64, 9.6]]."""
    try:
        return [[float(x) for x in part.split("-", 1)] for part in cell.split(";") if part]
    except ValueError:
        raise Malformed("segments", f"{cell[:40]!r} is not start-end;start-end") from None


def _parquet_documents(path: Path, option: str) -> Iterator[dict]:
    expected = {f.name: f.type for f in schema()}

    def rows() -> Iterator[tuple[str, dict]]:
        n, checked = 0, None
        for batch in read_batches(path, batch_size=PARQUET_BATCH_ROWS, option=option):
            if batch.schema != checked:
                _check_columns(path, batch.schema, expected)
                checked = batch.schema
            for row in batch.to_pylist():
                n += 1
                try:
                    yield f"{path}, row {n}", _parquet_row(row)
                except Malformed as e:
                    raise malformed(f"{path}, row {n}", e) from None

    try:
        for _, group in groupby(rows(), key=lambda item: item[1]["path"]):
            where, *_ = listed = list(group)
            yield check_document(_document([row for _, row in listed], _parquet_bag,
                                           where[0]), where[0])
    except InstagError:
        raise
    except Exception as e:  # pyarrow's own errors: not Parquet
        raise InstagError(f"{path}: cannot read it as Parquet ({str(e)[:200]})",
                          NOT_AN_OUTPUT) from None


def _check_columns(path: Path, got, expected: dict) -> None:
    for name, kind in expected.items():
        if name not in got.names:
            if name in OPTIONAL:
                continue
            raise InstagError(f"{path}: field {name}: no such column", NOT_AN_OUTPUT)
        if got.field(name).type != kind:
            raise InstagError(f"{path}: field {name}: a column of {got.field(name).type}, "
                              f"not {kind}", NOT_AN_OUTPUT)


def _parquet_row(row: dict) -> dict:
    """A Parquet row as values, its bag (if it has one) as a document's bag."""
    bag = row["status"] == Status.OK.value and (row["bag_start_s"] is not None or
                                                row["probabilities"] is not None)
    return {**row, "reason": row["reason"] or "", "file_tags": row.get("file_tags") or "",
            "bag": bag, **({"as_bag": parquet_bag(row)} if bag else {})}


def _parquet_bag(rows: list[dict]) -> dict:
    (row,) = rows
    return row["as_bag"]


def _document(rows: list[dict], bag_of: Callable[[list[dict]], dict], where: str) -> dict:
    """One file's document from its rows (CSV: one per bag and instrument; Parquet: one per
    bag); a failed file has one row and no bags. Its bags are checked before the file's
    segments are merged from theirs."""
    first = rows[0]
    doc = {k: first[k] for k in ("path", "status", "reason", "duration_s", "file_tags",
                                 "size", "mtime_ns", "model_id")}
    doc.update(song_of(first))
    if doc["status"] != Status.OK.value:
        return doc
    bag_rows = [r for r in rows if r["bag"]]
    bags = [bag_of(list(g)) for _, g in groupby(bag_rows, key=lambda r: r["bag_start_s"])]
    try:
        known = check_bags(bags)
    except Malformed as e:
        raise malformed(where, e) from None
    present = {c for b in bags for c in b["present"]}
    doc["instruments"] = [c for c in known if c in present]
    doc["segments"] = file_segments(bags, doc["instruments"], SegmentRule())
    doc["bags"] = bags
    return doc


def file_segments(bags: list[dict], instruments: list[str], rule: SegmentRule) -> dict:
    """A file's segments per instrument: its bags' (the attention rule's) under `rule`."""
    return {c: [list(s) for s in rule.apply(tuple(s) for b in bags
                                            for s in b["segments"].get(c, []))]
            for c in instruments}


def resegmented(doc: dict, rule: SegmentRule | None) -> dict:
    """A document with its file's segments made again from its bags' under `rule` (None: as
    it is): what `export`, `browse` and `plot` show when given a rule, from any output format,
    whatever rule wrote it."""
    if rule is None or doc.get("status") != Status.OK.value:
        return doc
    return {**doc, "segments": file_segments(doc["bags"], doc["instruments"], rule)}


def find_document(docs: Iterable[dict], file: str | Path) -> dict | None:
    """The document of `file`, however it is spelled (relative, `./`, absolute, through a
    symlink): the same file on disk, or else the same absolute path."""
    names = names_file(file)
    return next((doc for doc in docs if names(doc)), None)


def names_file(file: str | Path) -> Callable[[dict], bool]:
    """Whether a document is that of `file` (`find_document`'s rule)."""

    def identity(p: Path) -> tuple:
        try:
            st = os.stat(p)
            return (st.st_dev, st.st_ino)
        except OSError:
            return (os.path.abspath(p),)

    given = audio_path(str(file))
    wanted = identity(given)
    # only a document of the same name (as given, or where the links lead) is looked at on disk
    names = {given.name, Path(os.path.realpath(given)).name}
    return lambda doc: ((path := audio_path(doc["path"])).name in names
                        and identity(path) == wanted)
