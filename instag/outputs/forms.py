"""The forms a result takes in the outputs: a JSON document per file, and CSV rows (cells that
no spreadsheet runs as a formula). `readback` reads them back."""

from __future__ import annotations

from instag.features.instances import instance_span
from instag.outputs.songtags import SONG_FIELDS
from instag.tagging.results import DECIMALS, BagResult, FileResult, _per_class
from instag.tagging.segments import format_segments

CSV_FIELDS = ("path", "status", "reason", "duration_s", "bag_start_s", "bag_end_s", "instrument",
              "probability", "present", "segments", "file_tags", "size", "mtime_ns", "model_id",
              *SONG_FIELDS)

def file_document(r: FileResult, timeline: bool = False) -> dict:
    """The JSON document of a result: a few hundred bytes to a few kB a file. `timeline` adds
    each bag's per-instance start times, instance probabilities and attention weights
    (`--timeline`: ~90 kB for a four-minute song, what `plot` draws; `plot` recomputes it from
    the cache when an output lacks it)."""
    doc: dict = {"path": r.display_path, "status": r.status}
    if r.reason:
        doc["reason"] = r.reason
    doc["duration_s"] = None if r.duration is None else round(r.duration, 3)
    if r.file_tags:
        doc["file_tags"] = r.file_tags
    doc.update({f: r.song[f] for f in SONG_FIELDS if r.song.get(f)})
    doc.update(size=r.size, mtime_ns=r.mtime_ns, model_id=r.model_id)
    if not r.ok:
        return doc
    doc["instruments"] = r.instruments()
    doc["segments"] = {c: [list(s) for s in segs] for c, segs in r.segments().items()}
    doc["bags"] = [{
        "start_s": b.bag.start_s, "end_s": b.bag.end_s,
        "probabilities": {c: round(p, DECIMALS) for c, p in b.probabilities.items()},
        "present": b.present,
        "segments": {c: [list(s) for s in segs] for c, segs in b.segments.items()},
        **({"timeline": bag_timeline(b)} if timeline else {}),
    } for b in r.bags]
    return doc


def bag_timeline(b: BagResult) -> dict:
    """A bag's instances: start times, and each instrument's instance probabilities and
    attention weights."""
    return {"start_s": [instance_span(i)[0] for i in range(b.bag.first, b.bag.stop)],
            "instance_probs": _per_class(b.instance_probs, b.probabilities),
            "attention": _per_class(b.attention, b.probabilities)}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula


def csv_cell(text: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP's leading "'"); reversibly: a
    cell that starts with "'" gets one more, and `csv_value` undoes both."""
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def csv_value(cell: str) -> str:
    """What `csv_cell` was given."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS + ("'",)) \
        else cell


def csv_rows(r: FileResult):
    base = {"path": csv_cell(r.display_path), "status": r.status, "reason": csv_cell(r.reason),
            "duration_s": "" if r.duration is None else f"{r.duration:.3f}",
            "file_tags": csv_cell(r.file_tags), "size": "" if r.size is None else r.size,
            "mtime_ns": "" if r.mtime_ns is None else r.mtime_ns, "model_id": r.model_id,
            **{f: csv_cell(r.song.get(f, "")) for f in SONG_FIELDS}}
    if not r.ok or not r.bags:
        yield {**base, **{k: "" for k in CSV_FIELDS if k not in base}}
        return
    for b in r.bags:
        for c, p in b.probabilities.items():
            yield {**base, "bag_start_s": f"{b.bag.start_s:.2f}", "bag_end_s": f"{b.bag.end_s:.2f}",
                   "instrument": c, "probability": f"{p:.{DECIMALS}f}",
                   "present": "1" if c in b.present else "0",
                   "segments": format_segments(b.segments.get(c, []))}
