"""What a tagging run produces, as outputs a run feeds: the tags file (CSV, JSON, JSONL,
Parquet), the summary CSV, segment exports, Figure 4 plots and the files' own tags. The CLI,
the Python API and the beets plugin hand a run the same objects.

Each output checks its own settings and claims its target through the output-target rule
(`guard.targets`) before any work (`check`), is fed every result in walk order while the run
goes (`opened`), and puts what it wrote in place only when the run ends without error: a run
that fails or is stopped leaves every previous output as it was. File tags are the exception:
each is written as its result arrives (and recorded in the other outputs as the file now is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from instag.common.atomic import SUCCESS, Changed, Stamp
from instag.common.errors import InstagError, UsageError
from instag.common.guard.targets import Refused, Target, claim_folder, png_by_instag
from instag.common.spelling import output
from instag.features.logmel import Spectrogram
from instag.outputs.exports import SegmentsFormat, SegmentsWriter, library_root
from instag.outputs.filetags import (
    CHANGED_WHILE_TAGGING,
    Outcome,
    TagChange,
    failed,
    wanted,
    write_tags,
)
from instag.outputs.folders import FolderOutput
from instag.outputs.forms import file_document
from instag.outputs.songtags import read_song
from instag.outputs.writers import (
    STDOUT,
    SUMMARY,
    Format,
    check_output,
    check_writable,
    format_for,
    result_writer,
    summary_writer,
)
from instag.tagging.counts import RunCounts
from instag.tagging.identity import FileKey
from instag.tagging.results import FileResult
from instag.tagging.tagwriting import TagWriting

Feed = Callable[[FileResult], None]


@dataclass
class RunContext:
    """What outputs learn of their run: its inputs (which no output may replace), the library's
    root (where export names start), what the output says of the run, its running counts, and
    the engine's answers about files instag itself rewrote (the local cache's; none on Ray)."""

    inputs: list[Path]
    library: list[Path] = field(default_factory=list)  # the folders (or files) it tags
    protected: list[Path] = field(default_factory=list)  # the cache and its lock
    extensions: tuple[str, ...] = ()
    run_info: Callable[[], dict] = dict
    thresholds: Callable[[], dict] = dict
    counts: RunCounts = field(default_factory=RunCounts)
    same_audio: Callable[[FileKey, FileKey], bool] = lambda was, now: False
    rekey: Callable[[FileKey, FileKey], None] = lambda was, now: None
    note: Callable[[str], None] = lambda line: None
    # the spectrogram VGGish hears of a file (path, duration), for figures
    spectrogram: Callable[[Path, float], Spectrogram] = field(default=lambda path, duration:
                                                             _no_front_end(path))


def _no_front_end(path: Path) -> Spectrogram:
    raise InstagError(f"{path}: this run has no VGGish front end to draw its spectrogram with")


class Sink(Protocol):
    def check(self, run: RunContext) -> None:
        """Refuse settings and targets that cannot work, before anything runs."""

    def still_claimed(self) -> None:
        """Just before the outputs go into place: raise `Changed` if something else wrote the
        target meanwhile (then no output is put in place)."""

    def opened(self, run: RunContext) -> contextlib.AbstractContextManager[Feed]:
        """A function fed each result; leaving the block without error puts the output in
        place."""


@dataclass
class TagsFile:
    """`--out`: the run's results as CSV, JSON, JSONL or Parquet (by extension, or `format`);
    `-` is standard output. `timeline`: JSON/JSONL documents carry each bag's timeline."""

    flag: ClassVar[str] = "--out"  # its option on the command line
    path: Path
    format: Format | str | None = None
    timeline: bool = False
    _target: Target | None = None

    def check(self, run: RunContext) -> None:
        self.path = Path(self.path)
        named = output(self.flag, "TagsFile")
        self.format = format_for(self.path, self.format, named)
        self._target = check_output(self.path, run.inputs, run.protected, run.extensions,
                                    self.format, named)

    def still_claimed(self) -> None:
        _still(self._target)

    @contextlib.contextmanager
    def opened(self, run: RunContext) -> Iterator[Feed]:
        assert self._target is not None, "check() first"
        with result_writer(self.path, Format(self.format), run.run_info, self.timeline,
                           self._target.replaces) as write:
            yield lambda result: write(with_song(result))

    @property
    def where(self) -> str:
        return "standard output" if self.path == STDOUT else str(self.path)


@dataclass
class SummaryFile:
    """`--summary`: one CSV row per file for a person (path, status, instruments, duration,
    reason), replaced together with the tags file."""

    flag: ClassVar[str] = "--summary"  # its option on the command line
    path: Path
    _target: Target | None = None

    def check(self, run: RunContext) -> None:
        self.path = Path(self.path)
        if self.path.suffix.lower() != ".csv":
            raise UsageError(f"{output(self.flag, 'SummaryFile')} {self.path}: a summary is "
                             "a .csv", "name it e.g. summary.csv")
        self._target = check_output(self.path, run.inputs, run.protected, run.extensions,
                                    Format.CSV, output(self.flag, "SummaryFile"), SUMMARY)

    def still_claimed(self) -> None:
        _still(self._target)

    def opened(self, run: RunContext) -> contextlib.AbstractContextManager[Feed]:
        assert self._target is not None, "check() first"
        return summary_writer(self.path, self._target.replaces)


def with_song(result: FileResult) -> FileResult:
    """`result` with its song's artist, title and album, read here once per file whichever
    engine made it; a result carried over from a previous output keeps what it had there."""
    if result.ok and result.rows is None and not result.song:
        result.song = read_song(result.path)
    return result


def _still(target: Target | None) -> None:
    """The target is still what was claimed (absent, or the same file)."""
    if target is None or str(target.path) == "-":
        return
    try:
        now: Stamp | None = Stamp.of(target.path)
    except FileNotFoundError:
        now = None
    if now != target.replaces:
        raise Changed(f"{target.path}: written by another program during the run")


def check_folder(folder: Path, option: str) -> None:
    """An output folder that instag adds files to: not a file, not another output that is a
    whole folder (a Parquet dataset, a browse site: a file added would break it), and writable
    (each file in it is judged by the output-target rule as it is written)."""
    claim_folder(folder, option, lambda existing: True)
    if (whole := _whole_output(folder)) is not None:
        raise Refused(f"{option} {folder}: is {whole}; a file added to it would break it",
                      "name a folder of its own")
    check_writable(folder, f"{option} {folder}")


def _whole_output(folder: Path) -> str | None:
    """What output a folder is as a whole, if it is one (None for any other folder)."""
    from instag.outputs.browse import is_site

    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    if (folder / SUCCESS).is_file() and any(folder.glob("part-*.parquet")):
        return "a Parquet dataset"
    return "a page written by instag browse" if is_site(folder) else None


@dataclass
class SegmentsFolder:
    """`--segments-out`: each tagged file's segments as JAMS, Audacity labels or a Sonic
    Visualiser layer, named after its path in the library; moved in when the run ends."""

    flag: ClassVar[str] = "--segments-out"  # its option on the command line
    folder: Path
    format: SegmentsFormat | str = SegmentsFormat.JAMS

    def check(self, run: RunContext) -> None:
        self.folder, self.format = Path(self.folder), SegmentsFormat(self.format)
        check_folder(self.folder, output(self.flag, "SegmentsFolder"))

    @contextlib.contextmanager
    def opened(self, run: RunContext) -> Iterator[Feed]:
        self.writer = writer = SegmentsWriter(self.folder, self.format, library_root(run.inputs),
                                              {"thresholds": run.thresholds()}, note=run.note)
        with writer.staged():
            yield lambda result: writer(file_document(result)) if result.ok else None


@dataclass
class PlotFolder:
    """`--plot`: the paper's Figure 4 per tagged file, named after its path in the library
    (`album/01.flac.png`: the same place on every run), staged and moved in when the run ends
    like the segments (`folders.FolderOutput`); a file that cannot be drawn is one line."""

    flag: ClassVar[str] = "--plot"  # its option on the command line
    folder: Path

    def check(self, run: RunContext) -> None:
        self.folder = Path(self.folder)
        check_folder(self.folder, output(self.flag, "PlotFolder"))

    @contextlib.contextmanager
    def opened(self, run: RunContext) -> Iterator[Feed]:
        self.writer = FolderOutput(self.folder, library_root(run.inputs), ".png",
                                   png_by_instag, run.note)
        with self.writer.staged():
            yield lambda result: self._draw(result, run) if result.ok else None

    def _draw(self, result: FileResult, run: RunContext) -> None:
        from instag.features.decode import AudioError
        from instag.outputs.plot import plot_file

        doc = file_document(result, timeline=True)
        try:
            spectrogram = run.spectrogram(result.path, result.duration)
            self.writer.add(result.path, lambda png: plot_file(doc, png, spectrogram))
        except (AudioError, InstagError) as e:
            run.note(f"plot: {result.display_path}: not drawn ({e})")


@dataclass
class FileTags:
    """`--write-tags`: each tagged file's instruments into its own tags, while it is the file
    that was decoded (or what instag's own tag writes made of it); the result then records the
    file as it is after the write, so that the next run knows it."""

    writing: TagWriting = field(default_factory=TagWriting)

    def check(self, run: RunContext) -> None:
        """TagWriting checked its field and separator where it was made."""

    @contextlib.contextmanager
    def opened(self, run: RunContext) -> Iterator[Feed]:
        yield lambda result: self._write(result, run) if result.ok else None

    def _write(self, result: FileResult, run: RunContext) -> None:
        change = self._change(result, run)
        result.file_tags = change.describe()
        run.counts.file_tags(change.outcome)
        if change.outcome in (Outcome.FAILED, Outcome.WOULD_CHANGE, Outcome.UNSUPPORTED):
            run.note(f"file tags of {result.display_path}: {result.file_tags}")

    def _change(self, result: FileResult, run: RunContext) -> TagChange:
        try:
            now = FileKey.of(result.path)
        except OSError as e:
            return failed(e.strerror or str(e))
        decoded = FileKey(now.path, result.size, result.mtime_ns)
        if now != decoded and not run.same_audio(decoded, now):
            return failed(CHANGED_WHILE_TAGGING)
        within = [p if p.is_dir() else p.parent for p in run.library]
        change = write_tags(result.path, wanted(result.instruments(), result.best(),
                                                self.writing), self.writing, expect=now,
                            within=within)
        if change.outcome is Outcome.WRITTEN:
            written = FileKey.of(result.path)
            run.rekey(now, written)
            now = written
        result.size, result.mtime_ns = now.size, now.mtime_ns  # as the file is now
        return change
