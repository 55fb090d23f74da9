"""The `instag` command line: parse options, call the library, print, set the exit code.

Heavy libraries (torch, tensorflow, onnxruntime) are imported inside the library functions, so
`instag --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from instag.errors import InstagError

app = typer.Typer(
    help="Recognise musical instruments in music libraries (Gururani, Sharma & Lerch, ISMIR 2019).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_SOME_FAILED, EXIT_USAGE = 1, 2  # 0: everything worked


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)  # paths never break


def expected_errors(fn):
    """Turn an InstagError into one clear message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InstagError as e:
            _console(stderr=True).print(f"[bold red]error:[/] {e}", markup=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper


Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]


@app.command()
@expected_errors
def train(
    openmic: Annotated[Path, typer.Option(help="OpenMIC-2018 directory (or one in its layout).")],
    out: Annotated[Path, typer.Option(help="Run directory to write (one sub-directory per seed "
                                           "with --seeds).")],
    model: Annotated[str, typer.Option(help="att, fc_t, fc, rnn or rf.")] = "att",
    epochs: int = 250,
    batch_size: int = 128,
    lr: Annotated[float | None, typer.Option(help="Default: 5e-4 (fc: 1e-4).")] = None,
    seed: int = 0,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, one run each.")] = None,
    device: Device = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train one of the paper's models on OpenMIC-2018 with the paper's recipe."""
    from instag.data import load_openmic
    from instag.train import Recipe, train_run

    seed_list = _parse_seeds(seeds) if seeds else [seed]
    data = load_openmic(openmic)
    console = _console()
    for s in seed_list:
        run_dir = out / f"seed-{s}" if seeds else out
        recipe = Recipe(model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=s,
                        device=device)
        metrics = train_run(data, recipe, run_dir, progress=not quiet and sys.stderr.isatty())
        o = metrics["overall"]
        if metrics.get("interrupted"):
            console.print(f"interrupted: kept the best checkpoint so far (epoch "
                          f"{metrics['best_epoch']}) in {run_dir}")
        console.print(f"{model} seed {s}: test F1 {o['f1']:.3f}  P {o['precision']:.3f}  "
                      f"R {o['recall']:.3f}  mAP {o['map']:.3f}  -> {run_dir}")
        if metrics.get("interrupted"):
            raise typer.Exit(130)


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InstagError(f"--seeds {text!r}: expected comma-separated integers",
                          "e.g. --seeds 0,42") from None


@app.command()
@expected_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `instag train`.")],
    openmic: Annotated[Path | None, typer.Option(help="Data set (default: the run's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Where to write the metrics "
                                                     "(default RUN_DIR/evaluation.json).")] = None,
    device: Device = "cpu",
) -> None:
    """Score a trained run on its test split with the paper's metrics and mAP."""
    from rich.table import Table

    from instag.atomic import atomic_write
    from instag.report import evaluate_run
    from instag.train import resolve_device

    doc = evaluate_run(run_dir, openmic, resolve_device(device))
    table = Table(title=f"{doc['model']} (seed {doc['seed']}) on {doc['data_dir']}")
    for col in ("instrument", "observed", "P", "R", "F1", "F1+", "AP"):
        table.add_column(col, justify="left" if col == "instrument" else "right")
    for name, r in doc["per_class"].items():
        vals = [f"{r[k]:.3f}" if k in r else "-" for k in
                ("precision", "recall", "f1", "f1_positive", "ap")]
        table.add_row(name, str(r["n_observed"]), *vals)
    o = doc["overall"]
    table.add_row("[bold]mean[/]", "", *(f"{o[k]:.3f}" for k in
                                          ("precision", "recall", "f1", "f1_positive", "map")))
    _console().print(table)
    path = json_out or run_dir / "evaluation.json"
    with atomic_write(path) as f:
        json.dump(doc, f, indent=2)
    _console().print(f"wrote {path}")


@app.command()
@expected_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (searched recursively).")],
    png: Annotated[Path, typer.Option(help="Per-instrument F1 figure.")] = Path("report.png"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary.")] = None,
) -> None:
    """Compare runs: mean ± std over seeds per model, and a per-instrument F1 figure."""
    from rich.table import Table

    from instag.atomic import atomic_write
    from instag.report import SUMMARY_KEYS, load_metrics, plot_per_class_f1, summarise

    docs = load_metrics(run_dirs)
    summary = summarise(docs)
    table = Table(title="test metrics, mean ± std over runs")
    table.add_column("model")
    table.add_column("runs", justify="right")
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    for model, row in summary.items():
        table.add_row(model, str(row["runs"]),
                      *(f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in SUMMARY_KEYS))
    _console().print(table)
    plot_per_class_f1(docs, png)
    _console().print(f"wrote {png}")
    if json_out:
        with atomic_write(json_out) as f:
            json.dump(summary, f, indent=2)


VggishOpt = Annotated[str | None, typer.Option(
    "--vggish", help="VGGish hub URL or local SavedModel dir (default: $INSTAG_VGGISH, else the "
                     "official tfhub.dev model).")]
PcaOpt = Annotated[Path | None, typer.Option(
    "--pca", help="vggish_pca_params.npz (default: $INSTAG_PCA, else the official file, fetched "
                  "once and checksum-verified).")]
ResamplerOpt = Annotated[str, typer.Option(
    help="resampy (VGGish's reference, default) or soxr (~90x faster, moves the top two mel "
         "bands by ~3 dB; see README).")]


@app.command()
@expected_errors
def embed(
    paths: Annotated[list[Path], typer.Argument(help="Audio files or folders (recursive).")],
    out: Annotated[Path, typer.Option(help="Features file to write (.npz).")],
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    clips: Annotated[int | None, typer.Option(
        help="Cut into clips of N instances in OpenMIC's npz layout (10 = OpenMIC).")] = None,
    resampler: ResamplerOpt = "resampy",
    quiet: bool = False,
) -> None:
    """Turn audio files into OpenMIC-style VGGish features (uint8, 0.96 s instances)."""
    from instag.audio import RESAMPLERS, AudioError
    from instag.embed import Embedder
    from instag.featurefile import write_features
    from instag.walk import walk

    if resampler not in RESAMPLERS:
        raise InstagError(f"--resampler {resampler}: choose from {', '.join(RESAMPLERS)}")
    if clips is not None and clips < 1:
        raise InstagError(f"--clips {clips}: must be a positive number of instances")
    err = _console(stderr=True)
    embedder = Embedder(vggish, pca, resampler)
    done, failed = [], []
    for path in walk(paths, on_error=lambda p, why: failed.append((p, why))):
        try:
            feats = embedder.embed_file(path)
        except AudioError as e:
            failed.append((path, e.reason))
            err.print(f"{e.status}: {e}", markup=False)
            continue
        done.append((path, feats))
        if not quiet:
            err.print(f"{len(feats.values):5d} instances  {path}", markup=False)
    counts = write_features(out, done, failed, clips)
    what = f"{counts['rows']} clips" if clips else f"{counts['rows']} instances"
    _console().print(f"wrote {out}: {what} from {counts['files']} files, "
                     f"{counts['failed']} failed", markup=False)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command("export-onnx")
@expected_errors
def export_onnx(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `instag train`.")],
    out: Annotated[Path | None, typer.Option(
        help="Where to write the .onnx (default: export/ in a checkout, else the user data "
             "directory); the model card goes beside it as .json.")] = None,
) -> None:
    """Export a trained att, fc_t, rnn or fc model to ONNX for tagging."""
    from instag.export import export_run

    path = export_run(run_dir, out)
    _console().print(f"wrote {path} and {path.with_suffix('.json')}", markup=False)


class _LogReporter:
    """Plain lines for cron logs: every failure, a progress line every 30 s (not with quiet)."""

    def __init__(self, quiet: bool) -> None:
        import time

        self.clock = time.monotonic
        self.quiet = quiet
        self.err = _console(stderr=True)
        self.last = self.start = self.clock()

    def started(self, summary, provider: str) -> None:
        if not self.quiet:
            self.err.print(f"tagging {summary.total} files (scoring on {provider})", markup=False)

    def file_done(self, result, summary) -> None:
        if not result.ok:
            self.err.print(f"{result.status}: {result.display_path}: {result.reason}",
                           markup=False)
        self.show_progress(summary)

    def show_progress(self, summary) -> None:
        if not self.quiet and self.clock() - self.last > 30:
            self.last = self.clock()
            self.err.print(f"{summary.done}/{summary.total} files, "
                           f"{summary.audio_s / 3600:.2f} h of audio", markup=False)

    def close(self) -> None:
        pass


class _RichReporter(_LogReporter):
    """The same, with a progress bar on a terminal: files, hours of audio, files/s, ETA."""

    def started(self, summary, provider: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        super().started(summary, provider)
        self.progress = Progress(
            TextColumn("[bold]tagging"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[hours]:.2f} h audio"), TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(), console=self.err)
        self.task = self.progress.add_task("tag", total=summary.total, hours=0.0, rate="")
        self.progress.start()

    def show_progress(self, summary) -> None:
        rate = summary.done / max(self.clock() - self.start, 1e-9)
        self.progress.update(self.task, completed=summary.done, hours=summary.audio_s / 3600,
                             rate=f"{rate:.1f} files/s")

    def close(self) -> None:
        if hasattr(self, "progress"):
            self.progress.stop()


def _read_stdin_paths() -> list[Path]:
    """`find ... | instag tag -`: one path a line, bytes kept as they are."""
    import os

    return [Path(os.fsdecode(line.rstrip(b"\r\n"))) for line in sys.stdin.buffer
            if line.strip()]


@app.command()
@expected_errors
def tag(
    paths: Annotated[list[Path], typer.Argument(
        help="Music files or folders (recursive); '-' reads paths from stdin, one a line.")],
    out: Annotated[Path, typer.Option(help="Output file: .csv, .json or .jsonl.")],
    format: Annotated[str | None, typer.Option(
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
    device: Device = "auto",
    jobs: Annotated[int | None, typer.Option(help="Decoding processes (default: CPUs).")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="SQLite cache of features and scores (default: in the user cache dir).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute everything, ignoring the cache.")] = False,
    wait: Annotated[bool, typer.Option(help="If another run holds the cache, wait for it "
                                            "instead of exiting.")] = False,
    ext: Annotated[str | None, typer.Option(help="Extensions to take, e.g. mp3,flac "
                                                 "(default: common audio formats).")] = None,
    hidden: Annotated[bool, typer.Option(help="Also walk hidden files and folders.")] = False,
    resampler: ResamplerOpt = "resampy",
    plot: Annotated[Path | None, typer.Option(
        help="Also draw Figure 4 (attention over the spectrogram) per file into this "
             "folder.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar or progress lines; failures and "
                                             "the summary only.")] = False,
) -> None:
    """Tag instruments in music files; every file gets a row, failed ones with the reason.

    Exit codes: 0 all files tagged, 1 some files failed, 2 usage or setup error.
    """

    from instag import assets
    from instag.audio import RESAMPLERS
    from instag.bags import parse_bag_mode
    from instag.outputs import FORMATS, format_for, result_writer
    from instag.tagger import TagOptions
    from instag.tagger import tag as run_tag
    from instag.walk import parse_extensions

    fmt = format_for(out, format)
    if fmt not in FORMATS:
        raise InstagError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if resampler not in RESAMPLERS:
        raise InstagError(f"--resampler {resampler}: choose from {', '.join(RESAMPLERS)}")
    if hop is not None and hop < 1:
        raise InstagError(f"--hop {hop}: must be a positive number of instances")
    if str(paths[0]) == "-" and len(paths) == 1:
        paths = _read_stdin_paths()
    opts = TagOptions(
        model=assets.resolve_model(model), vggish=vggish, pca=pca, resampler=resampler,
        bag_size=parse_bag_mode(bag), hop=hop, threshold=threshold, thresholds_file=thresholds,
        device=device, jobs=jobs, cache=cache, force=force,
        extensions=parse_extensions(ext), include_hidden=hidden, wait=wait,
    )
    reporter = _RichReporter(quiet) if sys.stderr.isatty() and not quiet else _LogReporter(quiet)
    run_info = {"model": str(opts.model), "bag": bag, "threshold": threshold}
    try:
        with result_writer(out, fmt, run_info) as write:
            sink = write if plot is None else _with_plot(write, plot)
            summary = run_tag(paths, opts, sink, reporter)
    finally:
        reporter.close()
    text = f"{summary.ok} of {summary.done} files tagged ({summary.from_cache} from cache)"
    if summary.failed:
        text += "; failed: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.failed.items()))
    _console(stderr=True).print(f"{text}. Wrote {out}", markup=False)
    if summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _with_plot(write, folder: Path):
    """A result sink that also draws Figure 4 for each tagged file into `folder`."""
    import itertools

    from instag.outputs import file_document
    from instag.plot import plot_file

    count = itertools.count()

    def sink(result) -> None:
        write(result)
        if result.ok:
            name = f"{next(count):05d}-{Path(result.display_path).stem}.png"
            plot_file(file_document(result), folder / name, resampler="soxr")

    return sink


@app.command("plot")
@expected_errors
def plot_cmd(
    tags_json: Annotated[Path, typer.Argument(help="A .json or .jsonl from `instag tag`.")],
    file: Annotated[str | None, typer.Option(help="Which file (its path as in the JSON); "
                                                  "default: the first tagged one.")] = None,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("attention.png"),
) -> None:
    """Draw the paper's Figure 4 for a tagged file: attention over its mel spectrogram."""
    from instag.plot import load_file_doc, plot_file

    path = plot_file(load_file_doc(tags_json, file), out)
    _console().print(f"wrote {path}", markup=False)


def _download_progress():
    """A rich progress bar for downloads on a terminal; None (no bar) otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                   console=_console(stderr=True))
    task = bar.add_task("download", total=None)
    bar.start()

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


@app.command()
@expected_errors
def setup(
    openmic: Annotated[Path | None, typer.Option(
        help="An OpenMIC-2018 archive (.tgz) or extracted directory you already have.")] = None,
    offline: Annotated[bool, typer.Option(help="Never touch the network; say what is "
                                               "missing.")] = False,
    seeds: Annotated[str, typer.Option(help="Seeds to train; the best validation loss is "
                                            "kept.")] = "0",
    epochs: int = 250,
    device: Device = "auto",
    vggish: VggishOpt = None,
) -> None:
    """Provision a new machine: VGGish, PCA, OpenMIC-2018, and a trained, exported model.

    Sources and places are configurable by environment: INSTAG_OPENMIC_URL, INSTAG_PCA_URL,
    INSTAG_CACHE_DIR, INSTAG_DATA_DIR, TFHUB_CACHE_DIR. Re-running skips finished steps.
    """
    from instag.provision import SetupOptions
    from instag.provision import setup as run_setup

    opts = SetupOptions(openmic=openmic, offline=offline, seeds=tuple(_parse_seeds(seeds)),
                        epochs=epochs, device=device, vggish=vggish)
    progress, stop = _download_progress()
    console = _console()
    try:
        model = run_setup(opts, say=lambda m: console.print(m, markup=False),
                          progress=progress)
    finally:
        stop()
    console.print(f"\nReady. Next:\n  instag tag ~/Music --out tags.csv\n(scoring model: {model})",
                  markup=False)


@app.command()
@expected_errors
def doctor(
    model: Annotated[Path | None, typer.Option(help="Scoring model to check.")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
) -> None:
    """Show versions, GPU support, directories and models; exit 2 if `instag tag` can't run."""
    from rich.table import Table

    from instag.doctor import diagnose

    checks = diagnose(str(model) if model else None, vggish, str(pca) if pca else None)
    table = Table(title="instag doctor", show_lines=False)
    table.add_column("")
    table.add_column("what")
    table.add_column("value", overflow="fold")  # paths are what one looks for: never cut them
    marks = {True: "[green]ok[/]", False: "[red]no[/]", None: ""}
    for c in checks:
        table.add_row(marks[c.ok], f"{c.section}: {c.item}", c.value)
    _console().print(table)
    blocking = [c for c in checks if c.blocks_tagging]
    if blocking:
        _console(stderr=True).print("instag tag cannot run: " + "; ".join(
            f"{c.item}: {c.value}" for c in blocking), markup=False)
        raise typer.Exit(EXIT_USAGE)
    _console().print("instag tag can run.")
