"""The schema of instag's documents: the shape `forms.file_document` writes and `readback`
yields for every format, and the check every record read back goes through.

A document: `path` (a non-empty str), `status` (a `Status`), `reason`, `file_tags` and
`model_id` (str; null or absent: none), `artist`, `title` and `album` (the file's own tags:
text of at most `songtags.MAX_CHARS` characters; null or absent: none, as in older outputs),
`duration_s` (a number >= 0, or null; a number for a tagged file), `size` and `mtime_ns`
(int64 or null). A tagged (`ok`) file also has `instruments`
(names, each one a bag scores), `segments` ({name: [[start, end], ...]}) and `bags`:
{start_s, end_s, probabilities {name: number in [0, 1]}, present [names], segments, and
optionally timeline {start_s [...], instance_probs {name: [...]}, attention {name: [...]}}}.
Every number is finite; a segment is two numbers, 0 <= start <= end.

A malformed record is one InstagError naming the document, the record (a line, a row or an
index) and the field: the commands that read documents say it and write nothing.
"""

from __future__ import annotations

import math

from instag.common.errors import InstagError
from instag.common.status import Status
from instag.outputs.songtags import MAX_CHARS, SONG_FIELDS

FIX = ("the record is not as `instag tag` writes it: tag the files again, or correct or "
       "remove that record")
STATUSES = frozenset(s.value for s in Status)
INT64 = 1 << 63


class Malformed(ValueError):
    """A field that breaks the schema: its name (a path into the record) and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def malformed(where: str, e: Malformed) -> InstagError:
    return InstagError(f"{where}: field {e.field}: {e.problem}", FIX)


def check_document(doc: object, where: str) -> dict:
    """`doc`, once it has the schema's shape, or one InstagError naming `where` (the document
    and the record) and the field."""
    try:
        return _document(doc)
    except Malformed as e:
        raise malformed(where, e) from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def text(value: object, field: str, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise Malformed(field, f"{_shown(value)} is not a{'' if empty else ' non-empty'} string")
    return value


def number(value: object, field: str, low: float = -math.inf, high: float = math.inf
           ) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(field, f"{_shown(value)} is not a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise Malformed(field, f"{_shown(value)} is not a finite number in [{low:g}, {high:g}]")
    return value


def integer(value: object, field: str, low: int = -INT64) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < INT64:
        raise Malformed(field, f"{_shown(value)} is not a 64-bit integer"
                        + (" >= 0" if low == 0 else ""))
    return value


def mapping(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(field, f"{_shown(value)} is not an object")
    for key in value:
        text(key, f"{field} key", empty=False)
    return value


def names(value: object, field: str, known: dict | None = None) -> list[str]:
    if not isinstance(value, list):
        raise Malformed(field, f"{_shown(value)} is not a list")
    for i, name in enumerate(value):
        text(name, f"{field}[{i}]", empty=False)
        if known is not None and name not in known:
            raise Malformed(f"{field}[{i}]", f"{name!r} has no probability in the bags")
        if name in value[:i]:
            raise Malformed(f"{field}[{i}]", f"{name!r} a second time")
    return value


def segments(value: object, field: str, known: dict) -> dict:
    for name, segs in mapping(value, field).items():
        if name not in known:
            raise Malformed(f"{field}.{name}", "an instrument with no probability")
        if not isinstance(segs, list):
            raise Malformed(f"{field}.{name}", f"{_shown(segs)} is not a list of segments")
        for i, seg in enumerate(segs):
            where = f"{field}.{name}[{i}]"
            if not isinstance(seg, list | tuple) or len(seg) != 2:
                raise Malformed(where, f"{_shown(seg)} is not a segment [start, end]")
            start = number(seg[0], where, 0)
            number(seg[1], where, start)
    return value


def _document(doc: object) -> dict:
    if not isinstance(doc, dict):
        raise Malformed("(record)", f"{_shown(doc)} is not an object")
    text(doc.get("path"), "path", empty=False)
    if "\0" in doc["path"]:
        raise Malformed("path", "holds a NUL character")
    if doc.get("status") not in STATUSES:
        raise Malformed("status", f"{_shown(doc.get('status'))} is not one of "
                        f"{', '.join(sorted(STATUSES))}")
    for key in ("reason", "file_tags", "model_id"):  # null or absent: none said
        if doc.get(key) is not None:
            text(doc[key], key)
    for key in SONG_FIELDS:
        if doc.get(key) is not None and len(text(doc[key], key)) > MAX_CHARS:
            raise Malformed(key, f"longer than {MAX_CHARS} characters")
    ok = doc["status"] == Status.OK.value
    if doc.get("duration_s") is not None or ok:
        number(doc.get("duration_s"), "duration_s", 0)
    integer(doc.get("size"), "size", 0)
    integer(doc.get("mtime_ns"), "mtime_ns")
    if ok:
        if not isinstance(doc.get("bags"), list):
            raise Malformed("bags", f"{_shown(doc.get('bags'))} is not a list")
        known = check_bags(doc["bags"])
        names(doc.get("instruments"), "instruments", known)
        segments(doc.get("segments"), "segments", known)
    return doc


def check_bags(bags: list) -> dict:
    """Checks every bag (raising Malformed); the instruments the bags score (each bag scores
    the same ones)."""
    known: dict = {}
    for i, bag in enumerate(bags):
        field = f"bags[{i}]"
        mapping(bag, field)
        start = number(bag.get("start_s"), f"{field}.start_s", 0)
        number(bag.get("end_s"), f"{field}.end_s", start)
        probabilities = mapping(bag.get("probabilities"), f"{field}.probabilities")
        for name, p in probabilities.items():
            number(p, f"{field}.probabilities.{name}", 0, 1)
        if i and probabilities.keys() != known.keys():
            raise Malformed(f"{field}.probabilities", "not the instruments of the first bag")
        known = probabilities
        names(bag.get("present"), f"{field}.present", known)
        segments(bag.get("segments"), f"{field}.segments", known)
        if "timeline" in bag:
            _timeline(bag["timeline"], f"{field}.timeline", known)
    return known


def _timeline(value: object, field: str, known: dict) -> None:
    timeline = mapping(value, field)
    starts = timeline.get("start_s")
    if not isinstance(starts, list):
        raise Malformed(f"{field}.start_s", f"{_shown(starts)} is not a list")
    for i, t in enumerate(starts):
        number(t, f"{field}.start_s[{i}]", 0)
    for key in ("instance_probs", "attention"):
        for name, values in mapping(timeline.get(key), f"{field}.{key}").items():
            where = f"{field}.{key}.{name}"
            if name not in known:
                raise Malformed(where, "an instrument with no probability")
            if not isinstance(values, list) or len(values) != len(starts):
                raise Malformed(where, f"not a list of {len(starts)} numbers")
            for i, v in enumerate(values):
                number(v, f"{where}[{i}]", 0, 1)
