"""Weak labels as a user writes them: "this song has a kazoo somewhere" (1), "this one has
none" (0), and nothing said (missing: neither positive nor negative, as the paper's partial
loss treats OpenMIC's unannotated pairs).

Three spellings, one result (`Labels`):
- a CSV of `path,instrument,present` rows (paths relative to the CSV's folder, or absolute);
- folders: `DIR/<instrument>/...` positives, `DIR/not-<instrument>/...` negatives;
- rows from elsewhere (the beets plugin's queries) through `labels_from_rows`.

Every bad row is reported, one line each, before anything is embedded.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.common.guard.inputs import LABELS, regular_file, text_lines

NEGATIVE_PREFIX = "not-"  # DIR/not-<instrument>/: songs without the instrument
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac",
                            ".aif", ".aiff", ".wma", ".ape", ".wv", ".mp4"})
_NAME = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class Labels:
    """Files (absolute paths, each once) by instruments: 1/0 where said, `observed` False where
    nothing was said about that pair."""

    files: tuple[Path, ...]
    instruments: tuple[str, ...]
    values: np.ndarray  # float32 [N, C]
    observed: np.ndarray  # bool [N, C]
    source: str  # the CSV or folder they were read from
    sha256: str  # of the CSV, or of the rows as read (folders, queries)

    def balance(self) -> dict[str, dict[str, int]]:
        """Per instrument: files labelled with it, without it, and not labelled for it."""
        pos = ((self.values > 0.5) & self.observed).sum(axis=0)
        neg = ((self.values < 0.5) & self.observed).sum(axis=0)
        return {name: {"positive": int(p), "negative": int(n),
                       "missing": len(self.files) - int(p) - int(n)}
                for name, p, n in zip(self.instruments, pos, neg, strict=True)}

    def select(self, keep: np.ndarray) -> Labels:
        """The labels of the files where `keep` is true (files that embedded)."""
        return Labels(tuple(f for f, k in zip(self.files, keep, strict=True) if k),
                      self.instruments, self.values[keep], self.observed[keep], self.source,
                      self.sha256)


def instrument_name(text: str) -> str | None:
    """A label as a field name: `Steel Drums` -> `steel_drums` (it becomes a beets field and an
    ONNX class); None when nothing usable is left."""
    name = re.sub(r"[\s\-]+", "_", text.strip().lower())
    return name if _NAME.fullmatch(name) else None


def labels_from_rows(rows: Iterable[tuple[str, Path, str, str] | str], source: str,
                     sha256: str | None = None) -> Labels:
    """`(where, path, instrument, present)` rows into Labels (`where` names the row in errors;
    a row given as a string is already known bad: its line). Raises one InstagError listing
    every bad row."""
    said: dict[tuple[Path, str], tuple[float, str]] = {}
    files: dict[Path, None] = {}
    bad: list[str] = []
    digest = hashlib.sha256()
    for row in rows:
        if isinstance(row, str):
            bad.append(row)
            continue
        where, path, instrument, present = row
        name = instrument_name(instrument)
        if name is None:
            bad.append(f"{where}: instrument {instrument!r} is not a name (letters, digits, "
                       "spaces, - or _)")
            continue
        if present.strip() not in ("0", "1"):
            bad.append(f"{where}: present must be 1 or 0, not {present!r}")
            continue
        value = float(present.strip())
        before = said.get((path, name))
        if before is not None and before[0] != value:
            bad.append(f"{where}: contradicts {before[1]} ({name} "
                       f"{'present' if before[0] else 'absent'} there)")
            continue
        said[(path, name)] = (value, where)
        files[path] = None
        digest.update(f"{path}\t{name}\t{value:.0f}\n".encode())
    if bad:
        raise InstagError(f"{source}: {len(bad)} bad label row(s):\n  " + "\n  ".join(bad),
                          "fix or remove these rows and run again")
    if not said:
        raise InstagError(f"{source}: no labels in it", "one row per (file, instrument): "
                          "path,instrument,present")
    instruments = tuple(sorted({name for _, name in said}))
    order = {f: i for i, f in enumerate(files)}
    values = np.zeros((len(files), len(instruments)), np.float32)
    observed = np.zeros_like(values, dtype=bool)
    for (path, name), (value, _) in said.items():
        i, c = order[path], instruments.index(name)
        values[i, c], observed[i, c] = value, True
    return Labels(tuple(files), instruments, values, observed, source,
                  sha256 or digest.hexdigest())


def read_labels_csv(path: str | Path) -> Labels:
    """A `path,instrument,present` CSV (a header row of those names is optional): a regular
    file of bounded size (`guard.inputs`), its rows split on "\\n" only (a name may hold
    U+2028 and the other characters str.splitlines() ends lines at)."""
    path = regular_file(Path(path).expanduser(), "--labels", LABELS)
    base = path.resolve().parent

    def rows():
        for n, row in _csv_rows(path):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if n == 1 and [c.strip().lower() for c in row] == ["path", "instrument", "present"]:
                continue
            where = f"{path.name}:{n}"
            if len(row) != 3:
                yield f"{where}: {len(row)} columns, expected 3 (path,instrument,present)"
                continue
            file = base / Path(row[0].strip()).expanduser()
            if not file.is_file():
                yield f"{where}: {row[0].strip()!r}: no such file"
                continue
            yield where, file.resolve(), row[1], row[2]

    return labels_from_rows(rows(), str(path), file_digest(path))


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """A labels CSV's rows and the line each ends on."""
    reader = csv.reader(text_lines(path, "--labels", LABELS, keepends=True))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        raise InstagError(f"--labels {path}, line {reader.line_num}: {e}",
                          "a UTF-8 CSV of path,instrument,present rows") from None


def labels_from_folders(root: str | Path) -> Labels:
    """`ROOT/<instrument>/**` positives, `ROOT/not-<instrument>/**` negatives (audio files by
    their suffix); a file in both is a contradiction, reported."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InstagError(f"{root}: not a folder", "DIR/<instrument>/ holding songs with it, "
                          "DIR/not-<instrument>/ songs without it")

    def rows():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            negative = folder.name.startswith(NEGATIVE_PREFIX)
            instrument = folder.name.removeprefix(NEGATIVE_PREFIX) if negative else folder.name
            for file in sorted(folder.rglob("*")):
                if file.suffix.lower() in AUDIO_SUFFIXES and file.is_file():
                    yield (str(file.relative_to(root)), file.resolve(), instrument,
                           "0" if negative else "1")

    return labels_from_rows(rows(), str(root))
