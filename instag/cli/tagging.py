"""Commands for tagging a library: tag, plot, embed; and the progress they print."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    EXIT_SOME_FAILED,
    DeviceOpt,
    PcaOpt,
    ResamplerOpt,
    VggishOpt,
    console,
    expected_errors,
)
from instag.common import locations
from instag.common.devices import Device
from instag.common.errors import InstagError
from instag.features.featurefile import write_features
from instag.features.resample import DEFAULT_RESAMPLER
from instag.tagging.bags import parse_bag_mode
from instag.tagging.plot import load_file_doc, plot_file
from instag.tagging.results import FileResult, file_document
from instag.tagging.run import Summary, TagOptions, TagRun
from instag.tagging.run import embed as embed_run
from instag.tagging.run import tag as tag_run
from instag.tagging.walk import parse_extensions
from instag.tagging.writers import Format, format_for, result_writer


class LogReporter:
    """Plain lines for cron logs: every failure, a progress line every 30 s (not with quiet)."""

    def __init__(self, quiet: bool, verb: str = "tagging") -> None:
        self.clock = time.monotonic
        self.quiet = quiet
        self.verb = verb
        self.err = console(stderr=True)
        self.last = self.start = self.clock()

    def started(self, summary: Summary, provider: str | None) -> None:
        if not self.quiet:
            on = f" (scoring on {provider})" if provider else ""
            self.err.print(f"{self.verb} {summary.total} files{on}", markup=False)

    def file_done(self, result: FileResult, summary: Summary) -> None:
        if not result.ok:
            self.err.print(f"{result.status}: {result.display_path}: {result.reason}",
                           markup=False)
        self.show_progress(summary)

    def show_progress(self, summary: Summary) -> None:
        if not self.quiet and self.clock() - self.last > 30:
            self.last = self.clock()
            self.err.print(f"{summary.done}/{summary.total} files, "
                           f"{summary.audio_s / 3600:.2f} h of audio", markup=False)

    def close(self) -> None:
        pass


class RichReporter(LogReporter):
    """The same, with a progress bar on a terminal: files, hours of audio, files/s, ETA."""

    def started(self, summary: Summary, provider: str | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        super().started(summary, provider)
        self.progress = Progress(
            TextColumn(f"[bold]{self.verb}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[hours]:.2f} h audio"), TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(), console=self.err)
        self.task = self.progress.add_task(self.verb, total=summary.total, hours=0.0, rate="")
        self.progress.start()

    def show_progress(self, summary: Summary) -> None:
        rate = summary.done / max(self.clock() - self.start, 1e-9)
        self.progress.update(self.task, completed=summary.done, hours=summary.audio_s / 3600,
                             rate=f"{rate:.1f} files/s")

    def close(self) -> None:
        if hasattr(self, "progress"):
            self.progress.stop()


def reporter_for(quiet: bool, verb: str) -> LogReporter:
    return RichReporter(quiet, verb) if sys.stderr.isatty() and not quiet else \
        LogReporter(quiet, verb)


def read_paths(paths: list[Path]) -> list[Path]:
    """The paths as given; a lone '-' reads them from stdin (`find ... | instag tag -`), one a
    line, bytes kept as they are."""
    if len(paths) == 1 and str(paths[0]) == "-":
        return [Path(os.fsdecode(line.rstrip(b"\r\n"))) for line in sys.stdin.buffer
                if line.strip()]
    return paths


def summary_line(summary: Summary, verb: str) -> str:
    text = f"{summary.ok} of {summary.done} files {verb} ({summary.from_cache} from cache)"
    if summary.failed:
        text += "; failed: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.failed.items()))
    return text


@expected_errors
def tag(
    paths: Annotated[list[Path], typer.Argument(
        help="Music files or folders (recursive); '-' reads paths from stdin, one a line.")],
    out: Annotated[Path, typer.Option(help="Output file: .csv, .json or .jsonl.")],
    format: Annotated[Format | None, typer.Option(
        help="csv, json or jsonl (default: from --out's extension).")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Scoring model (.onnx). Default: $INSTAG_MODEL, else the one `instag setup` "
             "installed.")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    bag: Annotated[str, typer.Option(
        help="'full' (the whole file is one bag) or N instances per bag (10 = 9.6 s, "
             "OpenMIC's clips).")] = "full",
    hop: Annotated[int | None, typer.Option(help="Instances between bag starts (default: N, "
                                                 "no overlap).")] = None,
    threshold: Annotated[float, typer.Option(help="Probability at which an instrument is "
                                                  "present.")] = 0.5,
    thresholds: Annotated[Path | None, typer.Option(
        help="Per-instrument thresholds: JSON {name: t} or CSV name,t lines.")] = None,
    device: DeviceOpt = Device.AUTO,
    jobs: Annotated[int | None, typer.Option(help="Decoding processes (default: CPUs).")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="SQLite cache of features and scores (default: in the user cache dir).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring the cache.")] = False,
    wait: Annotated[bool, typer.Option(help="If another run holds the cache, wait for it "
                                            "instead of exiting.")] = False,
    ext: Annotated[str | None, typer.Option(help="Extensions to take, e.g. mp3,flac "
                                                 "(default: common audio formats).")] = None,
    hidden: Annotated[bool, typer.Option(help="Also walk hidden files and folders.")] = False,
    resampler: ResamplerOpt = DEFAULT_RESAMPLER,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw Figure 4 (attention over the spectrogram) per file into this "
             "folder.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar or progress lines; failures and "
                                             "the summary only.")] = False,
) -> None:
    """Tag instruments in music files; every file gets a row, failed ones with the reason.

    Exit codes: 0 all files tagged, 1 some files failed, 2 usage or setup error.
    """
    if hop is not None and hop < 1:
        raise InstagError(f"--hop {hop}: must be a positive number of instances")
    fmt = format_for(out, format)
    opts = TagOptions(
        model=locations.resolve_model(model), vggish=vggish, pca=pca, resampler=resampler,
        bag_size=parse_bag_mode(bag), hop=hop, threshold=threshold, thresholds_file=thresholds,
        device=device, jobs=jobs, cache=cache, force=force, extensions=parse_extensions(ext),
        include_hidden=hidden, wait=wait,
    )
    run = tag_run(read_paths(paths), opts, reporter_for(quiet, "tagging"))
    _write(run, out, fmt, plot, {"model": str(opts.model), "bag": bag, "threshold": threshold})


def _write(run: TagRun, out: Path, fmt: Format, plot: Path | None, run_info: dict) -> None:
    """Stream the run's results into `out` (and figures into `plot`), then the summary."""
    plotted = 0
    try:
        with result_writer(out, fmt, run_info) as write:
            for result in run:
                write(result)
                if plot is not None and result.ok:
                    name = f"{plotted:05d}-{Path(result.display_path).stem}.png"
                    plot_file(file_document(result), plot / name, resampler="soxr")
                    plotted += 1
    finally:
        run.reporter.close()
    console(stderr=True).print(f"{summary_line(run.summary, 'tagged')}. Wrote {out}",
                               markup=False)
    if run.summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@expected_errors
def plot(
    tags_json: Annotated[Path, typer.Argument(help="A .json or .jsonl from `instag tag`.")],
    file: Annotated[str | None, typer.Option(help="Which file (its path as in the JSON); "
                                                  "default: the first tagged one.")] = None,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("attention.png"),
) -> None:
    """Draw the paper's Figure 4 for a tagged file: attention over its mel spectrogram."""
    path = plot_file(load_file_doc(tags_json, file), out)
    console().print(f"wrote {path}", markup=False)


@expected_errors
def embed(
    paths: Annotated[list[Path], typer.Argument(
        help="Audio files or folders (recursive); '-' reads paths from stdin, one a line.")],
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).")],
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    clips: Annotated[int | None, typer.Option(
        help="Cut into clips of N instances in OpenMIC's npz layout (10 = OpenMIC).")] = None,
    resampler: ResamplerOpt = DEFAULT_RESAMPLER,
    jobs: Annotated[int | None, typer.Option(help="Decoding processes (default: CPUs).")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="The tagging cache: features it holds are reused, new ones added.")] = None,
    wait: Annotated[bool, typer.Option(help="If another run holds the cache, wait for it "
                                            "instead of exiting.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar or progress lines; failures and "
                                             "the summary only.")] = False,
) -> None:
    """Turn audio files into OpenMIC-style VGGish features (uint8, 0.96 s instances)."""
    if clips is not None and clips < 1:
        raise InstagError(f"--clips {clips}: must be a positive number of instances")
    opts = TagOptions(vggish=vggish, pca=pca, resampler=resampler, jobs=jobs, cache=cache,
                      wait=wait)
    run = embed_run(read_paths(paths), opts, reporter_for(quiet, "embedding"))
    done, failed = [], []
    try:
        for result in run:
            if result.ok:
                done.append((result.path, result.features))
            else:
                failed.append((result.path, result.reason))
    finally:
        run.reporter.close()
    counts = write_features(out, done, failed, clips)
    what = f"{counts['rows']} clips" if clips else f"{counts['rows']} instances"
    console(stderr=True).print(f"{summary_line(run.summary, 'embedded')}. Wrote {out}: {what}",
                               markup=False)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)
