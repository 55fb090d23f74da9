"""Commands that show a tagged library: `plot` (the paper's Figure 4 of a file, as a PNG)
and `browse` (a page of the library, each file's Figure 4 in it)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Annotated

import typer

from instag.cli.console import (
    EXIT_SOME_FAILED,
    FILE_TO_WRITE,
    FOLDER_TO_WRITE,
    CacheOpt,
    PcaOpt,
    VggishOpt,
    console,
    expected_errors,
)
from instag.cli.progress import plural
from instag.cli.tagging import MergeGapOpt, MinSegmentOpt, TagsFileArg, segment_rule
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.targets import claim_file, png_by_instag
from instag.jobs.views import FileViews, Spool, chosen, served
from instag.outputs.plot import MAX_COLUMNS, load_file_doc, plot_file
from instag.outputs.readback import checked_documents, read_documents, resegmented
from instag.outputs.writers import check_writable
from instag.tagging.options import TagOptions
from instag.tagging.results import audio_path

FigureModelOpt = Annotated[Path | None, typer.Option(
    help="The scoring model that tagged the files, to recompute their attention when the "
         "output has no timeline (default: as for `instag tag`).")]


@expected_errors
def plot(
    tags_file: TagsFileArg,
    file: Annotated[str | None, typer.Option(help="Which file (its path, spelled any way: "
                                                  "relative, absolute, through a link); "
                                                  "default: the first tagged one.")] = None,
    audio: Annotated[Path | None, typer.Option(
        help="The audio file to draw the spectrogram from, when it is not where the output "
             "says (moved or copied since, or the output has a relative path).")] = None,
    out: Annotated[Path, typer.Option(help="PNG to write.", **FILE_TO_WRITE)
                   ] = Path("attention.png"),
    model: FigureModelOpt = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    cache: CacheOpt = None,
    min_segment: MinSegmentOpt = None,
    merge_gap: MergeGapOpt = None,
) -> None:
    """Draw the paper's Figure 4 for a tagged file: attention over the log-mel spectrogram
    VGGish heard.

    An output written without --timeline (CSV, Parquet, compact JSON/JSONL) has no attention
    weights: they are recomputed from the file's features in the cache, with the model."""
    require("matplotlib")  # the `plot` extra: said before anything is read
    doc = resegmented(load_file_doc(tags_file, file), segment_rule(min_segment, merge_gap))
    if file is None:  # the user did not say which: say which it is, and how to pick another
        console(stderr=True).print(f"drawing {doc['path']} (the first tagged file; --file "
                                   "picks another)", markup=False)
    target = claim_file(out, "--out", png_by_instag,
                        [tags_file, audio or audio_path(doc["path"])])
    views = FileViews(TagOptions(model=model, vggish=vggish, pca=pca, cache=cache))
    doc = views.timeline(doc, audio)
    spectrogram = views.spectrogram(doc, MAX_COLUMNS, audio=audio)
    check_writable(out.parent, f"--out {out}")
    path = plot_file(doc, out, spectrogram, replaces=target.replaces)
    console().print(f"wrote {path}", markup=False)



def _same_audio_in(cache_path: Path):
    """`browse --serve`'s test of a file changed since it was tagged: the same audio if the
    cache remembers instag's own tag writes making it so (as `write-tags` checks). A cache
    opened per question: the server asks from its threads, and a connection is one thread's."""
    import threading

    from instag.engines.local.cache import Cache
    from instag.tagging.identity import FileKey

    one_at_a_time = threading.Lock()

    def same_audio(path: Path, was: tuple[int, int], now: tuple[int, int]) -> bool:
        if not cache_path.is_file():
            return False
        key = os.fsencode(path.resolve())
        with one_at_a_time:
            try:
                with Cache(cache_path) as cache:
                    return cache.same_audio(FileKey(key, *was), FileKey(key, *now))
            except (InstagError, OSError, sqlite3.Error):
                return False

    return same_audio


@expected_errors
def browse(
    tags_file: TagsFileArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder to write the page into (open its index.html in a browser). Default with "
             "--serve: a temporary folder.", **FOLDER_TO_WRITE)] = None,
    serve: Annotated[bool, typer.Option(
        help="Also serve it on 127.0.0.1 (a free port, printed with its token) until Ctrl-C: "
             "the page, and the audio of the files TAGS lists as tagged while they are the "
             "audio tagged; nothing else on disk.")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port (0: a free one).")] = 0,
    view: Annotated[list[str] | None, typer.Option(
        help="Include this file's view (the paper's Figure 4: its spectrogram and attention) "
             "in the site: its path as TAGS lists it, spelled any way; repeat for more. "
             "--serve makes any file's view when it is opened.", metavar="FILE")] = None,
    model: FigureModelOpt = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    cache: CacheOpt = None,
    min_segment: MinSegmentOpt = None,
    merge_gap: MergeGapOpt = None,
) -> None:
    """A page to browse a tagged library: filter by instrument, status and text (artist, title,
    album, path), see where each instrument plays, click a segment to listen from there, open
    a file to see what the model heard (its spectrogram and each instrument's attention, as the
    paper's Figure 4)."""
    import tempfile

    from instag.outputs.browse import build_site
    from instag.outputs.browse.serve import server

    rule = segment_rule(min_segment, merge_gap)
    views = FileViews(TagOptions(model=model, vggish=vggish, pca=pca, cache=cache),
                      "tag it again where it is now, then browse again")
    if out is None and not serve:
        raise InstagError("where should the page go?", "give --out FOLDER, or --serve")
    if serve and (model or vggish or pca):
        views.options.resolve()  # a model, VGGish or PCA given is checked now, not per view
    failed: list[str] = []

    def documents() -> Iterator[dict]:
        return (resegmented(d, rule) for d in checked_documents(tags_file))

    with ExitStack() as stack:
        kept = out is not None  # else a temporary site, gone when the server stops
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "site"
        spool = stack.enter_context(closing(Spool())) if serve else None
        chosen_views = chosen(views, view, read_documents(tags_file), failed.append) \
            if view else None
        site = build_site(spool.through(documents()) if spool else documents(), out,
                          str(tags_file), chosen_views)
        for line in failed:
            console(stderr=True).print(line, markup=False)
        where = f" in {site.folder}: {site.bytes / 1e6:.1f} MB; open " \
            f"{site.folder / 'index.html'}" if kept else ""
        views_said = f", {plural(len(site.views), 'view')}" if view else ""
        console(stderr=True).print(f"{plural(site.files, 'file')} ({site.failed} failed"
                                   f"{views_said}){where}", markup=False)
        if serve:
            httpd = server(site.folder, site.audio, port,
                           _same_audio_in(views.options.cache_path()), served(views, spool))
            stack.callback(httpd.server_close)
            console().print(f"open {httpd.url} in a browser (Ctrl-C stops)", markup=False)
            try:
                httpd.serve_forever()
            except KeyboardInterrupt:
                console(stderr=True).print("stopped", markup=False)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)
