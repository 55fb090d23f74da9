"""Commands for tagging a library: tag, plot, embed; and the progress they print."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    EXIT_SOME_FAILED,
    FILE_TO_WRITE,
    FOLDER_TO_WRITE,
    CacheOpt,
    FeaturePrecisionOpt,
    JobsOpt,
    PcaOpt,
    ResamplerOpt,
    VggishOpt,
    console,
    expected_errors,
)
from instag.cli.progress import file_tags_line, plural, reporter_for, summary_line
from instag.cli.signals import stoppable, stopping
from instag.common.errors import InstagError
from instag.common.guard.inputs import stdin_lines
from instag.engines.local.retag import retag
from instag.engines.local.run import embed as embed_run
from instag.features.featurefile import is_feature_file, write_features
from instag.features.resample import DEFAULT_RESAMPLER
from instag.outputs.exports import SegmentsFormat, SegmentsWriter, library_root
from instag.outputs.filetags import Outcome
from instag.outputs.readback import (
    checked_documents,
    read_documents,
    read_run_info,
    resegmented,
)
from instag.outputs.sinks import check_folder
from instag.outputs.writers import (
    check_output,
)
from instag.tagging.counts import RunCounts
from instag.tagging.options import STALL_TIMEOUT, TagOptions
from instag.tagging.results import audio_path, display_path
from instag.tagging.segments import MERGE_GAP, MIN_SEGMENT, SegmentRule
from instag.tagging.tagwriting import DEFAULT_FIELD, TagWriting
from instag.tagging.walk import check_roots


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
REDERIVED = (" With export, browse or plot: the files' segments are made again from their bags' "
             "(default there: as the output holds them).")
MinSegmentOpt = Annotated[float | None, typer.Option(
    help="Seconds: a file's segments shorter than this are dropped, once --merge-gap has "
         "closed the gaps (an instrument present keeps its longest)." + REDERIVED)]
MergeGapOpt = Annotated[float | None, typer.Option(
    help="Seconds: a file's segments at most this far apart are one." + REDERIVED)]


def segment_rule(min_segment: float | None, merge_gap: float | None) -> SegmentRule | None:
    """The rule export, browse and plot re-derive segments by; None: the output's own."""
    if min_segment is None and merge_gap is None:
        return None
    return SegmentRule(MIN_SEGMENT if min_segment is None else min_segment,
                       MERGE_GAP if merge_gap is None else merge_gap)
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
FollowLinksOpt = Annotated[bool | None, typer.Option(
    "--follow-links/--no-follow-links",
    help="A symlinked file: by default its target is tagged (the link stays a link) while it "
         "is in the library, and a link out of it is `unsupported`; --follow-links writes "
         "through any link, --no-follow-links through none.")]
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
                                                 ".jsonl or .parquet.", metavar="TAGS")]
StrictOpt = Annotated[bool, typer.Option(
    help="Exit 1 for any failed file, also one that failed the same way in an earlier run "
         "(by default those are listed but exit 0: a nightly job mails only news).")]


def _note(line: str) -> None:
    console(stderr=True).print(line, markup=False)


def exit_for(counts: RunCounts, strict: bool, not_written: int = 0) -> None:
    """Exit 1 when files (their own tags, or their files in an output folder) failed in this
    run (with --strict: any failed file); else the command's exit code stands."""
    if failed_exit(counts, strict) or counts.tags_failed or not_written:
        raise typer.Exit(EXIT_SOME_FAILED)


def failed_exit(counts: RunCounts, strict: bool) -> bool:
    """Exit 1: a failure this run computed (a retryable one, such as `timeout`, is computed by
    every run), or with --strict any failure."""
    return bool(counts.failed_now or (strict and counts.failed))


@expected_errors
def embed(
    paths: Annotated[list[Path], typer.Argument(
        help="Audio files or folders (recursive); '-' reads paths from stdin, one a line.",
        metavar="PATH...")],
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).",
                                      **FILE_TO_WRITE)],
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    clips: Annotated[int | None, typer.Option(
        min=1, help="Cut into clips of N instances in OpenMIC's npz layout (10 = "
                    "OpenMIC).")] = None,
    resampler: ResamplerOpt = DEFAULT_RESAMPLER,
    precision: FeaturePrecisionOpt = None,
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
                      file_timeout=file_timeout,
                      max_duration=parse_duration(max_duration, "--max-duration"), cache=cache,
                      wait=wait)
    paths = read_paths(paths)
    if out.suffix.lower() != ".npz":
        raise InstagError(f"--out {out}: features are written as an .npz",
                          f"name it e.g. {out.stem.strip('.') or 'features'}.npz")
    target = check_output(out, paths, opts.protected_paths(), opts.extensions,
                          ours=is_feature_file)
    run = embed_run(paths, opts, reporter_for(quiet, "embedding"))
    done, failed = [], []
    with stoppable(run, "nothing written"):
        for result in run:
            if result.ok:
                done.append((result.path, result.features))
            else:
                failed.append((result.path, result.reason))
    try:
        counts = write_features(out, done, failed, clips, target.replaces)
    except OSError as e:
        raise InstagError(f"--out {out}: cannot write ({e.strerror or e})",
                          "free some space or write elsewhere") from None
    what = f"{counts['rows']} clips" if clips else f"{counts['rows']} instances"
    console(stderr=True).print(f"{summary_line(run.counts, 'embedded')}. Wrote {out}: {what}",
                               markup=False)
    if failed_exit(run.counts, strict):
        raise typer.Exit(EXIT_SOME_FAILED)


@expected_errors
def write_tags(
    tags_file: TagsFileArg,
    remove: Annotated[bool, typer.Option(help="Remove instag's fields (the instruments field "
                                              "and INSTAG_* scores) instead.")] = False,
    write_scores: WriteScoresOpt = False,
    tag_field: TagFieldOpt = DEFAULT_FIELD,
    tag_separator: TagSeparatorOpt = None,
    follow_links: FollowLinksOpt = None,
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
        library = library_root(audio_path(d["path"]) for d in docs if d["status"] == "ok")
        for path, change in retag(docs, writing, remove, TagOptions(cache=cache).cache_path(),
                                  wait, within=[library]):
            counts[change.outcome] = counts.get(change.outcome, 0) + 1
            if change.outcome is not Outcome.UNCHANGED:
                err.print(f"{display_path(path)}: {change.describe()}", markup=False)
    err.print(file_tags_line(counts) or "no tagged files in it", markup=False)
    if counts.get(Outcome.FAILED):
        raise typer.Exit(EXIT_SOME_FAILED)


@expected_errors
def export(
    tags_file: TagsFileArg,
    out: Annotated[Path, typer.Option(help="Folder to write into: one file per tagged audio "
                                           "file, named after its path in the library.",
                                      **FOLDER_TO_WRITE)],
    format: SegmentsFormatOpt = SegmentsFormat.JAMS,
    root: Annotated[Path | None, typer.Option(
        help="The library folder the names are made relative to (default: the deepest folder "
             "holding every file of TAGS).")] = None,
    min_segment: MinSegmentOpt = None,
    merge_gap: MergeGapOpt = None,
) -> None:
    """Write each tagged file's segments as JAMS, Audacity labels or a Sonic Visualiser layer.

    jams: a .jams annotation (namespace tag_open) per file; audacity: a .txt label track
    (File > Import > Labels); sv: a .csv of time,value,duration,label (File > Import
    Annotation Layer). Read as a stream: any size of output."""
    rule = segment_rule(min_segment, merge_gap)
    check_folder(out, "--out")
    if root is None:  # a first pass over the paths alone, which checks every document
        root = library_root(audio_path(d["path"]) for d in read_documents(tags_file)
                            if d.get("status") == "ok")
    else:
        checked_documents(tags_file)  # in full, before the first file is written
    writer = SegmentsWriter(out, format, root, read_run_info(tags_file), note=_note)
    try:
        with stopping(lambda: "nothing written, the previous files kept"), writer.staged():
            for doc in read_documents(tags_file):
                writer(resegmented(doc, rule))
    except OSError as e:
        raise InstagError(f"--out {out}: cannot write ({e.strerror or e})",
                          "free some space or write elsewhere; the previous files are "
                          "untouched") from None
    console(stderr=True).print(f"{plural(writer.written, 'file')} of segments written into "
                               f"{out}" + (f", {writer.failed} not written" if writer.failed
                                           else ""), markup=False)
    if writer.failed:
        raise typer.Exit(EXIT_SOME_FAILED)
