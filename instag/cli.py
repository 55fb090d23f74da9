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

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def expected_errors(fn):
    """Turn an InstagError into one clear message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InstagError as e:
            _console(stderr=True).print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
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
