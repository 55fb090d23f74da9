"""Evaluate runs on their test split and compare runs side by side (the paper's Figs. 2 and 3)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from instag.common.atomic import UNCHECKED, atomic_path
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.guard.targets import PNG_METADATA
from instag.learning import runs
from instag.learning.data import load_openmic
from instag.learning.metrics import evaluate_predictions

SUMMARY_KEYS = ("precision", "recall", "f1", "f1_positive", "map")


def evaluate_run(run_dir: Path, openmic: Path | None = None, device: str = "cpu",
                 trust_pickle: bool = False) -> dict:
    """Metrics of a run's model on the test split of `openmic` (default: its training data);
    `trust_pickle`: load an old run's pickled random forest (it can run code)."""
    info = runs.read_info(run_dir, trust_pickle)
    if openmic is None and any(s.get("kind") == "labels" for s in info.sources):
        raise InstagError(f"{run_dir}: trained on your own labels ({info.data_dir}); its "
                          f"held-out songs' figures are in {run_dir / runs.METRICS_FILE}",
                          "`instag train --labels ... --folds K` measures it again")
    data = load_openmic(openmic or info.data_dir)
    if tuple(data.classes) != tuple(info.classes):
        raise InstagError(
            f"{data.root}: classes {list(data.classes)} differ from the model's "
            f"{list(info.classes)}", "evaluate on the data set the model was trained for",
        )
    probs = runs.predictor(run_dir, device, trust_pickle)(data.test.inputs())
    metrics = evaluate_predictions(probs, data.test.labels, data.test.mask, data.classes)
    doc = {"run": str(run_dir), "model": info.model, "seed": info.seed,
           "data_dir": str(data.root), "data_sha256": data.checksum, **metrics}
    tuned, positives = runs.read_thresholds(run_dir)
    if tuned:
        thresholds = [tuned.get(c, 0.5) for c in data.classes]
        doc["tuned"] = {"thresholds": tuned, "positives": positives, **evaluate_predictions(
            probs, data.test.labels, data.test.mask, data.classes, thresholds)}
    return doc


def load_metrics(run_dirs: list[Path]) -> list[dict]:
    docs = []
    for d in runs.find_runs(run_dirs):
        doc = json.loads((d / runs.METRICS_FILE).read_text())
        docs.append({**doc, "run": str(d)})
    return docs


def summarise(docs: list[dict]) -> dict[str, dict]:
    """Per model: number of runs and mean/std of each overall metric across them (seeds)."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        by_model[doc["model"]].append(doc)
    summary = {}
    for model, group in sorted(by_model.items()):
        row: dict = {"runs": len(group)}
        for key in SUMMARY_KEYS:
            values = np.array([g["overall"][key] for g in group], dtype=float)
            row[key] = {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}
        summary[model] = row
    return summary


def is_summary(path: Path) -> bool:
    """A summary `instag report --json` wrote: per model, its number of runs and metrics."""
    doc = json.loads(Path(path).read_bytes()[: 16 << 20])
    return isinstance(doc, dict) and all(isinstance(row, dict) and "runs" in row and
                                         "f1" in row for row in doc.values())


def per_class_f1(docs: list[dict]) -> tuple[list[str], dict[str, tuple[np.ndarray, ...]]]:
    """Per model: mean and std over its runs (seeds) of each instrument's F1 (classes in the
    first run's order)."""
    classes = docs[0]["classes"]
    by_model: dict[str, list[list[float]]] = defaultdict(list)
    for doc in docs:
        pc = doc["per_class"]
        by_model[doc["model"]].append([pc.get(c, {}).get("f1", np.nan) for c in classes])
    return classes, {m: (np.nanmean(np.array(v, float), axis=0),
                         np.nanstd(np.array(v, float), axis=0)) for m, v in by_model.items()}


def plot_per_class_f1(docs: list[dict], out_png: Path, replaces=UNCHECKED) -> None:
    """Grouped bars of per-instrument F1 per model with the spread over seeds, like the
    paper's Figure 3."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    classes, f1 = per_class_f1(docs)
    models = sorted(f1)
    runs_per_model = {m: sum(d["model"] == m for d in docs) for m in models}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(classes) * max(1, len(models) / 2)), 4.5))
    x = np.arange(len(classes))
    for i, m in enumerate(models):
        mean, std = f1[m]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
               label=f"{m} ({runs_per_model[m]} run{'s' * (runs_per_model[m] != 1)})")
    ax.set_xticks(x, classes, rotation=60, ha="right")
    ax.set_ylabel("instrument-wise F1")
    ax.set_ylim(0, 1)
    ax.set_title("Per-instrument F1 on the test split (bars: mean over runs; lines: ± std)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # never over bars
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png, replaces) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=PNG_METADATA)
    plt.close(fig)


def plot_models(docs: list[dict], out_png: Path, replaces=UNCHECKED) -> None:
    """The models side by side, like the paper's Figure 2: instrument-wise F1, mean ± std over
    seeds, at the paper's 0.5 rule and at each run's tuned thresholds (mAP, which needs no
    threshold, beside them)."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    by_model: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        by_model[doc["model"]].append(doc)
    models = sorted(by_model)
    measures = {"F1 at 0.5": lambda d: d["overall"]["f1"],
                "F1 at tuned thresholds": lambda d: d.get("tuned", {}).get("overall", {})
                .get("f1", np.nan),
                "mAP": lambda d: d["overall"]["map"]}
    width = 0.8 / len(measures)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(models) + 5), 4.5))
    x = np.arange(len(models))
    for i, (label, get) in enumerate(measures.items()):
        values = [np.array([get(d) for d in by_model[m]], float) for m in models]
        ax.bar(x + (i - (len(measures) - 1) / 2) * width, [np.nanmean(v) for v in values],
               width, yerr=[np.nanstd(v) if len(v) > 1 else 0 for v in values], capsize=3,
               label=label)
    runs = [len(by_model[m]) for m in models]
    ax.set_xticks(x, [f"{m}\n({n} run{'s' * (n != 1)})" for m, n in zip(models, runs,
                                                                       strict=True)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test split, macro over instruments")
    ax.set_title("Models side by side (mean ± std over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png, replaces) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=PNG_METADATA)
    plt.close(fig)
