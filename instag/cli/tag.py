"""`instag tag`: the main job's options, in panels, turned into one `jobs.Run` with its outputs.
An option that means something only with another is refused without it (never silently
ignored)."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    ADVANCED,
    ENGINE,
    FILE_TAGS,
    FILE_TO_WRITE,
    FOLDER_TO_WRITE,
    INPUT,
    MODEL,
    OUTPUTS,
    TAGS_TO_WRITE,
    CacheOpt,
    DeviceOpt,
    JobsOpt,
    PcaOpt,
    PrecisionOpt,
    ResamplerOpt,
    VggishOpt,
    console,
    expected_errors,
    refuse_without,
)
from instag.cli.progress import reporter_for, summary_line
from instag.cli.signals import stoppable
from instag.cli.tagging import (
    DryRunOpt,
    FileTimeoutOpt,
    FollowLinksOpt,
    InPlaceOpt,
    MaxDurationOpt,
    MergeGapOpt,
    MinSegmentOpt,
    SegmentsFormatOpt,
    StrictOpt,
    TagFieldOpt,
    TagSeparatorOpt,
    WaitOpt,
    WriteScoresOpt,
    exit_for,
    parse_duration,
    read_paths,
)
from instag.common.atomic import Changed
from instag.common.devices import Device
from instag.common.errors import InstagError, UsageError
from instag.engines.ray.pipeline import Engine
from instag.features.resample import DEFAULT_RESAMPLER
from instag.jobs.run import Run
from instag.outputs.exports import SegmentsFormat
from instag.outputs.pathlists import read_path_list
from instag.outputs.sinks import PlotFolder, SegmentsFolder, SummaryFile, TagsFile
from instag.outputs.writers import Format
from instag.tagging.bags import parse_bag_mode
from instag.tagging.options import STALL_TIMEOUT, TagOptions
from instag.tagging.segments import MERGE_GAP, MIN_SEGMENT
from instag.tagging.tagwriting import DEFAULT_FIELD, TagWriting
from instag.tagging.walk import parse_extensions


def panel(option, name: str):
    """A shared option type shown in `name`'s panel of `instag tag --help`."""
    base, info = typing.get_args(option)
    info = copy.copy(info)
    info.rich_help_panel = name
    return Annotated[base, info]


def opt(help: str, panel: str, **kwargs) -> typer.models.OptionInfo:  # noqa: A002
    return typer.Option(help=help, rich_help_panel=panel, **kwargs)


@expected_errors
def tag(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Music files or folders (recursive); '-' reads paths from stdin, one a "
             "line.", metavar="PATH...")] = None,
    paths_from: Annotated[Path | None, opt(
        "The files to tag, listed: a text file with one path a line, or a Parquet file with a "
        "`path` column (catalogues too large to walk from one machine).", INPUT)] = None,
    extensions: Annotated[str | None, opt(
        "Extensions to take, e.g. mp3,flac (default: common audio formats).", INPUT)] = None,
    ext: Annotated[str | None, opt("Old spelling of --extensions.", INPUT, hidden=True)] = None,
    hidden: Annotated[bool, opt("Also walk hidden files and folders.", INPUT)] = False,
    out: Annotated[Path, opt(
        "Output file: .csv, .json, .jsonl or .parquet, or a folder for a Parquet dataset (with "
        "--format parquet); '-' writes to standard output (CSV unless --format).",
        OUTPUTS, **TAGS_TO_WRITE)] = ...,  # required
    format: Annotated[Format | None, opt(  # noqa: A002 - the option's name
        "csv, json, jsonl or parquet (default: from --out's extension).", OUTPUTS)] = None,
    summary: Annotated[Path | None, opt(
        "Also write a CSV of one row per file for a person to read: path, status, instruments "
        "(\"guitar; voice\"), their probabilities, duration, reason.", OUTPUTS,
        **FILE_TO_WRITE)] = None,
    segments_out: Annotated[Path | None, opt(
        "Also write each tagged file's segments into this folder, one file per audio file, "
        "named after its path in the library (see --segments-format).", OUTPUTS,
        **FOLDER_TO_WRITE)] = None,
    segments_format: panel(SegmentsFormatOpt, OUTPUTS) = SegmentsFormat.JAMS,
    min_segment: panel(MinSegmentOpt, OUTPUTS) = MIN_SEGMENT,
    merge_gap: panel(MergeGapOpt, OUTPUTS) = MERGE_GAP,
    plot: Annotated[Path | None, opt(
        "Also draw Figure 4 (attention over the spectrogram) per file into this folder.",
        OUTPUTS, **FOLDER_TO_WRITE)] = None,
    timeline: Annotated[bool, opt(
        "With a .json or .jsonl --out: also each bag's per-instance probabilities and "
        "attention weights (~90 kB a four-minute song instead of ~1 kB; `instag plot` "
        "recomputes them from the cache when an output lacks them).", OUTPUTS)] = False,
    quiet: Annotated[bool, opt(
        "Print only news: a failure this run found, one line a file, or one line when the run "
        "cannot do its job. A run whose library has not changed prints nothing (for cron).",
        OUTPUTS)] = False,
    strict: panel(StrictOpt, OUTPUTS) = False,
    model: Annotated[Path | None, opt(
        "Scoring model (.onnx). Default: $INSTAG_MODEL, else the one `instag setup` "
        "installed.", MODEL)] = None,
    bag: Annotated[str, opt(
        "'full' (the whole file is one bag) or N instances per bag (10 = 9.6 s, OpenMIC's "
        "clips).", MODEL)] = "full",
    hop: Annotated[int | None, opt("With --bag N: instances between bag starts (default: N, "
                                   "no overlap).", MODEL, min=1)] = None,
    threshold: Annotated[float | None, opt(
        "Probability in [0, 1] at which every instrument is present (default: each "
        "instrument's threshold tuned at training, stored in the model; else 0.5).",
        MODEL)] = None,
    thresholds_file: Annotated[Path | None, opt(
        "Per-instrument thresholds from a file: JSON {name: t} or CSV name,t lines.",
        MODEL)] = None,
    thresholds: Annotated[Path | None, opt("Old spelling of --thresholds-file.", MODEL,
                                           hidden=True)] = None,
    vggish: panel(VggishOpt, MODEL) = None,
    pca: panel(PcaOpt, MODEL) = None,
    engine: Annotated[Engine, opt(
        "local: this machine (decode pool + cache); ray: a Ray cluster (see the docs: "
        "clusters).", ENGINE)] = Engine.LOCAL,
    ray_address: Annotated[str | None, opt(
        "With --engine ray: the cluster to use (auto, ray://HOST:10001); default "
        "$RAY_ADDRESS, else a Ray started on this machine for the run.", ENGINE)] = None,
    jobs: panel(JobsOpt, ENGINE) = None,
    cache: panel(CacheOpt, ENGINE) = None,
    wait: panel(WaitOpt, ENGINE) = False,
    write_tags: Annotated[bool, opt(
        "Also write the instruments into each file's own tags (INSTRUMENTS). Atomic: a copy "
        "is tagged and renamed over the file.", FILE_TAGS)] = False,
    write_scores: panel(WriteScoresOpt, FILE_TAGS) = False,
    tag_field: panel(TagFieldOpt, FILE_TAGS) = DEFAULT_FIELD,
    tag_separator: panel(TagSeparatorOpt, FILE_TAGS) = None,
    follow_links: panel(FollowLinksOpt, FILE_TAGS) = None,
    in_place: panel(InPlaceOpt, FILE_TAGS) = False,
    dry_run: panel(DryRunOpt, FILE_TAGS) = False,
    device: panel(DeviceOpt, ADVANCED) = Device.AUTO,
    precision: panel(PrecisionOpt, ADVANCED) = None,
    resampler: panel(ResamplerOpt, ADVANCED) = DEFAULT_RESAMPLER,
    file_timeout: panel(FileTimeoutOpt, ADVANCED) = STALL_TIMEOUT,
    max_duration: panel(MaxDurationOpt, ADVANCED) = "12h",
    force: Annotated[bool, opt("Recompute everything, ignoring the cache (with --engine ray: "
                               "the previous output).", ADVANCED)] = False,
) -> None:
    """Tag instruments in music files; every file gets a row, failed ones with the reason.

    Exit codes: 0 all files tagged (or failed as they did in an earlier run, unless --strict),
    1 some files failed in this run, 2 usage or setup error (nothing written), 130
    interrupted, 143 terminated (previous output kept).
    """
    extensions, thresholds_file = _old_spellings(ext, extensions, thresholds, thresholds_file)
    fmt_text = str(format.value if format else Path(out).suffix.lstrip(".")).lower()
    local = engine is Engine.LOCAL
    refuse_without(ctx, {
        **{name: (write_tags, "--write-tags") for name in (
            "write_scores", "tag_field", "tag_separator", "follow_links", "in_place",
            "dry_run")},
        "segments_format": (segments_out is not None, "--segments-out"),
        "ray_address": (not local, "--engine ray"),
        **{name: (local, "--engine local") for name in ("jobs", "cache", "wait")},
        "hop": (bag != "full", "--bag N"),
        "timeline": (fmt_text in ("json", "jsonl"), "a .json or .jsonl --out"),
    })
    opts = TagOptions(
        model=model, vggish=vggish, pca=pca, resampler=resampler,
        bag=parse_bag_mode(bag), hop=hop, threshold=threshold,
        thresholds_file=thresholds_file, device=device, jobs=jobs, file_timeout=file_timeout,
        max_duration=parse_duration(max_duration, "--max-duration"), cache=cache, force=force,
        extensions=parse_extensions(extensions) or extensions, hidden=hidden, wait=wait,
        precision=precision, min_segment=min_segment, merge_gap=merge_gap,
        write_tags=TagWriting(tag_field, write_scores, in_place, dry_run, tag_separator,
                              follow_links) if write_tags else None,
    )
    if bool(paths) == bool(paths_from):
        raise InstagError("give the music as PATHS or as --paths-from FILE (one of them)",
                          "see instag tag --help")
    # a list of files (a file of them, or stdin): a missing one is that file's result
    listed = bool(paths_from) or [str(p) for p in paths or []] == ["-"]
    paths = read_path_list(paths_from) if paths_from else read_paths(paths)
    tags_file = TagsFile(out, format, timeline)
    outputs = [*([SegmentsFolder(segments_out, segments_format)] if segments_out else []),
               tags_file, *([SummaryFile(summary)] if summary else []),
               *([PlotFolder(plot)] if plot else [])]  # put in place last to first
    run = Run(paths, opts, outputs, engine=engine, address=ray_address,
              reporter=reporter_for(quiet, "tagging"), inputs=[paths_from] if paths_from else [],
              listed=listed)
    try:
        kept = "previous output kept" if out.exists() else "no output written"
        with stoppable(run.engine_run, kept) as stop:
            run.before_commit = stop.hold  # the outputs go into place: the exit code stands
            run.run()
    except Changed as e:  # another program wrote an output while the run went
        raise InstagError(f"{e}; nothing put in place, the previous outputs kept",
                          "run again once the other program is done") from None
    except BrokenPipeError:  # `instag tag ... --out - | head`: the reader left
        raise InstagError("--out -: the program reading standard output closed it",
                          "read the whole output, or write it to a file") from None
    except OSError as e:  # the output itself: a full disk, a disk gone read-only
        raise InstagError(f"--out {out}: cannot write ({e.strerror or e})",
                          "free some space or write elsewhere; the previous output is "
                          "untouched") from None
    if not quiet:  # after the progress bar is gone (quiet: only news; the exit code says the rest)
        console(stderr=True).print(f"{summary_line(run.counts, 'tagged')}. Wrote "
                                   f"{tags_file.where}", markup=False)
    exit_for(run.counts, strict, run.files_not_written)


def _old_spellings(ext, extensions, thresholds, thresholds_file):
    """--ext and --thresholds, the old spellings, still work for one release, with a line."""
    err = console(stderr=True)
    for flag, old_value, new, new_value in (("--ext", ext, "--extensions", extensions), (
            "--thresholds", thresholds, "--thresholds-file", thresholds_file)):
        if old_value is not None and new_value is not None:
            raise UsageError(f"{flag} and {new}: {flag} is the old spelling of {new}",
                             f"give {new} alone")
    if ext is not None:
        err.print("note: --ext is now --extensions (--ext goes in the next release)",
                  markup=False)
        extensions = extensions or ext
    if thresholds is not None:
        err.print("note: --thresholds is now --thresholds-file (--thresholds goes in the next "
                  "release)", markup=False)
        thresholds_file = thresholds_file or thresholds
    return extensions, thresholds_file
