"""A training run's directory: the model file, its metadata, metrics and history.

``model.pt`` (torch models) holds the weights and everything needed to rebuild and score the
model without the training data: model name, class names, input size and scaling, seed, the
recipe and the data's checksum. It loads with ``torch.load(weights_only=True)``: no pickled code.
The random forest is scikit-learn objects; they live in ``model.skops`` with the same metadata,
in skops' format, which loads only the types instag writes (a file holding any other is refused):
a downloaded run cannot run code on loading, as a pickle would. An old run's pickled
``model.joblib`` is loaded only when the user says they trust it (`--trust-pickle`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from instag.common import VERSION
from instag.common.atomic import atomic_path, atomic_write
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.learning.models import RandomForest, build_model, predict

TORCH_FILE = "model.pt"
RF_FILE = "model.skops"
PICKLED_RF_FILE = "model.joblib"  # what instag wrote before: a pickle, loaded only if trusted
# the types in instag's model.skops beyond those skops trusts itself (its defaults)
RF_TYPES = ["sklearn.tree._tree.Tree", "sklearn.tree._classes.DecisionTreeClassifier",
            "sklearn.ensemble._forest.RandomForestClassifier"]
METRICS_FILE = "metrics.json"
INPUT_SCALE = 1.0 / 255.0  # model input = uint8 feature / 255


@dataclass(frozen=True)
class RunInfo:
    model: str
    classes: tuple[str, ...]
    in_dim: int
    n_instances: int
    seed: int
    data_dir: str
    data_sha256: str
    recipe: dict = field(default_factory=dict)
    data_errata: dict = field(default_factory=dict)  # OpenMIC's label corrections found
    sources: tuple[dict, ...] = ()  # the data sets trained on (OpenMIC, a labels file)
    input_scale: float = INPUT_SCALE
    instag_version: str = VERSION

    @classmethod
    def from_dict(cls, d: dict) -> RunInfo:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["classes"] = tuple(known["classes"])
        return cls(**known)


RUN_FILES = (TORCH_FILE, RF_FILE, PICKLED_RF_FILE, METRICS_FILE, "history.csv",
             "evaluation.json")


def refuse_taken(run_dir: Path, force: bool) -> list[Path]:
    """Refuse a directory that holds a run, unless `force`; its run's files. Callers with work
    to do first (embedding songs) ask before they start."""
    run_dir = Path(run_dir)
    old = [run_dir / n for n in RUN_FILES if (run_dir / n).exists()]
    if old and not force:
        raise InstagError(f"{run_dir}: already holds a run ({', '.join(p.name for p in old)})",
                          "pass --force to replace it, or another --out")
    return old


def claim(run_dir: Path, force: bool) -> None:
    """Make `run_dir` ready for a new run: refuse one that holds a run, unless `force`, which
    removes that run's files (and its exports)."""
    run_dir = Path(run_dir)
    old = refuse_taken(run_dir, force)
    for path in old + sorted(run_dir.glob("*.onnx")) + [p.with_suffix(".json") for p in
                                                          run_dir.glob("*.onnx")]:
        path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def save_torch(run_dir: Path, model, meta: dict) -> None:
    torch = require("torch")

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {**meta, "classes": list(meta["classes"])}
    with atomic_path(run_dir / TORCH_FILE) as tmp:
        torch.save({"meta": meta, "state_dict": state}, tmp)


def load_torch(run_dir: Path, device: str = "cpu"):
    """Rebuild the torch model of a run in eval mode; returns (model, metadata dict)."""
    torch = require("torch")
    path = Path(run_dir) / TORCH_FILE
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        meta = blob["meta"]
        model = build_model(meta["model"], len(meta["classes"]), meta["in_dim"])
        model.load_state_dict(blob["state_dict"])
    except FileNotFoundError:
        raise InstagError(f"{path}: no such model file", "train one with `instag train`") from None
    except Exception as e:
        raise InstagError(f"{path}: not a valid instag model ({e})", "re-train the run") from e
    return model.to(device).eval(), meta


def save_rf(run_dir: Path, rf, meta: RunInfo) -> None:
    sio = require("skops.io")

    with atomic_path(run_dir / RF_FILE) as tmp:
        sio.dump({"meta": asdict(meta), "params": rf.params(), "forests": rf.forests}, tmp)


def has_rf(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).is_file() for name in (RF_FILE, PICKLED_RF_FILE))


def load_rf(run_dir: Path, trust_pickle: bool = False):
    """(RandomForest, meta) of a run; from model.skops, refusing any type instag does not
    write, or from an old pickled model.joblib only with `trust_pickle`."""
    run_dir = Path(run_dir)
    if not (run_dir / RF_FILE).is_file() and (run_dir / PICKLED_RF_FILE).is_file():
        return _load_pickled_rf(run_dir / PICKLED_RF_FILE, trust_pickle)
    sio = require("skops.io")
    path = run_dir / RF_FILE
    try:
        untrusted = set(sio.get_untrusted_types(file=path)) - set(RF_TYPES)
        if untrusted:
            raise InstagError(f"{path}: holds types instag never writes ({sorted(untrusted)}); "
                              "not loaded", "use a run made by `instag train`")
        blob = sio.load(path, trusted=RF_TYPES)
        rf = RandomForest(**blob["params"])
        rf.forests = list(blob["forests"])
        return rf, blob["meta"]
    except InstagError:
        raise
    except Exception as e:
        raise InstagError(f"{path}: not a valid instag random forest ({e})") from e


def _load_pickled_rf(path: Path, trust_pickle: bool):
    if not trust_pickle:
        raise InstagError(f"{path}: a pickle, which runs any code it holds when loaded; not "
                          "loaded", "pass --trust-pickle if you made this run yourself, or "
                          "train it again (instag now writes model.skops)")
    joblib = require("joblib")
    try:
        blob = joblib.load(path)
        return blob["model"], blob["meta"]
    except Exception as e:
        raise InstagError(f"{path}: not a valid instag random forest ({e})") from e


def read_info(run_dir: Path, trust_pickle: bool = False) -> RunInfo:
    """The metadata of a run, whichever kind of model it holds."""
    run_dir = Path(run_dir)
    if (run_dir / TORCH_FILE).is_file():
        return RunInfo.from_dict(load_torch(run_dir)[1])
    if has_rf(run_dir):
        return RunInfo.from_dict(load_rf(run_dir, trust_pickle)[1])
    inside = sorted({p.parent for name in (TORCH_FILE, RF_FILE) for p in run_dir.glob(f"*/{name}")})
    if inside:  # a parent of `instag train --seeds` runs
        raise InstagError(f"{run_dir}: holds {len(inside)} runs, one per seed",
                          "pass one of them: " + ", ".join(map(str, inside)))
    raise InstagError(
        f"{run_dir}: no {TORCH_FILE} or {RF_FILE} here",
        "pass a directory written by `instag train --out`",
    )


def read_thresholds(run_dir: Path) -> tuple[dict[str, float] | None, dict[str, int]]:
    """The per-instrument thresholds training tuned (in metrics.json), if the run has them, and
    the validation positives each rests on (none recorded by runs before instag 0.4)."""
    path = Path(run_dir) / METRICS_FILE
    doc = json.loads(path.read_text()) if path.is_file() else {}
    return doc.get("thresholds"), doc.get("threshold_positives") or {}


def predictor(run_dir: Path, device: str = "cpu", trust_pickle: bool = False):
    """A function from scaled features [N, T, D] to bag probabilities [N, C], for any run."""
    run_dir = Path(run_dir)
    if has_rf(run_dir) and not (run_dir / TORCH_FILE).is_file():
        rf, _ = load_rf(run_dir, trust_pickle)
        return rf.predict_proba
    model, _ = load_torch(run_dir, device)
    return lambda x: predict(model, x, device)


def write_metrics(run_dir: Path, metrics: dict, meta: RunInfo, **extra) -> dict:
    doc = {"model": meta.model, "seed": meta.seed, "classes": list(meta.classes),
           "data_sha256": meta.data_sha256, **extra, **metrics}
    with atomic_write(Path(run_dir) / METRICS_FILE) as f:
        json.dump(doc, f, indent=2)
    return doc


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (holding metrics.json) at or below each path, sorted."""
    found: set[Path] = set()
    for p in paths:
        p = Path(p)
        if (p / METRICS_FILE).is_file():
            found.add(p)
        elif p.is_dir():
            found.update(m.parent for m in p.rglob(METRICS_FILE))
        else:
            raise InstagError(f"{p}: not a run directory", "pass directories from `instag train`")
    if not found:
        raise InstagError(f"no {METRICS_FILE} under {', '.join(map(str, paths))}",
                          "train with `instag train` first")
    return sorted(found)
