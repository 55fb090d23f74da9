"""`instag browse`: a static page to look through a tagged library and listen where each
instrument plays, written from any instag output (CSV, JSON, JSONL, Parquet) as a stream.

The site is a folder: the page (`index.html`, `app.js`, `rows.js`, `view.js`, `style.css`,
`favicon.svg`: no framework, no CDN, everything the page needs is written into it) and the data as
`<script>`-loaded `.js` files, since a page opened from `file://` may not fetch: `data/meta.js`
(every instrument scored, in the model's order, which gives each its colour; counts; chunk
count; the files whose view is included), then `data/chunk-NNNN.js` of CHUNK_FILES files each,
loaded one after another while the list is already in use, and `data/view-N.js` for each file
given with `--view` (its Figure 4: `view`; `--serve` makes any file's when it is opened).
Every path and tag value reaches the page as JSON data, and the page puts it in as text, never
as HTML. Audio links are relative to the site folder (percent-encoded
bytes, so names that are not UTF-8 still play); under `--serve` the page asks the server for
the file by its number in the output instead (`serve`). Instrument names are data, never keys
of a JavaScript object (`__proto__` is an instrument name like any other): the data hold them
as lists of pairs, and the page as `Map`s.

The folder is written beside its place and renamed into it: a run that fails leaves the
previous site as it was; a folder that is not an instag site is never replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from instag.common.atomic import sweep, temp_name
from instag.common.errors import InstagError
from instag.outputs.colours import colour
from instag.outputs.songtags import SONG_FIELDS, song_of
from instag.tagging.results import audio_path

CHUNK_FILES = 5000
MARKER = "instag-site.json"  # what makes a folder an instag site, which a new one may replace
# what Chromium plays in an <audio> element; the rest say "not playable in a browser"
PLAYABLE = frozenset({".mp3", ".wav", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".mp4",
                      ".aac", ".webm", ".weba"})
PAGE_FILES = ("index.html", "app.js", "rows.js", "view.js", "style.css", "favicon.svg")


@dataclass(frozen=True)
class Listed:
    """A tagged file as its document recorded it: what `--serve` checks before sending it."""

    path: Path
    size: int | None
    mtime_ns: int | None


@dataclass
class Site:
    """What was written: files, the count per instrument, the files listed, by number (for
    `--serve`: a tagged file as `Listed`, None for one that failed), and the site's size."""

    folder: Path
    files: int = 0
    failed: int = 0
    counts: Counter = field(default_factory=Counter)
    instruments: dict = field(default_factory=dict)  # every instrument scored, in model order
    audio: list[Listed | None] = field(default_factory=list)
    bytes: int = 0
    views: list[int] = field(default_factory=list)  # the files whose view the site includes


def record(doc: dict, path: Path, index: int, site: Path) -> list:
    """One file (`path`: the audio its document names) as the page takes it: [path, href,
    status, reason, duration, [[instrument, best probability, present, [[start, end], ...]],
    ...], playable, number, [artist, title, album] ("" for none) or null (no song fields)]."""
    absolute = Path(os.path.abspath(path))
    href = urllib.parse.quote(os.fsencode(os.path.relpath(absolute, site)).replace(b"\\", b"/"))
    best: dict[str, float] = {}
    for bag in doc.get("bags") or []:
        for name, p in (bag.get("probabilities") or {}).items():
            best[name] = max(best.get(name, 0.0), float(p))
    present = set(doc.get("instruments") or [])
    segments = doc.get("segments") or {}
    instruments = [[name, round(p, 3), int(name in present),
                    [[round(a, 2), round(b, 2)] for a, b in segments.get(name, [])]]
                   for name, p in best.items()]
    return [doc["path"], href, str(doc.get("status", "")), doc.get("reason") or "",
            doc.get("duration_s"), instruments, int(path.suffix.lower() in PLAYABLE), index,
            [doc.get(f) or "" for f in SONG_FIELDS] if song_of(doc) else None]


def data_script(call: str, data) -> str:
    """A data file: one call with JSON (ASCII-escaped: nothing in it can end the script)."""
    return f"{call}({json.dumps(data, ensure_ascii=True, separators=(',', ':'))});\n"


SITE_DATA = re.compile(r"meta\.js|chunk-[0-9]{4,9}\.js|view-[0-9]{1,9}\.js")


def is_site(folder: Path) -> bool:
    """A folder `instag browse` wrote, and nothing else: its page, its data, its marker (whose
    content is browse's). Only such a folder (or an empty one) is replaced as a whole."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    if not names:
        return True
    if not names <= {*PAGE_FILES, MARKER, "data"} or MARKER not in names:
        return False
    if not all(_plain_file(folder / name) for name in names & {*PAGE_FILES, MARKER}):
        return False  # a folder or a link by a page's name is not the page browse wrote
    try:
        marker = json.loads((folder / MARKER).read_text()[:4096])
    except (OSError, ValueError):
        return False
    data = folder / "data"
    return (isinstance(marker, dict) and {"source", "files"} <= marker.keys()
            and (not data.exists() or (data.is_dir() and not data.is_symlink() and all(
                SITE_DATA.fullmatch(p.name) and _plain_file(p) for p in data.iterdir()))))


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


ViewOf = Callable[[dict], "dict | None"]  # a document -> its view's data, or None: not included


def build_site(docs, out: Path, source: str, view_of: ViewOf | None = None) -> Site:
    """Write the site for `docs` (an output's documents, streamed) into `out`: a new folder,
    an empty one, or a site browse wrote (`is_site`). `view_of` gives the file view of the
    documents whose view the site includes (`view.view_data`)."""
    out = Path(out).absolute()
    if out.exists() and not is_site(out):
        raise InstagError(f"--out {out}: exists and is not an instag site (it holds files "
                          "`instag browse` did not write)", "give a new folder, or one "
                          "`instag browse` wrote")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep(out.parent)
    tmp = temp_name(out.parent)
    tmp.mkdir(mode=0o700)
    try:
        site = _write(docs, tmp, out, source, view_of)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    site.folder = out
    return site


def _write(docs, tmp: Path, final: Path, source: str, view_of: ViewOf | None) -> Site:
    site = Site(tmp)
    (tmp / "data").mkdir()
    chunk: list = []
    chunks = 0

    def flush() -> None:
        nonlocal chunks, chunk
        (tmp / "data" / f"chunk-{chunks:04d}.js").write_text(
            data_script("INSTAG.chunk", [chunks, chunk]), encoding="ascii")
        chunks += 1
        chunk = []

    for doc in docs:
        path = audio_path(doc["path"])
        row = record(doc, path, site.files, final)
        ok = row[2] == "ok"
        site.audio.append(Listed(path, _integer(doc.get("size")), _integer(doc.get("mtime_ns")))
                          if ok else None)
        site.files += 1
        site.failed += not ok
        site.counts.update(name for name, _, present, _ in row[5] if present)
        site.instruments.update((name, None) for name, *_ in row[5])
        chunk.append(row)
        if ok and view_of is not None and (view := view_of(doc)) is not None:
            (tmp / "data" / f"view-{row[7]}.js").write_text(
                data_script("INSTAG.view", [row[7], view]), encoding="ascii")
            site.views.append(row[7])
        if len(chunk) >= CHUNK_FILES:
            flush()
    if chunk or not chunks:
        flush()
    meta = {"source": source, "files": site.files, "failed": site.failed, "chunks": chunks,
            "counts": [list(pair) for pair in site.counts.most_common()],
            "instruments": list(site.instruments), "views": site.views,
            "colours": [colour(i) for i in range(len(site.instruments))]}
    (tmp / "data" / "meta.js").write_text(data_script("INSTAG.meta", meta), encoding="ascii")
    page = resources.files(__package__) / "page"
    for name in PAGE_FILES:
        (tmp / name).write_bytes((page / name).read_bytes())
    (tmp / MARKER).write_text(json.dumps({"source": source, "files": site.files}))
    site.bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    os.chmod(tmp, 0o777 & ~_umask())
    return site


def _integer(value) -> int | None:
    """A size or mtime as the document gives it; anything but an integer is no record."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap(tmp: Path, out: Path) -> None:
    """The new site into place: the old one (an instag site, checked) aside, then removed."""
    old = None
    if out.exists() and not is_site(out):
        raise InstagError(f"--out {out}: became something other than an instag site while "
                          "the site was written", "give a new folder")
    if out.exists():
        old = temp_name(out.parent, "old")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
