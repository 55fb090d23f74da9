"""Commands for tagging a library: tag, plot, embed; and the progress they print."""

from __future__ import annotations

import math
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    EXIT_SOME_FAILED,
    CacheOpt,
    DeviceOpt,
    JobsOpt,
    PcaOpt,
    PrecisionOpt,
    ResamplerOpt,
    VggishOpt,
    console,
    expected_errors,
)
from instag.cli.progress import plural, reporter_for, summary_line
from instag.cli.signals import stoppable, stopping
from instag.common import locations
from instag.common.devices import Device
from instag.common.errors import InstagError
from instag.common.guard.inputs import stdin_lines
from instag.engines.local.retag import retag
from instag.engines.local.run import embed as embed_run
from instag.engines.local.run import tag as tag_run
from instag.engines.local.timeline import with_timeline
from instag.engines.ray.pipeline import Engine, tag_on_ray
from instag.features.decode import AudioError
from instag.features.featurefile import write_features
from instag.features.resample import DEFAULT_RESAMPLER
from instag.outputs.exports import SegmentsFormat, SegmentsWriter, library_root
from instag.outputs.filetags import Outcome
from instag.outputs.forms import file_document
from instag.outputs.pathlists import read_path_list
from instag.outputs.plot import load_file_doc, plot_file
from instag.outputs.readback import checked_documents, read_documents, read_run_info
from instag.outputs.writers import (
    STDOUT,
    Format,
    check_output,
    check_writable,
    format_for,
    result_writer,
    summary_writer,
)
from instag.tagging.bags import parse_bag_mode
from instag.tagging.job import Summary
from instag.tagging.options import STALL_TIMEOUT, TagOptions
from instag.tagging.results import FileResult, audio_path, display_path
from instag.tagging.tagwriting import DEFAULT_FIELD, TagWriting
from instag.tagging.walk import check_roots, parse_extensions


def read_paths(paths: list[Path]) -> list[Path]:
    """The paths as given, each of which must exist (a missing one is a usage error: an
    unmounted disk must not replace good output); a lone '-' reads them from stdin (`find ... |
    instag tag -`), one a line, bytes kept as they are: those may vanish, per file."""
    if len(paths) == 1 and str(paths[0]) == "-":
        return [Path(os.fsdecode(line.rstrip(b"\r"))) for line in
                stdin_lines(sys.stdin.buffer, "PATHS") if line.strip()]
    check_roots(paths)
    return paths


def parse_duration(text: str, option: str) -> float:
    """'12h', '90m', '45s' or a number of seconds, as seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InstagError(f"{option} {text!r}: not a duration", f"e.g. {option} 12h, 90m or "
                          "600 (seconds)")
    return seconds


SegmentsFormatOpt = Annotated[SegmentsFormat, typer.Option(
    help="jams (a .jams annotation per file, namespace tag_open), audacity (a .txt label "
         "track) or sv (a Sonic Visualiser .csv layer: time,value,duration,label).")]
WriteScoresOpt = Annotated[bool, typer.Option(
    help="With the instruments, one INSTAG_<INSTRUMENT> field per instrument: its highest bag "
         "probability, two decimals.")]
TagFieldOpt = Annotated[str, typer.Option(
    help="The file-tag field that holds the instruments; instag's own: standard fields (TITLE, "
         "GENRE, COMMENT, ...) are refused.")]
TagSeparatorOpt = Annotated[str | None, typer.Option(
    help='Join the instruments into one value with this, e.g. "; " (for ffprobe, exiftool and '
         "mediainfo, which show only a field's first value). Default: the format's own "
         "multi-value form.")]
FollowLinksOpt = Annotated[bool, typer.Option(
    help="Tag a symlinked file's target (the link stays a link); --no-follow-links reports "
         "linked files `unsupported` instead.")]
InPlaceOpt = Annotated[bool, typer.Option(
    help="Save tags in place (mutagen) instead of tagging a copy and renaming it: keeps hard "
         "links and needs no free space, but a crash mid-save can corrupt the file.")]
DryRunOpt = Annotated[bool, typer.Option(help="Show what would change in the files' tags; "
                                              "write nothing into them.")]
FileTimeoutOpt = Annotated[float, typer.Option(
    min=1, help="Seconds a decoder may make no progress on a file (a hung network mount, a "
                "stuck ffmpeg) before it is stopped and the file reported `timeout`; "
                "retried by the next run.")]
MaxDurationOpt = Annotated[str, typer.Option(
    help="Longest file to tag, e.g. 12h, 90m or 600 (seconds); longer files are `too_long` "
         "(not remembered: a later run with a longer limit tags them).")]
WaitOpt = Annotated[bool, typer.Option(help="If another run holds the cache, wait for it "
                                            "instead of exiting.")]
QuietOpt = Annotated[bool, typer.Option(help="No progress bar or progress lines; failures and "
                                             "the summary only.")]
TagsFileArg = Annotated[Path, typer.Argument(help="An output of `instag tag`: .csv, .json, "
                                                 ".jsonl or .parquet.")]
StrictOpt = Annotated[bool, typer.Option(
    help="Exit 1 for any failed file, also one that failed the same way in an earlier run "
         "(by default those are listed but exit 0: a nightly job mails only news).")]


@expected_errors
def tag(
    out: Annotated[Path, typer.Option(help="Output file: .csv, .json, .jsonl or .parquet, or a "
                                           "folder for a Parquet dataset (with --format "
                                           "parquet); '-' writes to standard output (CSV "
                                           "unless --format).")],
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Music files or folders (recursive); '-' reads paths from stdin, one a "
             "line.")] = None,
    format: Annotated[Format | None, typer.Option(
        help="csv, json, jsonl or parquet (default: from --out's extension).")] = None,
    paths_from: Annotated[Path | None, typer.Option(
        help="The files to tag, listed: a text file with one path a line, or a Parquet file "
             "with a `path` column (catalogues too large to walk from one machine).")] = None,
    engine: Annotated[Engine, typer.Option(
        help="local: this machine (decode pool + cache); ray: a Ray cluster (see README: "
             "Beyond one machine).")] = Engine.LOCAL,
    ray_address: Annotated[str | None, typer.Option(
        help="With --engine ray: the cluster to use (auto, ray://HOST:10001); default "
             "$RAY_ADDRESS, else a Ray started on this machine for the run.")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Scoring model (.onnx). Default: $INSTAG_MODEL, else the one `instag setup` "
             "installed.")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    bag: Annotated[str, typer.Option(
        help="'full' (the whole file is one bag) or N instances per bag (10 = 9.6 s, "
             "OpenMIC's clips).")] = "full",
    hop: Annotated[int | None, typer.Option(min=1, help="Instances between bag starts "
                                                        "(default: N, no overlap).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Probability in [0, 1] at which every instrument is present (default: each "
             "instrument's threshold tuned at training, stored in the model; else 0.5).")] = None,
    thresholds: Annotated[Path | None, typer.Option(
        help="Per-instrument thresholds: JSON {name: t} or CSV name,t lines.")] = None,
    device: DeviceOpt = Device.AUTO,
    jobs: JobsOpt = None,
    file_timeout: FileTimeoutOpt = STALL_TIMEOUT,
    max_duration: MaxDurationOpt = "12h",
    cache: CacheOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring the cache.")] = False,
    wait: WaitOpt = False,
    ext: Annotated[str | None, typer.Option(help="Extensions to take, e.g. mp3,flac "
                                                 "(default: common audio formats).")] = None,
    hidden: Annotated[bool, typer.Option(help="Also walk hidden files and folders.")] = False,
    resampler: ResamplerOpt = DEFAULT_RESAMPLER,
    precision: PrecisionOpt = None,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw Figure 4 (attention over the spectrogram) per file into this "
             "folder.")] = None,
    write_tags: Annotated[bool, typer.Option(
        help="Also write the instruments into each file's own tags (INSTRUMENTS; see README: "
             "Into your library). Atomic: a copy is tagged and renamed over the file.")] = False,
    write_scores: WriteScoresOpt = False,
    tag_field: TagFieldOpt = DEFAULT_FIELD,
    tag_separator: TagSeparatorOpt = None,
    follow_links: FollowLinksOpt = True,
    in_place: InPlaceOpt = False,
    dry_run: DryRunOpt = False,
    summary: Annotated[Path | None, typer.Option(
        help="Also write a CSV of one row per file for a person to read: path, status, "
             "instruments (\"guitar; voice\"), duration, reason.")] = None,
    timeline: Annotated[bool, typer.Option(
        help="JSON/JSONL: also each bag's per-instance probabilities and attention weights "
             "(~90 kB a four-minute song instead of ~1 kB; `instag plot` recomputes them from "
             "the cache when an output lacks them).")] = False,
    segments_out: Annotated[Path | None, typer.Option(
        help="Also write each tagged file's segments into this folder, one file per audio "
             "file, named after its path in the library (see --segments-format).")] = None,
    segments_format: SegmentsFormatOpt = SegmentsFormat.JAMS,
    quiet: QuietOpt = False,
    strict: StrictOpt = False,
) -> None:
    """Tag instruments in music files; every file gets a row, failed ones with the reason.

    Exit codes: 0 all files tagged (or failed as they did in an earlier run, unless --strict),
    1 some files failed in this run, 2 usage or setup error (nothing written), 130
    interrupted, 143 terminated (previous output kept).
    """
    fmt = format_for(out, format)
    opts = TagOptions(
        model=locations.resolve_model(model), vggish=vggish, pca=pca, resampler=resampler,
        bag_size=parse_bag_mode(bag), hop=hop, threshold=threshold, thresholds_file=thresholds,
        device=device, jobs=jobs, stall_timeout=file_timeout,
        max_duration=parse_duration(max_duration, "--max-duration"), cache=cache, force=force,
        extensions=parse_extensions(ext), include_hidden=hidden, wait=wait, precision=precision,
        write_tags=TagWriting(tag_field, write_scores, in_place, dry_run, tag_separator,
                              follow_links) if write_tags else None,
    )
    if bool(paths) == bool(paths_from):
        raise InstagError("give the music as PATHS or as --paths-from FILE (one of them)",
                          "see instag tag --help")
    paths = read_path_list(paths_from) if paths_from else read_paths(paths)
    check_output(out, paths, opts.protected_paths(), opts.extensions, fmt)
    if summary is not None:
        if summary.suffix.lower() != ".csv":
            raise InstagError(f"--summary {summary}: a summary is a .csv",
                              "name it e.g. summary.csv")
        check_output(summary, paths, [*opts.protected_paths(), out], opts.extensions,
                     Format.CSV, "--summary")
    if plot is not None:
        check_folder(plot, "--plot")
    if segments_out is not None:
        check_folder(segments_out, "--segments-out")
    if engine is Engine.RAY:
        if write_tags:
            raise InstagError("--write-tags runs with the local engine only",
                              "tag with --engine ray into a .jsonl, then run `instag "
                              "write-tags` on it where the files are")
        run = tag_on_ray(paths, opts, reporter_for(quiet, "tagging"), ray_address,
                         previous=out if fmt is Format.PARQUET else None)
    else:
        run = tag_run(paths, opts, reporter_for(quiet, "tagging"))
    def run_info() -> dict:
        rule = ("--threshold" if threshold is not None else "--thresholds" if thresholds else
                "the model's tuned thresholds (0.5 where none)")
        return {"model": str(opts.model), "bag": bag, "threshold_rule": rule,
                "thresholds": run.thresholds}

    plotted = 0
    try:
        kept = "previous output kept" if out.exists() else "no output written"
        with stoppable(run, kept) as stop, ExitStack() as outputs:
            # entered first, closed last: segment files move in only once the output has
            segments = (outputs.enter_context(SegmentsWriter(
                segments_out, segments_format, library_root(paths),
                {"thresholds": run.thresholds}).staged()) if segments_out else None)
            write = outputs.enter_context(result_writer(out, fmt, run_info, timeline))
            write_summary = (outputs.enter_context(summary_writer(summary)) if summary else
                             lambda result: None)
            for result in run:
                write(result)
                write_summary(result)
                if segments is not None and result.ok:
                    segments(file_document(result))
                if plot is not None and result.ok:
                    plotted += _plot_one(result, plot / f"{plotted:05d}-"
                                         f"{Path(result.display_path).stem}.png")
            stop.hold()  # the outputs go into place now: the run's exit code stands
            outputs.close()
            where = "standard output" if out == STDOUT else out
            console(stderr=True).print(f"{summary_line(run.summary, 'tagged')}. Wrote "
                                       f"{where}", markup=False)
    except OSError as e:  # the output itself: a full disk, a disk gone read-only
        raise InstagError(f"--out {out}: cannot write ({e.strerror or e})",
                          "free some space or write elsewhere; the previous output is "
                          "untouched") from None
    if failed_exit(run.summary, strict) or run.summary.tags_failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def check_folder(folder: Path, option: str) -> None:
    """An output folder: not a file, and writable."""
    if folder.exists() and not folder.is_dir():
        raise InstagError(f"{option} {folder}: is a file", "name a folder")
    check_writable(folder, f"{option} {folder}")


def failed_exit(summary: Summary, strict: bool) -> bool:
    """Exit 1: a failure this run computed (a retryable one, such as `timeout`, is computed by
    every run), or with --strict any failure."""
    return bool(summary.failed_now or (strict and summary.failed))


def _plot_one(result: FileResult, png: Path) -> int:
    """Draw one file's figure; a file that cannot be drawn is one line, not the run's end."""
    try:
        plot_file(file_document(result, timeline=True), png, audio=result.path, resampler="soxr")
        return 1
    except (AudioError, OSError, InstagError) as e:
        console(stderr=True).print(f"plot: {result.display_path}: not drawn ({e})",
                                   markup=False)
        return 0


@expected_errors
def plot(
    tags_json: TagsFileArg,
    file: Annotated[str | None, typer.Option(help="Which file (its path, spelled any way: "
                                                  "relative, absolute, through a link); "
                                                  "default: the first tagged one.")] = None,
    audio: Annotated[Path | None, typer.Option(
        help="The audio file to draw the spectrogram from, when it is not where the JSON "
             "says (moved, or the JSON has a relative path).")] = None,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("attention.png"),
    model: Annotated[Path | None, typer.Option(
        help="The scoring model that tagged the file, to recompute its attention when the "
             "output has no timeline (default: as for `instag tag`).")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    cache: CacheOpt = None,
) -> None:
    """Draw the paper's Figure 4 for a tagged file: attention over its mel spectrogram.

    An output written without --timeline (CSV, Parquet, compact JSON/JSONL) has no attention
    weights: they are recomputed from the file's features in the cache, with the model."""
    doc = load_file_doc(tags_json, file)
    doc = with_timeline(doc, TagOptions(model=model, vggish=vggish, pca=pca, cache=cache), audio)
    try:
        path = plot_file(doc, out, audio=audio)
    except AudioError as e:
        raise InstagError(f"{e.path}: cannot read it for the spectrogram ({e.reason})",
                          "pass --audio with the file's current path") from None
    console().print(f"wrote {path}", markup=False)


@expected_errors
def embed(
    paths: Annotated[list[Path], typer.Argument(
        help="Audio files or folders (recursive); '-' reads paths from stdin, one a line.")],
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).")],
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    clips: Annotated[int | None, typer.Option(
        min=1, help="Cut into clips of N instances in OpenMIC's npz layout (10 = "
                    "OpenMIC).")] = None,
    resampler: ResamplerOpt = DEFAULT_RESAMPLER,
    precision: PrecisionOpt = None,
    jobs: JobsOpt = None,
    file_timeout: FileTimeoutOpt = STALL_TIMEOUT,
    max_duration: MaxDurationOpt = "12h",
    cache: CacheOpt = None,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
    strict: StrictOpt = False,
) -> None:
    """Turn audio files into OpenMIC-style VGGish features (uint8, 0.96 s instances)."""
    opts = TagOptions(vggish=vggish, pca=pca, resampler=resampler, jobs=jobs, precision=precision,
                      stall_timeout=file_timeout,
                      max_duration=parse_duration(max_duration, "--max-duration"), cache=cache,
                      wait=wait)
    paths = read_paths(paths)
    if out.suffix.lower() != ".npz":
        raise InstagError(f"--out {out}: features are written as an .npz",
                          f"name it e.g. {out.with_suffix('.npz').name}")
    check_output(out, paths, opts.protected_paths(), opts.extensions)
    run = embed_run(paths, opts, reporter_for(quiet, "embedding"))
    done, failed = [], []
    with stoppable(run, "nothing written"):
        for result in run:
            if result.ok:
                done.append((result.path, result.features))
            else:
                failed.append((result.path, result.reason))
    try:
        counts = write_features(out, done, failed, clips)
    except OSError as e:
        raise InstagError(f"--out {out}: cannot write ({e.strerror or e})",
                          "free some space or write elsewhere") from None
    what = f"{counts['rows']} clips" if clips else f"{counts['rows']} instances"
    console(stderr=True).print(f"{summary_line(run.summary, 'embedded')}. Wrote {out}: {what}",
                               markup=False)
    if failed_exit(run.summary, strict):
        raise typer.Exit(EXIT_SOME_FAILED)


@expected_errors
def write_tags(
    tags_file: TagsFileArg,
    remove: Annotated[bool, typer.Option(help="Remove instag's fields (the instruments field "
                                              "and INSTAG_* scores) instead.")] = False,
    write_scores: WriteScoresOpt = False,
    tag_field: TagFieldOpt = DEFAULT_FIELD,
    tag_separator: TagSeparatorOpt = None,
    follow_links: FollowLinksOpt = True,
    in_place: InPlaceOpt = False,
    dry_run: DryRunOpt = False,
    cache: CacheOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Write a finished run's instruments into the files' own tags (or --remove them).

    A file is written only while it is what was tagged (the size and mtime in the document,
    or what instag's own tag writes made of them); one that changed since is `failed`.
    Exit codes: 0 done, 1 some files failed, 2 usage error, 130/143 interrupted (files not
    reached are left as they were)."""
    writing = TagWriting(tag_field, write_scores, in_place, dry_run, tag_separator,
                         follow_links)
    docs = checked_documents(tags_file)  # in full, before the first file is touched
    counts: dict[Outcome, int] = {}
    err = console(stderr=True)

    def written() -> str:
        return f"{plural(counts.get(Outcome.WRITTEN, 0), 'file')} written, the rest left as " \
            "they were"

    with stopping(written):
        for path, change in retag(docs, writing, remove, TagOptions(cache=cache).cache_path(),
                                  wait):
            counts[change.outcome] = counts.get(change.outcome, 0) + 1
            if change.outcome is not Outcome.UNCHANGED:
                err.print(f"{display_path(path)}: {change.describe()}", markup=False)
    err.print(", ".join(f"{plural(n, 'file')} {o}" for o, n in counts.items()) or "no tagged "
              "files in it", markup=False)
    if counts.get(Outcome.FAILED):
        raise typer.Exit(EXIT_SOME_FAILED)


@expected_errors
def export(
    tags_file: TagsFileArg,
    out: Annotated[Path, typer.Option(help="Folder to write into: one file per tagged audio "
                                           "file, named after its path in the library.")],
    format: SegmentsFormatOpt = SegmentsFormat.JAMS,
    root: Annotated[Path | None, typer.Option(
        help="The library folder the names are made relative to (default: the deepest folder "
             "holding every file of TAGS).")] = None,
) -> None:
    """Write each tagged file's segments as JAMS, Audacity labels or a Sonic Visualiser layer.

    jams: a .jams annotation (namespace tag_open) per file; audacity: a .txt label track
    (File > Import > Labels); sv: a .csv of time,value,duration,label (File > Import
    Annotation Layer). Read as a stream: any size of output."""
    check_folder(out, "--out")
    if root is None:  # a first pass over the paths alone, which checks every document
        root = library_root([audio_path(d["path"]) for d in read_documents(tags_file)
                             if d.get("status") == "ok"])
    else:
        checked_documents(tags_file)  # in full, before the first file is written
    writer = SegmentsWriter(out, format, root, read_run_info(tags_file))
    with stopping(lambda: f"{plural(writer.written, 'file')} written"):
        for doc in read_documents(tags_file):
            writer(doc)
    console(stderr=True).print(f"{plural(writer.written, 'file')} of segments written into "
                               f"{out}", markup=False)


@expected_errors
def browse(
    tags_file: TagsFileArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder to write the page into (open its index.html in a browser). Default with "
             "--serve: a temporary folder.")] = None,
    serve: Annotated[bool, typer.Option(
        help="Also serve it on 127.0.0.1 (a free port, printed) until Ctrl-C: the audio of "
             "the files TAGS lists, and nothing else on disk, with seeking.")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port (0: a free one).")] = 0,
) -> None:
    """A page to browse a tagged library: filter by instrument, status and path, see where each
    instrument plays, click a segment to listen from there."""
    import tempfile

    from instag.outputs.browse import build_site
    from instag.outputs.browse.serve import server

    if out is None and not serve:
        raise InstagError("where should the page go?", "give --out FOLDER, or --serve")
    with ExitStack() as stack:
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "site"
        site = build_site(checked_documents(tags_file), out, str(tags_file))
        console(stderr=True).print(
            f"{plural(site.files, 'file')} ({site.failed} failed) in {site.folder}: "
            f"{site.bytes / 1e6:.1f} MB; open {site.folder / 'index.html'}", markup=False)
        if serve:
            httpd = server(site.folder, site.audio, port)
            stack.callback(httpd.server_close)
            host, bound = httpd.server_address[:2]
            console().print(f"serving on http://{host}:{bound}/ (Ctrl-C stops)", markup=False)
            try:
                httpd.serve_forever()
            except KeyboardInterrupt:
                console(stderr=True).print("stopped", markup=False)
