"""A tagged file as the paper's Figure 4, for `instag plot` and the page's file view: its
attention timeline (from the output, or recomputed from the cache with the model:
`engines.local.timeline`) over the spectrogram VGGish heard (`features.logmel`)."""

from __future__ import annotations

import json
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from instag.common.errors import InstagError
from instag.engines.local.timeline import MOVED_FIX, with_timeline
from instag.features.decode import AudioError
from instag.features.logmel import LogMel, Spectrogram
from instag.outputs.browse.view import VIEW_COLUMN_S, VIEW_MAX_COLUMNS, view_data
from instag.outputs.documents import check_document
from instag.outputs.readback import names_file
from instag.tagging.options import TagOptions
from instag.tagging.results import audio_path


class FileViews:
    """Figures of tagged files under one set of options (`model`, `vggish`, `pca`, `cache`,
    `resampler`, as the run that tagged them): VGGish's front end is loaded once, on first use.
    `moved_fix`: what to do about a file that is not where its document says."""

    def __init__(self, options: TagOptions | None = None, moved_fix: str = MOVED_FIX) -> None:
        self.options = options or TagOptions()
        self.moved_fix = moved_fix
        self._log_mel: LogMel | None = None

    def log_mel(self) -> LogMel:
        if self._log_mel is None:
            compute = self.options.resolve(scoring=False).compute
            self._log_mel = LogMel.of(compute.vggish, compute.embedder)
        return self._log_mel

    def timeline(self, doc: dict, audio: Path | None = None) -> dict:
        """`doc` with its bags' attention timelines."""
        return with_timeline(doc, self.options, audio, self.moved_fix)

    def spectrogram(self, doc: dict, max_columns: int, column_s: float = 0.0,
                    audio: Path | None = None) -> Spectrogram:
        """The spectrogram of the file `doc` names (or `audio`, where it is now)."""
        path = audio or audio_path(doc["path"])
        if not path.is_file():  # said before VGGish's front end is even looked for
            raise InstagError(f"{path}: cannot read it for the spectrogram (no such file)",
                              self.moved_fix)
        try:
            return self.log_mel().spectrogram(path, doc["duration_s"], max_columns, column_s,
                                              self.options.resampler)
        except AudioError as e:
            raise InstagError(f"{path}: cannot read it for the spectrogram ({e.reason})",
                              self.moved_fix) from None

    def view(self, doc: dict, audio: Path | None = None) -> dict:
        """The page's view of a tagged file (`outputs.browse.view`)."""
        doc = self.timeline(doc, audio)
        return view_data(doc, self.spectrogram(doc, VIEW_MAX_COLUMNS, VIEW_COLUMN_S, audio))


class Spool:
    """`browse --serve`'s documents by their number in the site: each written, as the site is
    made, as one JSON line of a temporary file (gone when closed), with its offset; a view reads
    its one line back and checks it (`documents.check_document`). Memory: 8 bytes a file; a
    view of the 100,000th file reads one line, not the output."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.offsets = array("q")
        self.lock = threading.Lock()

    def through(self, docs: Iterable[dict]) -> Iterator[dict]:
        """`docs`, each kept as it passes."""
        for doc in docs:
            with self.lock:
                self.file.seek(0, 2)
                self.offsets.append(self.file.tell())
                self.file.write(json.dumps(doc).encode() + b"\n")
            yield doc

    def __getitem__(self, number: int) -> dict:
        with self.lock:
            self.file.seek(self.offsets[number])
            line = self.file.readline()
        return check_document(json.loads(line), f"document {number}")

    def close(self) -> None:
        self.file.close()


def served(views: FileViews, spool: Spool) -> Callable[[int], dict]:
    """The view of the file the site lists as `number` (`serve.Views` asks)."""
    return lambda number: views.view(spool[number])


def chosen(views: FileViews, files: Sequence[str], docs: Iterable[dict],
           failed: Callable[[str], None]) -> Callable[[dict], dict | None]:
    """`browse --view FILE`: the views a static site includes, of the files named (any spelling,
    as `plot --file`); None for the others. Each FILE must name a tagged file of `docs` (read
    once, before the site is made), else nothing is made; a view that cannot be made costs only
    itself (`failed` hears why)."""
    wanted = {file: names_file(file) for file in files}
    found: dict[str, str] = {}
    for doc in docs:
        for file, names in wanted.items():
            if file not in found and names(doc):
                found[file] = str(doc.get("status"))
    for file in files:
        if found.get(file) != "ok":
            why = "is not in it" if file not in found else f"did not tag ({found[file]})"
            raise InstagError(f"--view {file}: the output {why}", "give a path of a tagged "
                              "file, as the output lists it (any spelling)")
    matches = list(wanted.values())

    def view_of(doc: dict) -> dict | None:
        if not any(m(doc) for m in matches):
            return None
        try:
            return views.view(doc)
        except InstagError as e:
            failed(f"--view {doc['path']}: not included ({e.message}; {e.fix})")
            return None

    return view_of
