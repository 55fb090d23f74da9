"""Scoring, shared by both engines: `ScoringModel` scores bags with an exported ONNX model
through onnxruntime (CUDA where it works); `Scoring` adds the run's bag and threshold settings;
`ScoringBatch` gathers files for one round of calls.

One session per process, created once and validated on load (metadata, inputs and outputs:
``common.modelmeta``). Bags of different lengths are padded into batches with the mask (models
whose metadata says they support padding) or grouped by length (the others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instag.common import modelmeta
from instag.common.devices import Device, cuda_unavailable
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.common.modelmeta import ModelMeta
from instag.common.onnxsession import CUDA, choose_providers, open_session
from instag.common.status import Status
from instag.features.instances import INSTANCE_SECONDS, Features
from instag.tagging.bags import Bag, make_bags
from instag.tagging.counts import RunCounts
from instag.tagging.identity import result_identity
from instag.tagging.options import Compute
from instag.tagging.results import FileResult, bag_result
from instag.tagging.thresholds import load_thresholds

MAX_BATCH_INSTANCES = 1 << 17  # 16 MB of uint8 features per call
SCORE_BATCH_BAGS = 1024  # bags gathered before one round of ONNX calls ...
SCORE_BATCH_FILES = 32  # ... or files, so results reach the caller as the run goes


@dataclass(frozen=True)
class BagScores:
    bag: np.ndarray  # [C] bag probabilities
    instance: np.ndarray  # [T, C] instance probabilities
    attention: np.ndarray  # [T, C] attention weights, summing to 1 over T


class ScoringModel:
    """An ONNX scoring model, validated on load; `score` takes bags of uint8 features."""

    def __init__(self, path: str | Path, device: Device | str = Device.AUTO,
                 expected_classes: Sequence[str] | None = None, batch_size: int = 256) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InstagError(f"{self.path}: no such model file",
                              "export one with `instag export-onnx RUN_DIR` or run `instag setup`")
        device = Device.parse(device)
        try:
            self.session = open_session(self.path, choose_providers(device))
        except InstagError:
            raise
        except Exception as e:
            raise InstagError(f"{self.path}: not a loadable ONNX model ({str(e)[:200]})",
                              "re-export it with `instag export-onnx`") from e
        self.provider = self.session.get_providers()[0]
        if device is Device.CUDA and self.provider != CUDA:
            raise cuda_unavailable("onnxruntime", "no GPU, or CUDA/cuDNN libraries missing")
        self.meta = ModelMeta.from_props(self.session.get_modelmeta().custom_metadata_map,
                                         self.path)
        self.model_name = self.meta.model
        self.classes = self.meta.classes
        self.in_dim = self.meta.in_dim
        if expected_classes is not None and tuple(expected_classes) != self.classes:
            raise InstagError(f"{self.path}: classes {list(self.classes)} differ from the "
                              f"expected {list(expected_classes)}", "use a matching model")
        self._check_io()
        self._check_outputs()
        self.batch_size = batch_size

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        features, mask = modelmeta.INPUTS
        ok = (set(inputs) == set(modelmeta.INPUTS)
              and inputs[features].type == "tensor(uint8)"
              and inputs[mask].type == "tensor(bool)"
              and len(inputs[features].shape) == 3
              and inputs[features].shape[2] == self.in_dim
              and tuple(outputs) == modelmeta.OUTPUTS)
        if not ok:
            raise InstagError(f"{self.path}: unexpected inputs/outputs "
                              f"({[(i.name, i.type, i.shape) for i in inputs.values()]})",
                              "re-export it with `instag export-onnx`")

    def _check_outputs(self) -> None:
        """Bags through the model before any real one: two bag lengths (a model whose outputs
        change shape with the bag's length, or that fails on a longer bag, is refused now, not
        after an hour of decoding), outputs with as many instruments as its metadata names (or
        every score would go to the wrong name), and finite (NaN would read as "absent")."""
        lengths = (self.meta.fixed_instances,) if self.meta.fixed_instances else (1, 3)
        for t in lengths:
            try:
                bag, inst, att = self.run(np.zeros((2, t, self.in_dim), np.uint8),
                                          np.ones((2, t), bool))
            except Exception as e:
                raise InstagError(f"{self.path}: the model fails on a test bag of {t} "
                                  f"instances ({str(e)[:200]})",
                                  "re-export it with `instag export-onnx`") from e
            self._check_shapes(bag, inst, att, 2, t)
            if not all(np.isfinite(x).all() for x in (bag, inst, att)):
                raise InstagError(f"{self.path}: the model's outputs on a test bag are not "
                                  "finite (NaN or infinity)", "re-export it with `instag "
                                  "export-onnx` from a run whose training converged")

    def _check_shapes(self, bag, inst, att, b: int, t: int) -> None:
        c = len(self.classes)
        if bag.shape != (b, c) or inst.shape != (b, t, c) or att.shape != (b, t, c):
            raise InstagError(
                f"{self.path}: for {b} bags of {t} instances the model outputs shapes "
                f"{bag.shape}, {inst.shape}, {att.shape}; its metadata names {c} instruments, "
                f"so ({b}, {c}), ({b}, {t}, {c}), ({b}, {t}, {c}) were expected",
                "re-export it with `instag export-onnx`")

    def run(self, features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """One call: uint8 [B, T, D] and bool [B, T] -> (bag, instance, attention)."""
        return tuple(self.session.run(None, dict(zip(modelmeta.INPUTS, (features, mask),
                                                     strict=True))))

    def score(self, bags: Sequence[np.ndarray]) -> list[BagScores]:
        """Score bags (uint8 [T_i, D] each) in as few calls as the batch size allows."""
        fixed = self.meta.fixed_instances
        for b in bags:
            if b.ndim != 2 or b.shape[1] != self.in_dim or len(b) == 0:
                raise ValueError(f"bag of shape {b.shape}; expected [T >= 1, {self.in_dim}]")
            if fixed and len(b) != fixed:
                raise InstagError(f"{self.path}: {self.model_name} scores bags of exactly "
                                  f"{fixed} instances, got {len(b)}", f"use --bag {fixed}")
        results: list[BagScores | None] = [None] * len(bags)
        order = sorted(range(len(bags)), key=lambda i: len(bags[i]))
        for group in self._batches(order, [len(b) for b in bags]):
            t = max(len(bags[i]) for i in group)
            feats = np.zeros((len(group), t, self.in_dim), np.uint8)
            mask = np.zeros((len(group), t), bool)
            for row, i in enumerate(group):
                feats[row, : len(bags[i])] = bags[i]
                mask[row, : len(bags[i])] = True
            try:
                bag, inst, att = self.run(feats, mask)
            except Exception as e:  # onnxruntime's own errors: out of memory, a bad graph
                raise InstagError(f"{self.path}: the model failed on {len(group)} bags of {t} "
                                  f"instances ({str(e)[:200]})", "re-export it with `instag "
                                  "export-onnx`, or tag with a smaller --bag") from e
            self._check_shapes(bag, inst, att, len(group), t)
            for row, i in enumerate(group):
                n = len(bags[i])
                results[i] = BagScores(bag[row], inst[row, :n], att[row, :n])
        return results  # type: ignore[return-value]

    def _batches(self, order: list[int], lengths: list[int]) -> Iterator[list[int]]:
        """Consecutive (length-sorted) bags: at most batch_size of them and MAX_BATCH_INSTANCES
        padded instances (memory stays bounded), of one length where padding is not allowed."""
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) == self.batch_size
                          or (not self.meta.supports_padding and lengths[i] != lengths[batch[0]])
                          or lengths[i] * (len(batch) + 1) > MAX_BATCH_INSTANCES):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch


class Scoring:
    """The scoring model with the run's bag and threshold settings: bags of a file's features
    and its result from their scores (shared by the engines)."""

    def __init__(self, compute: Compute) -> None:
        opts = compute
        if opts.model is None:  # resolved for a run that only embeds
            raise ValueError("Scoring needs a Compute resolved with its model")
        self.scorer = ScoringModel(opts.model, opts.device)
        self.exact = self.scorer.meta.fixed_instances  # the model takes exactly this many
        if self.exact and opts.bag != self.exact:
            raise InstagError(f"{self.scorer.path}: {self.scorer.model_name} scores bags of "
                              f"exactly {self.exact} instances", f"use --bag {self.exact}")
        self.classes = self.scorer.classes
        self.thresholds = load_thresholds(self.classes, opts.threshold, opts.thresholds_file,
                                          self.scorer.meta.thresholds)
        self.model_digest = file_digest(self.scorer.path)
        self.bag, self.hop = opts.bag, opts.hop
        self.bag_setting = f"{opts.bag or 'full'}/{opts.hop or opts.bag or ''}"
        self.segment_rule = opts.segment_rule  # not in identity(): no stored value depends on it

    def identity(self, features: str) -> str:
        """What a result depends on besides the file: the features' identity (VGGish, PCA,
        resampler), the scoring model's digest, the bags and the thresholds."""
        return result_identity(features, self.model_digest, self.bag_setting,
                               json.dumps(self.thresholds, sort_keys=True))

    def bags(self, feats: Features) -> list[Bag]:
        return make_bags(len(feats.values), self.bag, self.hop, exact=bool(self.exact))

    def too_short(self, path: Path, feats: Features) -> FileResult:
        """A file with features but no bag: shorter than a fixed-size model's bag."""
        need = f"{self.exact} instances ({self.exact * INSTANCE_SECONDS:.2f} s)"
        return FileResult(path, Status.TOO_SHORT, f"{feats.duration:.2f} s; "
                          f"{self.scorer.model_name} scores exactly {need}",
                          duration=feats.duration, features=feats)

    def score_many(self, work: list[tuple[Path, Features, list[Bag]]]) -> list[FileResult]:
        """Each file's result, from one round of ONNX calls over every file's bags."""
        flat = [feats.values[b.first : b.stop] for _, feats, bags in work for b in bags]
        scored = iter(self.scorer.score(flat))
        out = []
        for path, feats, bags in work:
            if not bags:
                out.append(self.too_short(path, feats))
                continue
            bs = [next(scored) for _ in bags]
            scores = (np.stack([x.bag for x in bs]), np.concatenate([x.instance for x in bs]),
                      np.concatenate([x.attention for x in bs]))
            if not all(np.isfinite(x).all() for x in scores):  # never written
                out.append(FileResult(path, Status.ERROR, "the model gave non-finite scores "
                                      "(NaN or infinity) for it", duration=feats.duration,
                                      features=feats))
                continue
            out.append(self.result(path, feats, bags, *scores))
        return out

    def result(self, path: Path, feats: Features, bags: list[Bag], bag, instance,
               attention) -> FileResult:
        rows = np.cumsum([0] + [b.length for b in bags])
        return FileResult(path, Status.OK, duration=feats.duration, features=feats, bags=[
            bag_result(b, self.classes, bag[j], instance[rows[j] : rows[j + 1]],
                       attention[rows[j] : rows[j + 1]], self.thresholds)
            for j, b in enumerate(bags)], segment_rule=self.segment_rule)


class ScoringBatch:
    """Files waiting for their scores, scored together in one round of ONNX calls once
    SCORE_BATCH_FILES files or SCORE_BATCH_BAGS bags have gathered (or when flushed): both
    engines fill one. Each file comes with a key of the caller's, handed back with its
    result."""

    def __init__(self, scoring: Scoring, counts: RunCounts) -> None:
        self.scoring, self.counts = scoring, counts
        self.waiting: list[tuple[object, Path, Features, list[Bag]]] = []
        self.bags = 0

    def add(self, key: object, path: Path, feats: Features) -> list[tuple[object, FileResult]]:
        """Queue a file; the results of the batch when this one filled it."""
        bags = self.scoring.bags(feats)
        self.waiting.append((key, path, feats, bags))
        self.bags += len(bags)
        self.counts.awaiting_scores += 1
        full = self.bags >= SCORE_BATCH_BAGS or len(self.waiting) >= SCORE_BATCH_FILES
        return self.flush() if full else []

    def flush(self) -> list[tuple[object, FileResult]]:
        """Score every waiting file: (key, result) in the order they came."""
        if not self.waiting:
            return []
        results = self.scoring.score_many([(p, f, b) for _, p, f, b in self.waiting])
        done = [(key, result) for (key, *_), result in zip(self.waiting, results, strict=True)]
        self.counts.awaiting_scores -= len(done)
        self.waiting, self.bags = [], 0
        return done
