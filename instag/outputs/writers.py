"""The output files: CSV, JSON, JSONL, Parquet, streamed in walk order into a temp file beside the
output that replaces it only when the run completes: a killed run leaves the previous output
untouched, and memory does not grow with the size of the library.

CSV: one row per file, bag and instrument, with a header; a failed file is one row with its
status and reason. JSON: a header (the run: model, thresholds) and a ``files`` list, one
document a line; JSONL: one file per line. Parquet (``parquet``): one row per file and bag, as a
file or a dataset directory, the run in the schema's metadata. ``--summary``: a CSV of one row
per file for a person to read.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from instag.common import VERSION
from instag.common.atomic import UNCHECKED, Stamp, atomic_write
from instag.common.enums import TextEnum
from instag.common.errors import InstagError, UsageError
from instag.common.guard.targets import Recognise, Refused, Target, claim_file, head
from instag.outputs.forms import CSV_FIELDS, csv_cell, csv_rows, file_document
from instag.outputs.parquet import is_instag_dataset, is_instag_parquet, parquet_writer
from instag.tagging.results import FileResult


class Format(TextEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    PARQUET = "parquet"


STDOUT = Path("-")
MIN_FREE_BYTES = 64 << 10  # an output location with less free space than this is refused


def format_for(path: Path, fmt: Format | str | None, option: str = "--out") -> Format:
    """--format, else from the extension (.csv, .json, .jsonl, .parquet); CSV for standard
    output. `option`: the output as the caller named it (`--out`, `TagsFile`)."""
    if fmt and Format(fmt) is Format.PARQUET and path == STDOUT:
        raise InstagError(f"{option} -: Parquet cannot be streamed to standard output",
                          "name a .parquet file or a dataset folder")
    if fmt:
        return Format(fmt)
    if path == STDOUT:
        return Format.CSV
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder", f"name a file, e.g. "
                          f"{path / 'tags.csv'} (or ask for the parquet format for a dataset "
                          "folder)")
    ext = path.suffix.lower().lstrip(".")
    if ext not in Format._value2member_map_:
        raise UsageError(f"{option} {path}: unknown output extension {path.suffix!r}",
                          "name it .csv, .json, .jsonl or .parquet, or give the format")
    return Format(ext)


def _csv_with(*columns: str) -> Recognise:
    """A CSV whose header names `columns` (an older instag's column layout included)."""
    def recognise(path: Path) -> bool:
        first = head(path).removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0]
        return set(columns) <= {c.strip().strip(b'"').decode("utf-8", "replace")
                                for c in first.split(b",")}
    return recognise


def _jsonl_output(path: Path) -> bool:
    """A JSONL output: its first line is a file's document."""
    line = head(path, 1 << 20).split(b"\n", 1)[0]
    doc = json.loads(line)
    return isinstance(doc, dict) and {"path", "status"} <= doc.keys()


RECOGNISE: dict[Format, Recognise] = {
    Format.CSV: _csv_with("path", "status", "instrument"),
    Format.JSON: lambda path: head(path, 64).startswith(b'{"instag_version"'),
    Format.JSONL: _jsonl_output,
    Format.PARQUET: is_instag_parquet,
}
SUMMARY = _csv_with(*("path", "status", "instruments", "duration_s", "reason"))


def check_output(out: Path, inputs: list[Path], protected: list[Path],
                 extensions: tuple[str, ...], fmt: Format = Format.CSV,
                 option: str = "--out", ours: Recognise | None = None) -> Target:
    """Claim `out` before any work is done (`guard.targets`: new, empty, or an output instag
    made in this format), refusing one that would destroy an input or instag's own files
    (`protected`: the cache and its lock), or that cannot be written: a folder (unless a
    Parquet dataset is asked for: then a folder that holds anything but one), a read-only
    place, a full disk. Standard output is always fine."""
    if out == STDOUT:
        return Target(out, None)
    target = out.resolve()
    if fmt is Format.PARQUET and out.is_dir() and not out.is_symlink():
        if not is_instag_dataset(out):
            raise Refused(f"{option} {out}: is a folder that is not a Parquet dataset of "
                          "instag", "name a new or empty folder")
        claimed = Target(out, Stamp.of(out))
    else:
        claimed = claim_file(out, option, ours or RECOGNISE[fmt],
                             [*inputs, *protected])
    if target in {p.resolve() for p in protected}:
        raise InstagError(f"{option} {out}: is instag's cache or another output",
                          "write it elsewhere")
    for root in inputs:
        root = root.resolve()
        if root.is_dir() and (target == root or root.is_relative_to(target)):
            raise InstagError(f"{option} {out}: holds the library {root}",
                              "write the output elsewhere")
        if (root.is_dir() and target.is_relative_to(root)
                and target.suffix.lower() in extensions):
            raise InstagError(f"{option} {out}: has an audio extension inside the library "
                              f"{root}", "name it .csv, .json or .jsonl")
    check_writable(target.parent, f"{option} {out}")
    return claimed


def check_writable(folder: Path, what: str) -> None:
    """The nearest existing folder of `folder` accepts a new file and has some room."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with atomic_write(existing / "probe", "w"):
            raise _Probed
    except _Probed:
        pass
    except OSError as e:
        raise InstagError(f"{what}: cannot write in {existing} ({e.strerror or e})",
                          "choose a writable place") from None
    if shutil.disk_usage(existing).free < MIN_FREE_BYTES:
        raise InstagError(f"{what}: {existing} is full", "free some space or write elsewhere")


class _Probed(Exception):
    """A probe write that worked: its temp file is removed, nothing replaced."""


@contextmanager
def result_writer(path: Path, fmt: Format, run_info: Callable[[], dict] = dict,
                  timeline: bool = False, replaces=UNCHECKED
                  ) -> Iterator[Callable[[FileResult], None]]:
    """Yield a function that appends one FileResult to `path`'s temp file; the file replaces
    `path` when the block ends without an exception, and is discarded otherwise. `-` is
    standard output, written as results come. `run_info()`: what JSON's header and Parquet's
    metadata say of the run (the model, the thresholds applied), asked for once the first
    result has come (the run has loaded its models by then). `timeline`: JSON and JSONL documents
    carry each bag's per-instance timeline (`forms.file_document`). `replaces`: what the
    output must still be just before its rename (`guard.targets.Target.replaces`)."""
    if fmt is Format.PARQUET:
        with parquet_writer(path, run_info, replaces) as write:
            yield write
        return
    newline = "" if fmt is Format.CSV else None
    with (_stdout(newline) if path == STDOUT else
          atomic_write(path, "w", replaces, keep_same=True, newline=newline,
                       encoding="utf-8")) as f:
        if fmt is Format.CSV:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)  # RFC 4180 quoting, \r\n endings
            w.writeheader()
            yield lambda r: w.writerows(csv_rows(r))
        elif fmt is Format.JSONL:
            yield lambda r: f.write(json.dumps(file_document(r, timeline), ensure_ascii=False)
                                      + "\n")
        else:
            sep: list[str] = []

            def head() -> None:  # one document a line, so that readers stream it (`readback`)
                info = {"instag_version": VERSION, **run_info(), "files": []}
                f.write(json.dumps(info, ensure_ascii=False)[: -len("]}")] + "\n")
                sep.append("")

            def write(r: FileResult) -> None:
                if not sep:
                    head()
                f.write(sep[0] + json.dumps(file_document(r, timeline), ensure_ascii=False))
                sep[0] = ",\n"

            yield write
            if not sep:
                head()
            f.write("\n]}\n")


SUMMARY_FIELDS = ("path", "status", "instruments", "probabilities", "duration_s", "reason")


@contextmanager
def summary_writer(path: Path, replaces=UNCHECKED) -> Iterator[Callable[[FileResult], None]]:
    """`--summary`: one CSV row per file, for a person: what is in it ("guitar; voice") and how
    sure ("guitar 0.91; voice 0.77": each one's highest bag probability), or why it failed.
    Atomic like the main output, and replaced together with it."""
    with atomic_write(path, "w", replaces, keep_same=True, newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        yield lambda r: w.writerow(_summary_row(r))


def _summary_row(r: FileResult) -> dict:
    best, present = r.best(), r.instruments()
    return {"path": csv_cell(r.display_path), "status": r.status,
            "instruments": "; ".join(present),
            "probabilities": "; ".join(f"{c} {best[c]:.2f}" for c in present),
            "duration_s": "" if r.duration is None else f"{r.duration:.1f}",
            "reason": csv_cell(r.reason)}


@contextmanager
def _stdout(newline: str | None) -> Iterator[IO[str]]:
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline=newline,
                           write_through=True)
    try:
        yield out
    finally:
        out.flush()
        out.detach()  # sys.stdout stays open
