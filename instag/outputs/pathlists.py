"""The files a list names, for catalogues too large to walk from one machine: a text file (or
standard input, `--paths-from -`), a Parquet file's or an instag CSV's `path` column. Lists are
inputs under `common.guard.inputs`: regular files of bounded size (a CSV, which may be an
output of `instag tag`, read as a stream of bounded lines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.inputs import (
    DOCUMENT,
    PATH_LIST,
    byte_lines,
    open_input,
    regular_file,
    stdin_lines,
    text_lines,
)

OPTION = "--paths-from"


def read_path_list(source: Path) -> list[Path]:
    """The files a list names, for catalogues too large to walk from one machine: a Parquet
    file's `path` column (strings or bytes), a CSV's `path` column (an instag CSV: its
    formula-safe cells read back as the names they are), else a text file (`-`: standard
    input) with one path a line (bytes kept as they are). Listed files may vanish: each is
    then its own `missing` result."""
    if str(source) == "-":
        return _paths(stdin_lines(sys.stdin.buffer, OPTION))
    if source.suffix.lower() == ".csv":
        return _csv_paths(source)
    if source.suffix.lower() == ".parquet":
        pq = require("pyarrow.parquet")
        regular_file(source, OPTION, PATH_LIST)
        try:
            column = pq.read_table(source, columns=["path"]).column("path").to_pylist()
        except Exception as e:  # pyarrow's own errors: not a Parquet file, no `path` column
            raise InstagError(f"{OPTION} {source}: cannot read a `path` column ({e})",
                              "give a Parquet file with a `path` column, or a text file "
                              "with one path a line") from None
        return [Path(os.fsdecode(p)) for p in column if p]
    try:
        with open_input(source, OPTION, PATH_LIST) as f:
            return _paths(byte_lines(f, f"{OPTION} {source}", PATH_LIST))
    except OSError as e:
        raise InstagError(f"{OPTION} {source}: {e.strerror or e}",
                          "give a readable list of paths") from None


def _paths(lines) -> list[Path]:
    return [Path(os.fsdecode(line.rstrip(b"\r"))) for line in lines if line.strip()]


def _csv_paths(source: Path) -> list[Path]:
    import csv

    from instag.outputs.forms import csv_value
    from instag.tagging.results import audio_path

    try:
        rows = csv.DictReader(text_lines(source, OPTION, DOCUMENT, keepends=True))
        if "path" not in (rows.fieldnames or ()):
            raise InstagError(f"{OPTION} {source}: no `path` column",
                              "give a CSV with a `path` column (as `instag tag` writes)")
        paths = dict.fromkeys(csv_value(row["path"]) for row in rows if row["path"])
    except (OSError, csv.Error) as e:
        raise InstagError(f"{OPTION} {source}: cannot read it ({e})",
                          "give a readable CSV with a `path` column") from None
    return [audio_path(p) for p in paths]  # one per file, though its CSV has a row per class
