"""Commands for reproducing the paper: train, evaluate, report, export-onnx."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from instag.cli.console import (
    FILE_TO_WRITE,
    FOLDER_TO_WRITE,
    CacheOpt,
    DeviceOpt,
    JobsOpt,
    PcaOpt,
    VggishOpt,
    console,
    expected_errors,
    parse_seeds,
    print_table,
)
from instag.cli.progress import reporter_for
from instag.common import locations
from instag.common.atomic import atomic_write
from instag.common.devices import Device
from instag.common.errors import InstagError
from instag.common.guard.targets import (
    claim_file,
    claim_files,
    claim_folder,
    json_with,
    png_by_instag,
)
from instag.common.stops import Process
from instag.learning import labels as labelling
from instag.learning.data import load_openmic
from instag.learning.export import export_run
from instag.learning.models import resolve_device
from instag.learning.report import (
    SUMMARY_KEYS,
    evaluate_run,
    is_summary,
    load_metrics,
    plot_models,
    plot_per_class_f1,
    summarise,
)
from instag.learning.train import Recipe, train_run
from instag.provision.teach import HOLDOUT, teach
from instag.tagging.options import TagOptions


@expected_errors
def train(
    out: Annotated[Path, typer.Option(help="Run directory to write (one sub-directory per seed "
                                           "with --seeds).", **FOLDER_TO_WRITE)],
    openmic: Annotated[Path | None, typer.Option(
        help="OpenMIC-2018 directory (or one in its layout). Default: the one `instag setup` "
             "used (`instag doctor` names it).")] = None,
    model: Annotated[str, typer.Option(help="att, fc_t, fc, rnn or rf.")] = "att",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split; the "
                                                    "best validation loss is kept.")] = 250,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per Adam step.")] = 128,
    lr: Annotated[float | None, typer.Option(help="Default: 5e-4 (fc: 1e-4).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, the weights and the "
                                           "batch order.")] = 0,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, one run each.")] = None,
    device: DeviceOpt = Device.AUTO,
    force: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    labels: Annotated[Path | None, typer.Option(
        help="Your own weak labels: a CSV of path,instrument,present (1 or 0) rows; a file "
             "not labelled for an instrument is unlabelled for it, not negative. Trains on "
             "these songs alone, or with --openmic as well.")] = None,
    labels_from_folders: Annotated[Path | None, typer.Option(
        help="Labels as folders: DIR/<instrument>/ songs with it, DIR/not-<instrument>/ "
             "songs without it.")] = None,
    holdout: Annotated[float, typer.Option(
        help="Share of the labelled songs held out for the test figures.")] = HOLDOUT,
    folds: Annotated[int | None, typer.Option(
        min=2, help="Also cross-validate over K folds of the labelled songs: each figure's "
                    "mean and spread per instrument (RUN/folds.json).")] = None,
    clips: Annotated[int | None, typer.Option(
        min=1, help="Train on clips of N instances cut from each labelled song (10 = "
                    "OpenMIC's), each with the song's labels. Default: the whole song as "
                    "one bag, as `instag tag` scores it.")] = None,
    vggish: VggishOpt = None,
    pca: PcaOpt = None,
    jobs: JobsOpt = None,
    cache: CacheOpt = None,
) -> None:
    """Train one of the paper's models on OpenMIC-2018 with the paper's recipe, or teach it
    your own instruments from weakly labelled songs (--labels, --labels-from-folders)."""
    seed_list = parse_seeds(seeds) if seeds else [seed]
    claim_folder(out, "--out", lambda folder: True)  # a run's files: refused unless --force
    if labels or labels_from_folders:
        if seeds:
            raise InstagError("--seeds with --labels: one run per call",
                              "use --seed, or --folds K for the spread over data splits")
        own = labelling.read_labels_csv(labels) if labels else \
            labelling.labels_from_folders(labels_from_folders)
        recipe = Recipe(model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        device=device, clips=clips)
        _teach(own, out, openmic, recipe, holdout, folds, force, quiet,
               TagOptions(vggish=vggish, pca=pca, jobs=jobs, cache=cache))
        return
    if folds or clips:
        raise InstagError("--folds and --clips are for training on your own labels",
                          "add --labels LABELS.csv or --labels-from-folders DIR")
    openmic = openmic or locations.openmic_data()
    if openmic is None:
        raise InstagError("no data set: --openmic not given, and `instag setup` has not "
                          "provisioned OpenMIC-2018 here", "pass --openmic DIR")
    data = load_openmic(openmic)
    out_console = console()
    for s in seed_list:
        run_dir = out / f"seed-{s}" if seeds else out
        recipe = Recipe(model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=s,
                        device=device)
        metrics = train_run(data, recipe, run_dir, progress=not quiet and sys.stderr.isatty(),
                            force=force)
        o = metrics["overall"]
        if metrics.get("interrupted"):
            out_console.print(f"interrupted: kept the best checkpoint so far (epoch "
                              f"{metrics['best_epoch']}) in {run_dir}")
        out_console.print(f"{model} seed {s}: test F1 {o['f1']:.3f}  P {o['precision']:.3f}  "
                          f"R {o['recall']:.3f}  mAP {o['map']:.3f}  -> {run_dir}")
        if metrics.get("interrupted"):
            Process.said = True  # (its line is above)
            raise typer.Exit(130)


def _teach(own, out: Path, openmic: Path | None, recipe: Recipe, holdout: float,
           folds: int | None, force: bool, quiet: bool, opts: TagOptions) -> None:
    """Embed, train and report a run on the user's labels (`provision.teach`)."""
    err = console(stderr=True)
    err.print(f"{own.source}: {len(own.files)} songs; " + ", ".join(
        f"{name} {c['positive']}+ {c['negative']}- {c['missing']}?"
        for name, c in own.balance().items()), markup=False)
    taught = teach(own, out, opts, recipe, openmic, holdout, folds,
                   reporter_for(quiet, "embedded"), force,
                   progress=not quiet and sys.stderr.isatty(),
                   note=lambda line: err.print(line, markup=False))
    for result in taught.failed:
        err.print(f"{result.path}: {result.status.value}: {result.reason}; left out of "
                  "training", markup=False)
    table = Table(title=f"{recipe.model} on {own.source}: held-out songs" +
                  (f", and over {folds} folds (mean ± std)" if folds else ""))
    for col in ("instrument", "test positives", "P", "R", "F1", "AP", "threshold",
                *(("F1 folds", "AP folds", "fold positives") if folds else ())):
        table.add_column(col, justify="left" if col == "instrument" else "right")
    metrics = taught.metrics
    for name in own.instruments:
        r = metrics["per_class"][name]
        row = [name, str(r["n_positive"]),
               *(f"{r[k]:.3f}" if k in r else "-" for k in ("precision", "recall", "f1", "ap")),
               f"{metrics['thresholds'][name]:.2f}"]
        if folds:
            f = taught.folds[name]
            row += [*(f"{f[k]['mean']:.3f} ± {f[k]['std']:.3f}" if k in f else "-"
                      for k in ("f1", "ap")), str(f["positives"])]
        table.add_row(*row)
    print_table(table)
    console().print(f"-> {out}; `instag export-onnx {out}` makes the model `instag tag "
                    "--model` takes", markup=False)


@expected_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `instag train`.")],
    openmic: Annotated[Path | None, typer.Option(help="Data set (default: the run's).")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Where to write the metrics (default RUN_DIR/evaluation.json).",
        **FILE_TO_WRITE)] = None,
    device: Annotated[Device, typer.Option(help="cpu (default), cuda or auto (CUDA when "
                                                "available).")] = Device.CPU,
    trust_pickle: Annotated[bool, typer.Option(
        help="Load an old random forest run's model.joblib, a pickle (it can run any code: "
             "only for runs you made yourself).")] = False,
) -> None:
    """Score a trained run on its test split with the paper's metrics and mAP."""
    doc = evaluate_run(run_dir, openmic, resolve_device(device), trust_pickle)
    tuned = doc.get("tuned")
    table = Table(title=f"{doc['model']} (seed {doc['seed']}) on {doc['data_dir']}: at 0.5 "
                  "(the paper's rule)" + (" and at the tuned thresholds" if tuned else ""))
    columns = ["instrument", "observed", "P", "R", "F1", "F1+", "AP"]
    columns += ["t", "t on", "F1 t", "F1+ t"] if tuned else []  # t on: validation positives
    for col in columns:
        table.add_column(col, justify="left" if col == "instrument" else "right")

    def cells(r: dict, keys: tuple[str, ...]) -> list[str]:
        return [f"{r[k]:.3f}" if k in r else "-" for k in keys]

    paper_keys, tuned_keys = ("precision", "recall", "f1", "f1_positive"), ("f1", "f1_positive")
    for name, r in doc["per_class"].items():
        row = [name, str(r["n_observed"]), *cells(r, (*paper_keys, "ap"))]
        if tuned:
            t = tuned["per_class"][name]
            n = tuned["positives"].get(name)
            row += [f"{t['threshold']:.2f}", "-" if n is None else str(n),
                    *cells(t, tuned_keys)]
        table.add_row(*row)
    mean = ["[bold]mean[/]", "", *cells(doc["overall"], (*paper_keys, "map"))]
    table.add_row(*mean, *(["", "", *cells(tuned["overall"], tuned_keys)] if tuned else []))
    print_table(table)
    if doc["overall"]["map_left_out"]:
        console().print(f"mAP leaves out {doc['overall']['map_left_out']} instrument(s) without "
                        "a positive test label (average precision is undefined there)")
    path = json_out or run_dir / "evaluation.json"
    target = claim_file(path, "--json", json_with("per_class"), [run_dir / "metrics.json"])
    with atomic_write(path, replaces=target.replaces) as f:
        json.dump(doc, f, indent=2)
    console().print(f"wrote {path}")


@expected_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (searched recursively).")],
    png: Annotated[Path, typer.Option(help="Per-instrument F1 figure (the paper's Fig. 3).",
                                      **FILE_TO_WRITE)] = Path("report.png"),
    models_png: Annotated[Path, typer.Option(
        help="The models side by side (Fig. 2): F1 at 0.5 and at the tuned thresholds, and "
             "mAP, mean ± std over seeds.", **FILE_TO_WRITE)] = Path("report-models.png"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary.",
                                                  **FILE_TO_WRITE)] = None,
) -> None:
    """Compare runs: mean ± std over seeds per model, and a per-instrument F1 figure."""
    targets = claim_files([(png, "--png", png_by_instag),
                           (models_png, "--models-png", png_by_instag),
                           *([(json_out, "--json", is_summary)] if json_out else [])], run_dirs)
    docs = load_metrics(run_dirs)
    summary = summarise(docs)
    table = Table(title="test metrics, mean ± std over runs")
    table.add_column("model")
    table.add_column("runs", justify="right")
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    for model, row in summary.items():
        table.add_row(model, str(row["runs"]),
                      *(_mean_std(row[k], row["runs"]) for k in SUMMARY_KEYS))
    print_table(table)
    plot_per_class_f1(docs, png, targets[0].replaces)
    plot_models(docs, models_png, targets[1].replaces)
    console().print(f"wrote {png} and {models_png}")
    if json_out:
        with atomic_write(json_out, replaces=targets[2].replaces) as f:
            json.dump(summary, f, indent=2)


@expected_errors
def export_onnx(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `instag train`.")],
    out: Annotated[Path | None, typer.Option(
        help="Where to write the .onnx (default: RUN_DIR/MODEL.onnx); the model card goes "
             "beside it as .json.", **FILE_TO_WRITE)] = None,
) -> None:
    """Export a trained att, fc_t, rnn or fc model to ONNX for tagging."""
    path = export_run(run_dir, out)
    console().print(f"wrote {path} and {path.with_suffix('.json')}", markup=False)


def _mean_std(value: dict, runs: int) -> str:
    """`0.617 ± 0.012` over seeds; one run has no spread to show (`0.617`, not `± 0.000`)."""
    return f"{value['mean']:.3f} ± {value['std']:.3f}" if runs > 1 else f"{value['mean']:.3f}"
