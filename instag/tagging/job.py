"""The per-file part of a tagging job that both engines share: a file's features to its result
(bags, scores, thresholds, segments), and the running summary and reporter of a run."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag.common import locations
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.common.status import Status
from instag.features.decode import AudioError, check_waveform
from instag.features.embed import Embedder
from instag.features.instances import INSTANCE_SECONDS, Features, check_features
from instag.features.resample import TARGET_SR, resample
from instag.tagging.bags import Bag, make_bags
from instag.tagging.identity import result_identity
from instag.tagging.options import TagOptions
from instag.tagging.results import FileResult, bag_result
from instag.tagging.scoring import Scorer
from instag.tagging.thresholds import load_thresholds
from instag.tagging.walk import PathList, files_and_folder_errors

MIN_FILES_FOR_ETA = 3  # files embedded before an estimate of the time left is shown
SCORE_BATCH_BAGS = 1024  # bags gathered before one round of ONNX calls ...
SCORE_BATCH_FILES = 32  # ... or files, so results reach the caller as the run goes


@dataclass
class Summary:
    """Running counts of a run."""

    total: int = 0
    done: int = 0  # files with their result (handed out in walk order)
    from_cache: int = 0  # files for which nothing was decoded in this run
    audio_s: float = 0.0  # of the files finished
    embedded_s: float = 0.0  # audio embedded in this run so far, as it happens
    embedded_files: int = 0  # files whose features this run computed ...
    embedded_files_s: float = 0.0  # ... and their audio
    scoring: int = 0  # files whose features are known, waiting for their scoring batch
    # what the local engine's cache holds of this run's files (from an earlier run or this one):
    # the next run starts from them
    cached_features: int = 0  # features, or a failure that stays
    failed: dict[Status, int] = field(default_factory=dict)  # status -> count
    failed_known: int = 0  # ... of which the cache (or a previous output) already knew
    # file tags (--write-tags): outcome (written, unchanged, would_change, unsupported,
    # failed) -> files
    file_tags_outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, result: FileResult, from_cache: bool) -> None:
        self.done += 1
        self.from_cache += from_cache
        self.audio_s += result.duration or 0.0
        if not result.ok:
            self.failed[result.status] = self.failed.get(result.status, 0) + 1
            self.failed_known += from_cache

    # each state change of a file, named, so that both engines count alike
    def embedded_audio(self, seconds: float) -> None:
        """More audio went through VGGish (progress between finished files)."""
        self.embedded_s += seconds

    def embedded_file(self, seconds: float) -> None:
        """A file's features are complete (`seconds`: the audio this run embedded of it)."""
        self.embedded_files += 1
        self.embedded_files_s += seconds

    def cached(self, count: int = 1) -> None:
        """The local cache holds the file's features, or a failure that stays."""
        self.cached_features += count

    def file_tags(self, outcome: str) -> None:
        """One file's own tags: written, unchanged, would_change (a dry run), unsupported (a
        format instag does not write) or failed."""
        key = str(getattr(outcome, "value", outcome))
        self.file_tags_outcomes[key] = self.file_tags_outcomes.get(key, 0) + 1

    @property
    def tags_failed(self) -> int:
        return self.file_tags_outcomes.get("failed", 0)

    @property
    def ok(self) -> int:
        return self.done - sum(self.failed.values())

    @property
    def failed_now(self) -> int:
        """Failures this run computed: a permanent failure remembered from an earlier run (the
        same file, unchanged) is listed, but is no news for a nightly job."""
        return sum(self.failed.values()) - self.failed_known

    @property
    def progressed(self) -> int:
        """Files past their decoding and embedding: what a progress display counts."""
        return self.done + self.scoring

    def eta(self, elapsed: float) -> float | None:
        """Seconds left, from the audio embedded per second so far and the average length of
        the files this run embedded; None until MIN_FILES_FOR_ETA of them are done."""
        if self.embedded_files < MIN_FILES_FOR_ETA or elapsed <= 0 or self.embedded_s <= 0:
            return None
        per_file = self.embedded_files_s / self.embedded_files
        partly = max(0.0, self.embedded_s - self.embedded_files_s)  # of files being embedded
        left = max(0.0, (self.total - self.progressed) * per_file - partly)
        return left / (self.embedded_s / elapsed)


class Reporter:
    """What a run tells its caller as it goes; the CLI draws progress from it."""

    def started(self, summary: Summary, provider: str | None) -> None:
        """`provider`: where scoring runs (None when the run only embeds)."""

    def file_done(self, result: FileResult, summary: Summary) -> None: ...

    def embedded(self, summary: Summary) -> None:
        """More audio was embedded (`summary.embedded_s`): progress between finished files."""

    def note(self, message: str) -> None:
        """Something the user should know that is not about one file."""


class JobRun:
    """What a run of either engine has: its paths, options, reporter and running summary."""

    def __init__(self, paths: Iterable[str | Path], opts: TagOptions,
                 reporter: Reporter | None) -> None:
        self.paths = list(paths)
        self.opts = opts
        self.reporter = reporter or Reporter()
        self.summary = Summary()
        self.thresholds: dict[str, float] = {}  # applied, per instrument: known once started

    def walk(self) -> tuple[PathList, list[tuple[Path, str]]]:
        """The run's files and the folders it could not read; the summary's total counts both."""
        files, errors = files_and_folder_errors(self.paths, self.opts.extensions,
                                                self.opts.hidden)
        self.summary.total = len(files) + len(errors)
        return files, errors


class Scoring:
    """The scoring model with the run's bag and threshold settings: bags of a file's features
    and its result from their scores (shared by the engines)."""

    def __init__(self, opts: TagOptions) -> None:
        self.scorer = Scorer(locations.resolve_model(opts.model), opts.device)
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
            for j, b in enumerate(bags)])


class ScoringBatch:
    """Files waiting for their scores, scored together in one round of ONNX calls once
    SCORE_BATCH_FILES files or SCORE_BATCH_BAGS bags have gathered (or when flushed): both
    engines fill one. Each file comes with a key of the caller's, handed back with its
    result."""

    def __init__(self, scoring: Scoring, summary: Summary) -> None:
        self.scoring, self.summary = scoring, summary
        self.waiting: list[tuple[object, Path, Features, list[Bag]]] = []
        self.bags = 0

    def add(self, key: object, path: Path, feats: Features) -> list[tuple[object, FileResult]]:
        """Queue a file; the results of the batch when this one filled it."""
        bags = self.scoring.bags(feats)
        self.waiting.append((key, path, feats, bags))
        self.bags += len(bags)
        self.summary.scoring += 1
        full = self.bags >= SCORE_BATCH_BAGS or len(self.waiting) >= SCORE_BATCH_FILES
        return self.flush() if full else []

    def flush(self) -> list[tuple[object, FileResult]]:
        """Score every waiting file: (key, result) in the order they came."""
        if not self.waiting:
            return []
        results = self.scoring.score_many([(p, f, b) for _, p, f, b in self.waiting])
        done = [(key, result) for (key, *_), result in zip(self.waiting, results, strict=True)]
        self.summary.scoring -= len(done)
        self.waiting, self.bags = [], 0
        return done


@functools.lru_cache(maxsize=2)
def _models(opts: TagOptions) -> tuple[Embedder, Scoring]:
    embedder = Embedder(opts.vggish, opts.pca, opts.resampler, opts.device,
                        precision=opts.vggish_precision())
    embedder.fetch_if_missing()
    return embedder, Scoring(opts)


def score(features: Features | np.ndarray, options: TagOptions | None = None,
          name: str = "<features>") -> FileResult:
    """One file's result from its features (uint8 [N, 128], 0.96 s instances, as `instag embed`
    or OpenMIC make them): bags, scores, thresholds, segments. No pool, cache or lock."""
    opts = options or TagOptions()
    if not isinstance(features, Features):
        values = np.asarray(features)
        if values.ndim != 2 or values.shape[1] != 128 or values.dtype != np.uint8:
            raise InstagError(f"features of shape {values.shape} and type {values.dtype}",
                              "pass uint8 [N, 128] (0.96 s instances)")
        features = Features(values, len(values) * INSTANCE_SECONDS)
    embedder, scoring = _models(opts)
    path = Path(name)
    try:
        check_features(path, features)
    except AudioError as e:
        return FileResult(path, e.status, e.reason, duration=features.duration)
    (result,) = scoring.score_many([(path, features, scoring.bags(features))])
    result.model_id = scoring.identity(embedder.identity)
    return result


def tag_audio(samples: np.ndarray, sample_rate: int, options: TagOptions | None = None,
              name: str = "<audio>") -> FileResult:
    """One waveform's result (float samples, [n] or [n, channels], at `sample_rate`): the
    same steps as a file in a run (mixed to mono, resampled to 16 kHz, VGGish, PCA, the
    model), checked as a decoded file is. No pool, cache or lock; the models load once."""
    opts = options or TagOptions()
    path = Path(name)
    x = np.asarray(samples, np.float32)
    x = x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x
    try:
        audio = check_waveform(path, x, int(sample_rate))
        embedder, _ = _models(opts)
        wave = audio if sample_rate == TARGET_SR else resample(audio, int(sample_rate),
                                                               opts.resampler)
        features = embedder.embed_blocks([wave])
    except AudioError as e:
        return FileResult(path, e.status, e.reason)
    return score(features, opts, name)
