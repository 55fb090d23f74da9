"""Teach instag new instruments from a user's weak labels: the labelled songs are embedded by
the local engine's run (`instag embed`'s: the same decode pool, cache and statuses; a song that
fails is listed and left out), turned into bags (`learning.labelled`), trained alone or with
OpenMIC (`learning.train`), and judged on held-out songs and, with `folds`, by k-fold
cross-validation. It lives here, above both the engines and learning, which never import
each other."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from instag.common.atomic import atomic_write
from instag.common.errors import InstagError, UsageError
from instag.engines.local.run import embed
from instag.features.precision import Precision
from instag.learning.data import OpenMIC, load_openmic
from instag.learning.labelled import check_sides, check_split, cross_folds, held_out, union
from instag.learning.labels import Labels
from instag.learning.runs import refuse_taken
from instag.learning.train import Recipe, check_positives, train_run
from instag.tagging.job import Reporter
from instag.tagging.options import TagOptions
from instag.tagging.results import FileResult

HOLDOUT = 0.25  # share of the labelled songs held out for the test figures
FOLDS_FILE = "folds.json"
SPREAD_KEYS = ("precision", "recall", "f1", "f1_positive", "ap")


@dataclass
class Taught:
    """What `teach` did: the songs that could not be embedded, the final run's metrics, and
    per instrument the mean and spread of each figure over the folds (with `folds`)."""

    failed: list[FileResult] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    folds: dict = field(default_factory=dict)


def embed_labelled(labels: Labels, opts: TagOptions, reporter: Reporter | None = None
                   ) -> tuple[Labels, list[np.ndarray], list[FileResult]]:
    """Each labelled song's features (uint8 [instances, 128]) through `instag embed`'s run;
    the labels of the songs that embedded, their features, and the results of those that
    did not. Always FP32's features, whatever precision tagging defaults to: a model learns
    from the features OpenMIC released, and INT8's are not those."""
    if opts.precision not in (None, Precision.FP32):
        raise UsageError(f"precision={opts.precision!r}: a model is trained on FP32 features "
                         "only (OpenMIC's are FP32)", "leave precision unset")
    opts = replace(opts, precision=Precision.FP32)
    features: dict[Path, np.ndarray] = {}
    failed: list[FileResult] = []
    for result in embed(labels.files, opts, reporter):
        if result.ok and result.features is not None and len(result.features.values):
            features[Path(result.path).resolve()] = result.features.values
        else:
            failed.append(result)
    keep = np.array([f in features for f in labels.files], bool)
    kept = labels.select(keep)
    return kept, [features[f] for f in kept.files], failed


def teach(labels: Labels, out_dir: Path, opts: TagOptions, recipe: Recipe,
          openmic: Path | None = None, holdout: float = HOLDOUT, folds: int | None = None,
          reporter: Reporter | None = None, force: bool = False,
          progress: bool = False, note: Callable[[str], None] = lambda _: None) -> Taught:
    """Embed, train the model in `out_dir` (tested on the held-out songs, and on OpenMIC's
    test split where `openmic` is given), and with `folds` also K runs in `out_dir/folds/`
    whose per-instrument spread goes to `out_dir/folds.json`."""
    # what can be refused without the audio is refused before a song is decoded
    check_split(holdout, folds, len(labels.files))
    base = load_openmic(openmic) if openmic else None
    known = base.classes if base is not None else ()
    check_sides(labels, known)
    refuse_taken(out_dir, force)
    taught = Taught()
    kept, bags, taught.failed = embed_labelled(labels, opts, reporter)
    if not kept.files:
        raise InstagError(f"{labels.source}: none of its songs could be embedded",
                          "see the failures listed above")
    check_sides(kept, known)  # the songs that failed may have been one side

    def with_openmic(own: OpenMIC) -> OpenMIC:
        return own if base is None else union(base, own)

    data = with_openmic(held_out(kept, bags, holdout, recipe.seed))
    note(_balance_line(data))
    own_folds = list(cross_folds(kept, bags, folds, recipe.seed)) if folds else []
    for checked in (data, *own_folds):  # before anything is trained or written
        check_positives(checked)
    if folds:
        per_fold = []
        for k, fold in enumerate(own_folds, start=1):
            note(f"fold {k} of {folds}")
            per_fold.append(train_run(with_openmic(fold), recipe, out_dir / "folds" / f"fold-{k}",
                                      progress=progress, force=force))
        taught.folds = spread(per_fold, kept.instruments)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(out_dir / FOLDS_FILE) as f:
            json.dump({"folds": folds, "per_class": taught.folds}, f, indent=2)
    taught.metrics = train_run(data, recipe, out_dir, progress=progress, force=force)
    return taught


def _balance_line(data: OpenMIC) -> str:
    """Positive / negative / unlabelled songs per instrument, training and test together."""
    labels = np.concatenate([data.train.labels, data.test.labels])
    mask = np.concatenate([data.train.mask, data.test.mask])
    parts = [f"{name} {int((labels[:, c] > 0.5)[mask[:, c]].sum())}+ "
             f"{int((labels[:, c] < 0.5)[mask[:, c]].sum())}- {int((~mask[:, c]).sum())}?"
             for c, name in enumerate(data.classes)]
    return ("class balance (with +, without -, unlabelled ?; training and test): "
            + ", ".join(parts))


def spread(runs: list[dict], instruments: tuple[str, ...]) -> dict:
    """Per instrument: each figure's mean and standard deviation over the folds, and the test
    positives they rest on (summed over the folds: every song is tested once)."""
    out = {}
    for name in instruments:
        rows = [r["per_class"][name] for r in runs]
        figures = {key: {"mean": float(np.mean([r[key] for r in rows if key in r])),
                         "std": float(np.std([r[key] for r in rows if key in r]))}
                   for key in SPREAD_KEYS if any(key in r for r in rows)}
        out[name] = {**figures, "positives": sum(r["n_positive"] for r in rows)}
    return out
