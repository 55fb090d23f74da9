"""A tagged file as the paper's Figure 4, for `instag plot` and the page's file view: its
attention timeline (from the output, or recomputed from the cache with the model:
`engines.local.timeline`) over the spectrogram VGGish heard (`features.logmel`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from instag.common.errors import InstagError
from instag.engines.local.timeline import with_timeline
from instag.features.decode import AudioError
from instag.features.logmel import LogMel, Spectrogram
from instag.outputs.browse import Listed
from instag.outputs.browse.view import VIEW_COLUMN_S, VIEW_MAX_COLUMNS, view_data
from instag.outputs.readback import names_file
from instag.tagging.options import TagOptions
from instag.tagging.results import audio_path


class FileViews:
    """Figures of tagged files under one set of options (`model`, `vggish`, `pca`, `cache`,
    `resampler`, as the run that tagged them): VGGish's front end is loaded once, on first use."""

    def __init__(self, options: TagOptions | None = None) -> None:
        self.options = options or TagOptions()
        self._log_mel: LogMel | None = None

    def log_mel(self) -> LogMel:
        if self._log_mel is None:
            self._log_mel = LogMel.of_vggish(self.options.vggish)
        return self._log_mel

    def timeline(self, doc: dict, audio: Path | None = None) -> dict:
        """`doc` with its bags' attention timelines."""
        return with_timeline(doc, self.options, audio)

    def spectrogram(self, doc: dict, max_columns: int, column_s: float = 0.0,
                    audio: Path | None = None) -> Spectrogram:
        """The spectrogram of the file `doc` names (or `audio`, where it is now)."""
        path = audio or audio_path(doc["path"])
        if not path.is_file():  # said before VGGish's front end is even looked for
            raise InstagError(f"{path}: cannot read it for the spectrogram (no such file)",
                              "pass --audio with the file's current path")
        try:
            return self.log_mel().spectrogram(path, doc["duration_s"], max_columns, column_s,
                                              self.options.resampler)
        except AudioError as e:
            raise InstagError(f"{path}: cannot read it for the spectrogram ({e.reason})",
                              "pass --audio with the file's current path") from None

    def view(self, doc: dict, audio: Path | None = None) -> dict:
        """The page's view of a tagged file (`outputs.browse.view`)."""
        doc = self.timeline(doc, audio)
        return view_data(doc, self.spectrogram(doc, VIEW_MAX_COLUMNS, VIEW_COLUMN_S, audio))

    def numbered(self, documents: Callable[[], Iterable[dict]],
                 listed: Sequence[Listed | None]) -> Callable[[int], dict]:
        """`browse --serve`'s views: the view of the file listed as `number`, its document
        read again from the output (`documents()` streams it as the site was made: nothing
        of a 100,000-file library is held for it)."""

        def view_of(number: int) -> dict:
            doc = next(itertools.islice(documents(), number, None), None)
            file = listed[number]
            if doc is None or file is None or audio_path(doc["path"]) != file.path:
                raise InstagError(f"{file.path if file else number}: the output changed since "
                                  "the page was made", "run `instag browse` again")
            return self.view(doc)

        return view_of

    def chosen(self, files: Sequence[str]) -> Callable[[dict], dict | None]:
        """`browse --view FILE`: the views a static site includes, of the files named (any
        spelling, as `plot --file`); None for the others."""
        wanted = [names_file(f) for f in files]
        return lambda doc: self.view(doc) if any(w(doc) for w in wanted) else None
