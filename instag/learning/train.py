"""The paper's training recipe: Adam, partial BCE (Eq. 4), best-validation-loss checkpoint."""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from instag.common.atomic import atomic_write
from instag.common.devices import Device
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.learning import runs
from instag.learning.data import OpenMIC, Subset, clips_of
from instag.learning.metrics import evaluate_predictions, tune_thresholds
from instag.learning.models import (
    DEFAULT_LR,
    MASKED_MODELS,
    MODEL_NAMES,
    RandomForest,
    build_model,
    predict,
    resolve_device,
)


@dataclass(frozen=True)
class Recipe:
    model: str = "att"
    epochs: int = 250
    batch_size: int = 128
    lr: float | None = None  # None: the paper's rate for the model (DEFAULT_LR)
    seed: int = 0
    device: Device = Device.AUTO
    clips: int | None = None  # train on clips of this many instances cut from each bag

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.model, 5e-4)


def partial_bce(probs, labels, mask, eps: float = 1e-7):
    """Eq. 4 with alpha=1, beta=0, gamma=-1: BCE over observed labels, divided per sample by
    its number of observed labels, averaged over the batch. Unobserved labels contribute nothing.
    """
    torch = require("torch")
    p = probs.clamp(eps, 1.0 - eps)
    bce = -(labels * torch.log(p) + (1.0 - labels) * torch.log(1.0 - p))
    m = mask.to(bce.dtype)
    per_sample = (bce * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return per_sample.mean()


def _loss_on(model, subset: Subset, inputs, device: str) -> float:
    """The loss on `subset`, whose `inputs()` are given: scaled once, not every epoch."""
    torch = require("torch")

    probs = torch.from_numpy(predict(model, inputs, device, present=subset.present))
    return float(
        partial_bce(probs, torch.from_numpy(subset.labels), torch.from_numpy(subset.mask))
    )


# after each epoch: (epoch, epochs, best validation loss so far, seconds so far)
OnEpoch = Callable[[int, int, float, float], None]


def train_run(data: OpenMIC, recipe: Recipe, out_dir: Path, progress: bool = True,
              force: bool = False, on_epoch: OnEpoch | None = None) -> dict:
    """Train one model on `data` with `recipe`, checkpointing into `out_dir`; return its metrics.
    A directory that already holds a run is refused unless `force`, which clears it first (an
    old evaluation.json or export must not sit beside a new model). `on_epoch` hears of each
    epoch (a log's progress lines, where no bar is drawn).

    Ctrl-C stops training early: the best checkpoint so far stays valid and is evaluated.
    """
    if recipe.model not in MODEL_NAMES:
        raise InstagError(f"unknown model {recipe.model!r}",
                          f"choose from {', '.join(MODEL_NAMES)}")
    if (data.train.present is not None or recipe.clips) and recipe.model not in MASKED_MODELS:
        raise InstagError(f"model {recipe.model!r} takes OpenMIC's fixed 10-instance clips "
                          "only, not songs' bags of any length",
                          f"train one of {', '.join(MASKED_MODELS)}")
    check_positives(data)
    runs.claim(out_dir, force)
    meta = runs.RunInfo(
        model=recipe.model, classes=data.classes, in_dim=data.train.X.shape[2],
        n_instances=data.train.X.shape[1], seed=recipe.seed, data_dir=str(data.root),
        data_sha256=data.checksum, data_errata=data.errata, sources=data.sources,
        recipe={**recipe.__dict__, "device": str(recipe.device), "lr": recipe.learning_rate},
    )
    if recipe.model == "rf":  # OpenMIC's baseline: the whole training split, out-of-bag tuning
        rf = RandomForest(len(data.classes), seed=recipe.seed)
        oob = rf.fit(data.train.inputs(), data.train.labels, data.train.mask)
        runs.save_rf(out_dir, rf, meta)
        tuned = tune_thresholds(oob, data.train.labels, data.train.mask)
        return _finish(out_dir, data, meta, rf.predict_proba(data.test.inputs()), tuned,
                       interrupted=False)
    train, val = data.split_validation(recipe.seed)
    return _train_torch(data, train, val, recipe, meta, out_dir, (progress, on_epoch))


MIN_TRAINING_POSITIVES = 5  # observed positive clips per instrument below which none is learnt


def check_positives(data: OpenMIC) -> None:
    """Refuse, before any training, an instrument with fewer than MIN_TRAINING_POSITIVES
    observed positives in the training split: nothing can be learnt from two examples, and
    the model would still tag it."""
    train = data.train
    counts = ((train.labels > 0.5) & train.mask.astype(bool)).sum(axis=0)
    few = [f"{c} has {int(n)}" for c, n in zip(data.classes, counts, strict=True)
           if n < MIN_TRAINING_POSITIVES]
    if few:
        raise InstagError(f"{data.root}: too few positive training clips to learn from: "
                          f"{', '.join(few)}; each instrument needs {MIN_TRAINING_POSITIVES}",
                          "add labelled clips of these instruments, or leave them out of the "
                          "data")


def _finish(out_dir: Path, data: OpenMIC, meta: runs.RunInfo, test_probs,
            tuning: tuple[list[float], list[int]], **extra) -> dict:
    """The run's metrics on the test split, at the paper's 0.5 and at the tuned thresholds
    (with the validation positives each rests on)."""
    thresholds, positives = tuning
    metrics = evaluate_predictions(test_probs, data.test.labels, data.test.mask, data.classes)
    tuned = evaluate_predictions(test_probs, data.test.labels, data.test.mask, data.classes,
                                 thresholds)
    return runs.write_metrics(out_dir, metrics, meta, **extra,
                              thresholds=dict(zip(data.classes, thresholds, strict=True)),
                              threshold_positives=dict(zip(data.classes, positives,
                                                           strict=True)),
                              tuned={"overall": tuned["overall"]})


def _train_torch(data, train, val, recipe, meta, out_dir: Path,
                 progress: tuple[bool, OnEpoch | None]) -> dict:
    torch = require("torch")
    tqdm = require("tqdm").tqdm
    with _deterministic(torch):
        return _fit(torch, tqdm, data, train, val, recipe, meta, out_dir, progress)


@contextlib.contextmanager
def _deterministic(torch) -> Iterator[None]:
    """torch's deterministic algorithms for one training run; the caller's setting after."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _fit(torch, tqdm, data, train, val, recipe, meta, out_dir: Path,
         progress: tuple[bool, OnEpoch | None]) -> dict:
    """The epochs; `progress`: (draw a bar, call after each epoch)."""
    bar_wanted, on_epoch = progress
    device = resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, len(data.classes), meta.in_dim).to(device)
    # the fused kernel: Adam's arithmetic in one pass over the weights (a step took 0.44 ms on
    # CPU, 0.12 fused: ~9 s of set-up's 250 epochs)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate,
                           fused=str(device).split(":")[0] in ("cpu", "cuda"))
    if recipe.clips:
        train = clips_of(train, recipe.clips)
    x = torch.from_numpy(train.inputs())
    y = torch.from_numpy(train.labels)
    m = torch.from_numpy(train.mask)
    present = None if train.present is None else torch.from_numpy(train.present)
    gen = torch.Generator().manual_seed(recipe.seed)
    val_inputs = val.inputs()

    best = float("inf")
    history: list[dict] = []
    interrupted = False
    bar = tqdm(range(1, recipe.epochs + 1), desc=f"{recipe.model} seed {recipe.seed}",
               unit="epoch", disable=not bar_wanted)
    start = time.monotonic()
    try:
        for epoch in bar:
            train_loss = _epoch(model, opt, (x, y, m, present),
                                torch.randperm(len(x), generator=gen), recipe.batch_size, device)
            val_loss = _loss_on(model, val, val_inputs, device)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "seconds": round(time.monotonic() - start, 3)}
            history.append(row)
            if val_loss < best:
                best = val_loss
                runs.save_torch(out_dir, model, {**meta.__dict__, "epoch": epoch,
                                                 "val_loss": val_loss})
            bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}",
                            best=f"{best:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, recipe.epochs, best, row["seconds"])
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        _write_history(out_dir / "history.csv", history)
    if not history:
        raise InstagError(f"{out_dir}: interrupted before the first epoch ended; nothing saved")
    best_model, _ = runs.load_torch(out_dir, device=device)
    tuned = tune_thresholds(predict(best_model, val_inputs, device, present=val.present),
                            val.labels, val.mask)
    best_row = min(history, key=lambda r: r["val_loss"])
    test_probs = predict(best_model, data.test.inputs(), device, present=data.test.present)
    return _finish(out_dir, data, meta, test_probs,
                   tuned, interrupted=interrupted, best_epoch=best_row["epoch"],
                   best_val_loss=best_row["val_loss"])


def _epoch(model, opt, data: tuple, order, batch_size: int, device: str) -> float:
    """One pass over the training bags in `order`, an Adam step a batch; the mean loss."""
    x, y, m, present = data
    model.train()
    total, seen = 0.0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        mask = None if present is None else present[idx]
        if mask is not None:  # the batch's longest bag, not the data set's
            longest = int(mask.any(dim=0).nonzero().max()) + 1
            probs = model(x[idx, :longest].to(device), mask[:, :longest].to(device))[0]
        else:
            probs = model(x[idx].to(device))[0]
        loss = partial_bce(probs, y[idx].to(device), m[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss", "seconds"])
        w.writeheader()
        w.writerows(history)
