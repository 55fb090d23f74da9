"""The output files: CSV, JSON, JSONL, streamed in walk order into a temp file beside the output
that replaces it only when the run completes: a killed run leaves the previous output untouched,
and memory does not grow with the size of the library.

CSV: one row per file, bag and instrument, with a header; a failed file is one row with its
status and reason. JSON: one document with a ``files`` list; JSONL: one file per line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from instag.common import VERSION
from instag.common.atomic import atomic_write
from instag.tagging.results import CSV_FIELDS, FileResult, csv_rows, file_document


class Format(str, Enum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"

    def __str__(self) -> str:
        return self.value


def format_for(path: Path, fmt: Format | str | None) -> Format:
    """--format, else from the extension (.csv, .json, .jsonl), else CSV."""
    if fmt:
        return Format(fmt)
    ext = path.suffix.lower().lstrip(".")
    return Format(ext) if ext in Format._value2member_map_ else Format.CSV


@contextmanager
def result_writer(path: Path, fmt: Format,
                  run_info: dict) -> Iterator[Callable[[FileResult], None]]:
    """Yield a function that appends one FileResult to `path`'s temp file; the file replaces
    `path` when the block ends without an exception, and is discarded otherwise."""
    with atomic_write(path, "w", newline="" if fmt is Format.CSV else None, encoding="utf-8") as f:
        if fmt is Format.CSV:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)  # RFC 4180 quoting, \r\n endings
            w.writeheader()
            yield lambda r: w.writerows(csv_rows(r))
        elif fmt is Format.JSONL:
            yield lambda r: f.write(json.dumps(file_document(r), ensure_ascii=False) + "\n")
        else:
            head = json.dumps({"instag_version": VERSION, **run_info, "files": []},
                              ensure_ascii=False)
            f.write(head[: -len("]}")])
            sep = [""]

            def write(r: FileResult) -> None:
                f.write(sep[0] + json.dumps(file_document(r), ensure_ascii=False))
                sep[0] = ","

            yield write
            f.write("]}")
