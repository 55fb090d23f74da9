"""instag's outputs read back, whatever their format: one document per file, streamed, for
`write-tags` and `plot` (memory flat in the number of files).

A document has the JSON output's shape (`forms.file_document`): path, status, reason,
duration_s, size, mtime_ns, model_id, file_tags and, for a tagged file, instruments, segments
and bags (start_s, end_s, probabilities, present, segments). Only JSON and JSONL written with
`--timeline` carry the per-instance timeline; `plot` recomputes it for the others.
CSV rows are regrouped per file (a file's rows are consecutive: one per bag and instrument),
their formula-safe cells read back as written; Parquet is read a row batch at a time.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from itertools import groupby
from pathlib import Path

from instag.common.errors import InstagError
from instag.common.extras import require
from instag.outputs.forms import csv_value
from instag.outputs.parquet import METADATA_KEY, read_batches
from instag.tagging.results import audio_path
from instag.tagging.segments import merge_segments

PARQUET_BATCH_ROWS = 10_000

NOT_AN_OUTPUT = "pass a .csv, .json, .jsonl or .parquet that `instag tag --out` wrote"


def read_documents(tags_file: Path) -> Iterator[dict]:
    """The per-file documents of any output `instag tag` writes, in its order."""
    tags_file = Path(tags_file)
    suffix = tags_file.suffix.lower()
    try:
        if suffix == ".csv":
            yield from _csv_documents(tags_file)
        elif suffix == ".parquet" or tags_file.is_dir():
            yield from _parquet_documents(tags_file)
        elif suffix == ".jsonl":
            yield from _jsonl_documents(tags_file)
        else:
            yield from _json_documents(tags_file)
    except InstagError:
        raise
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as e:
        raise InstagError(f"{tags_file}: not an output of `instag tag` ({str(e)[:200]})",
                          NOT_AN_OUTPUT) from None


def read_run_info(tags_file: Path) -> dict:
    """What an output says of its run (the model, the bag setting, the thresholds applied):
    JSON's header, Parquet's schema metadata; CSV and JSONL say nothing of it."""
    tags_file = Path(tags_file)
    try:
        if tags_file.suffix.lower() == ".parquet" or tags_file.is_dir():
            ds = require("pyarrow.dataset")
            meta = ds.dataset(tags_file, format="parquet").schema.metadata or {}
            return json.loads(meta.get(METADATA_KEY.encode(), b"{}"))
        if tags_file.suffix.lower() == ".json":
            head = next(_lines(tags_file), "")
            if head.rstrip().endswith('"files": ['):
                return {k: v for k, v in json.loads(head + "]}").items() if k != "files"}
    except (OSError, ValueError) as e:
        raise InstagError(f"{tags_file}: not an output of `instag tag` ({str(e)[:200]})",
                          NOT_AN_OUTPUT) from None
    return {}


def _lines(path: Path) -> Iterator[str]:
    """Lines split on "\\n" only: names may hold U+2028, U+0085 and the other characters that
    str.splitlines() takes for line ends (JSON writes them raw)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rest = ""
        while chunk := f.read(1 << 20):
            *lines, rest = (rest + chunk).split("\n")
            yield from lines
        if rest:
            yield rest


def _jsonl_documents(path: Path) -> Iterator[dict]:
    for line in _lines(path):
        if line.strip():
            yield json.loads(line)


def _json_documents(path: Path) -> Iterator[dict]:
    """The JSON output: a header line ending in `"files": [`, one document a line, `]}`. A
    file in another layout (an older instag's single line) is read whole."""
    lines = _lines(path)
    head = next(lines, "")
    if not head.rstrip().endswith('"files": ['):
        yield from json.loads(head + "\n".join(lines))["files"]
        return
    json.loads(head + "]}")  # the header is JSON
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line == "]}":
            return
        yield json.loads(line.removesuffix(","))
    raise ValueError("the file ends before its closing `]}` (an unfinished copy?)")


def _csv_documents(path: Path) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.DictReader(f)
        if not {"path", "status", "instrument"} <= set(rows.fieldnames or ()):
            raise InstagError(f"{path}: not a CSV from `instag tag` (no path, status and "
                              "instrument columns)", NOT_AN_OUTPUT)
        for _, group in groupby(rows, key=lambda row: row["path"]):
            yield _document(list(group), _csv_bag, lambda v: csv_value(v) if v else v,
                            number=lambda v: float(v) if v else None)


def _csv_bag(rows: list[dict]) -> dict:
    return {"start_s": float(rows[0]["bag_start_s"]), "end_s": float(rows[0]["bag_end_s"]),
            "probabilities": {r["instrument"]: float(r["probability"]) for r in rows},
            "present": [r["instrument"] for r in rows if r["present"] == "1"],
            "segments": {r["instrument"]: _segments(r["segments"]) for r in rows
                         if r["segments"]}}


def _segments(cell: str) -> list[list[float]]:
    """'1.92-5.76;8.64-9.60' -> [[1.92, 5.76], [8.64, 9.6]]."""
    return [[float(x) for x in part.split("-", 1)] for part in cell.split(";") if part]


def _parquet_documents(path: Path) -> Iterator[dict]:
    def rows() -> Iterator[dict]:
        try:
            for batch in read_batches(path, batch_size=PARQUET_BATCH_ROWS):
                yield from batch.to_pylist()
        except Exception as e:  # pyarrow's own errors: not Parquet
            raise InstagError(f"{path}: cannot read it as Parquet ({str(e)[:200]})",
                              NOT_AN_OUTPUT) from None

    for _, group in groupby(rows(), key=lambda row: row["path"]):
        yield _document(list(group), _parquet_bag, lambda v: v, number=lambda v: v)


def _parquet_bag(rows: list[dict]) -> dict:
    (row,) = rows
    segments: dict[str, list[list[float]]] = {}
    for s in row["segments"] or ():
        segments.setdefault(s["instrument"], []).append([s["start_s"], s["end_s"]])
    return {"start_s": row["bag_start_s"], "end_s": row["bag_end_s"],
            "probabilities": dict(row["probabilities"]), "present": list(row["present"]),
            "segments": segments}


def _document(rows: list[dict], bag_of, text, number) -> dict:
    """One file's document from its rows (CSV: one per bag and instrument; Parquet: one per
    bag); a failed file has one row and no bags."""
    first = rows[0]
    doc = {"path": text(first["path"]), "status": first["status"],
           "reason": text(first["reason"] or ""), "duration_s": number(first["duration_s"]),
           "file_tags": text(first.get("file_tags") or ""),
           "size": _int(first["size"]), "mtime_ns": _int(first["mtime_ns"]),
           "model_id": first["model_id"]}
    if doc["status"] != "ok":
        return doc
    bags = [bag_of(list(g)) for _, g in groupby(rows, key=lambda r: r["bag_start_s"])]
    present = {c for b in bags for c in b["present"]}
    doc["instruments"] = [c for c in bags[0]["probabilities"] if c in present] if bags else []
    doc["segments"] = {c: [list(s) for s in merge_segments(
        [tuple(s) for b in bags for s in b["segments"].get(c, [])])] for c in doc["instruments"]}
    doc["bags"] = bags
    return doc


def _int(value) -> int | None:
    return None if value in (None, "") else int(value)


def find_document(docs: Iterable[dict], file: str | Path) -> dict | None:
    """The document of `file`, however it is spelled (relative, `./`, absolute, through a
    symlink): the same file on disk, or else the same absolute path."""

    def identity(p: Path) -> tuple:
        try:
            st = os.stat(p)
            return (st.st_dev, st.st_ino)
        except OSError:
            return (os.path.abspath(p),)

    wanted = identity(audio_path(str(file)))
    for doc in docs:
        if identity(audio_path(doc["path"])) == wanted:
            return doc
    return None
