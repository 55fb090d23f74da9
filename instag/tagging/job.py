"""The per-file part of a tagging job that both engines share: a file's features to its result
(bags, scores, thresholds, segments), and the running summary and reporter of a run."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from instag.common.errors import InstagError
from instag.features.decode import AudioError, check_waveform, to_mono
from instag.features.embed import Embedder
from instag.features.instances import INSTANCE_SECONDS, Features, check_features
from instag.features.resample import TARGET_SR, resample
from instag.tagging.counts import RunCounts
from instag.tagging.options import Compute, Config, TagOptions
from instag.tagging.results import FileResult
from instag.tagging.scoring import Scoring
from instag.tagging.walk import PathList, as_paths, files_and_folder_errors


class Reporter:
    """What a run tells its caller as it goes; the CLI draws progress from it."""

    def started(self, counts: RunCounts, provider: str | None) -> None:
        """`provider`: where scoring runs (None when the run only embeds)."""

    def file_done(self, result: FileResult, counts: RunCounts) -> None: ...

    def embedded(self, counts: RunCounts) -> None:
        """More audio was embedded (`summary.embedded_s`): progress between finished files."""

    def note(self, message: str) -> None:
        """Something the user should know that is not about one file."""


class InOrder:
    """Results handed out in walk order: a finished file waits for every earlier one (both
    engines finish files out of order: the cache, short files, scoring batches)."""

    def __init__(self) -> None:
        self.waiting: dict[int, FileResult] = {}
        self.next = 0  # the walk position handed out next
        self.out: deque[FileResult] = deque()

    def put(self, position: int, result: FileResult) -> None:
        self.waiting[position] = result
        while self.next in self.waiting:
            self.out.append(self.waiting.pop(self.next))
            self.next += 1

    def held(self) -> int:
        """Results finished but not yet taken (what bounds a run's memory)."""
        return len(self.waiting) + len(self.out)

    def take(self) -> Iterator[FileResult]:
        while self.out:
            yield self.out.popleft()


class JobRun:
    """What a run of either engine has: its paths, options, reporter and running summary."""

    def __init__(self, paths: Iterable[str | Path], opts: TagOptions | Config,
                 reporter: Reporter | None, scoring: bool = True) -> None:
        self.paths = as_paths(paths)
        # resolved once, here: the engines read values from it, never the environment
        self.config = opts if isinstance(opts, Config) else opts.resolve(scoring)
        self.reporter = reporter or Reporter()
        self.counts = RunCounts()
        self.thresholds: dict[str, float] = {}  # applied, per instrument: known once started

    def walk(self) -> tuple[PathList, list[tuple[Path, str]]]:
        """The run's files and the folders it could not read; the summary's total counts both."""
        files, errors = files_and_folder_errors(self.paths, self.config.walk.extensions,
                                                self.config.walk.hidden)
        self.counts.total = len(files) + len(errors)
        return files, errors


@functools.lru_cache(maxsize=2)
def _models(compute: Compute) -> tuple[Embedder, Scoring]:
    embedder = compute.embedder()
    embedder.fetch_if_missing()
    return embedder, Scoring(compute)


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
    embedder, scoring = _models(opts.resolve().compute)
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
    x = to_mono(x) if x.ndim == 2 else x
    try:
        audio = check_waveform(path, x, int(sample_rate))
        embedder, _ = _models(opts.resolve().compute)
        wave = audio if sample_rate == TARGET_SR else resample(audio, int(sample_rate),
                                                               opts.resampler)
        features = embedder.embed_blocks([wave])
    except AudioError as e:
        return FileResult(path, e.status, e.reason)
    return score(features, opts, name)
