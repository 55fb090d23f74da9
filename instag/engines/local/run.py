"""One tagging (or embedding) run over a library on this machine, as a list of stages.

Each file is a `FileTask` and goes through the stages in order; a file leaves at the first
that finishes it:

1. `look_up`: the cache knows the file (same path, size, mtime; same features identity): its
   features go to scoring, or its remembered failure is its result. Nothing is decoded.
2. `decode`: the decode pool streams its 16 kHz blocks (a failure, crash or stall is its
   result).
3. `embed`: the blocks, cut into VGGish chunks; chunks of several files in one VGGish call.
4. `store`: the complete features, checked, committed to the cache.
5. `score`: bags of several files in one ONNX call (`ScoringBatch`, shared with Ray).
6. `hand_out`: results in walk order (`InOrder`, shared with Ray); the file is forgotten.

A bounded window (results waiting for an earlier file, files in the pool) keeps memory flat for
any library. ``embed`` is the same run without `score`: its results carry the features only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from instag.common.status import Status
from instag.engines.local.cache import Cache
from instag.engines.local.decoder import Kind
from instag.engines.local.pool import Event
from instag.engines.local.session import Session
from instag.features.decode import AudioError
from instag.features.embed import NON_FINITE
from instag.features.instances import (
    INSTANCE_SECONDS,
    Chunker,
    Features,
    check_features,
    chunk_instances,
)
from instag.features.precision import Precision
from instag.tagging.counts import RunCounts
from instag.tagging.identity import FileKey, result_identity
from instag.tagging.job import InOrder, JobRun, Reporter
from instag.tagging.options import Config, TagOptions
from instag.tagging.results import FileResult
from instag.tagging.scoring import ScoringBatch

# VGGish windows per call (its activations are most of a run's memory): as fast per window as
# 128, with half the memory; a chunk of 64 instances (CHUNK_INSTANCES) is one call
EMBED_BATCH_WINDOWS = 64
MAX_WAITING_RESULTS = 256  # finished results held: waiting for an earlier file, or for the caller


@dataclass
class FileTask:
    """One file on its way through the stages: what the run knows of it so far."""

    idx: int  # its place in the walk
    path: Path
    key: FileKey | None = None  # size and mtime as looked up (and decoded)
    chunker: Chunker = field(default_factory=Chunker)
    parts: list[np.ndarray] = field(default_factory=list)  # its embedded chunks so far
    decoded: bool = False  # every block has arrived


class _Run:
    """One run over a list of files, in a session (the cache open, its lock held)."""

    def __init__(self, files: Sequence[Path], session: TagSession, counts: RunCounts,
                 private: bool) -> None:
        self.files = files
        self.session = session
        self.cache = session.cache
        self.embedder = embedder = session.embedder
        self.scoring = scoring = session.scoring
        self.reporter = session.reporter
        self.counts = counts
        self.force = session.config.force
        # never more workers than files, unless the pool outlives this run
        jobs = session.config.local.jobs or os.cpu_count() or 1
        self.jobs = max(1, min(jobs, len(files)) if private else jobs)
        self.identity = (scoring.identity(embedder.identity) if scoring else
                         result_identity(embedder.identity))
        self.decoding: dict[int, FileTask] = {}  # files in the pool or in VGGish, by walk index
        self.ready: list[tuple[FileTask, np.ndarray]] = []  # chunks waiting for a VGGish call
        self.ready_windows = 0  # ... and the VGGish windows they take
        self.batch = ScoringBatch(scoring, counts) if scoring else None
        self.window = InOrder()

    def results(self) -> Iterator[FileResult]:
        """Walk the files in order: each is looked up, else decoded; yield results as soon as
        every earlier file's result has been yielded."""
        self.reporter.started(self.counts,
                              self.scoring.scorer.provider if self.scoring else None)
        pool = None
        next_in = 0
        finished = False
        try:
            while self.window.next < len(self.files):
                # files in the pool, not files awaiting VGGish: a decoded short file must not
                # hold the next one back until the next VGGish call
                while (next_in < len(self.files) and self.window.held() < MAX_WAITING_RESULTS
                       and (pool.in_flight if pool else 0) < 2 * self.jobs):
                    task = FileTask(next_in, self.files[next_in])
                    if not self.look_up(task):
                        if pool is None:  # files to embed: VGGish loads while workers start
                            self.embedder.load_soon()
                            pool = self.session.pool(self.jobs)
                        self.decoding[task.idx] = task
                        pool.submit(task.idx, task.path)
                    next_in += 1
                if pool is not None and pool.in_flight:
                    self.decode(pool.next_event())
                elif self.decoding:
                    self.embed()
                else:  # nothing decoding: what remains waits only for scoring
                    self.hand_out(self.batch.flush() if self.batch else [])
                yield from self.window.take()
            finished = True
        finally:
            if pool is not None and not finished:
                self.session.drop_pool()  # a run cut short: its workers' files are stale

    # -- 1. look_up ----------------------------------------------------------------------------
    def look_up(self, task: FileTask) -> bool:
        """Finish a file from the cache if possible; True when nothing is left to decode."""
        try:
            task.key = FileKey.of(task.path)
        except FileNotFoundError:
            self.finish(task, FileResult(task.path, Status.MISSING, "file vanished"))
            return True
        except OSError as e:
            self.finish(task, FileResult(task.path, Status.UNREADABLE, e.strerror or str(e)))
            return True
        if self.force:
            return False
        cached = self.cache.get_features(task.key, self.embedder.identity)
        if cached is None:
            return False
        self.counts.cached()
        if cached.status is not Status.OK:
            self.finish(task, FileResult(task.path, cached.status, cached.reason), True)
        else:
            self.score(task, Features(cached.feats, cached.duration), from_cache=True)
        return True

    # -- 2. decode -----------------------------------------------------------------------------
    def decode(self, event: Event | None) -> None:
        """A decode pool event; None (a lull) embeds what is ready."""
        if event is None:
            self.embed()
            return
        task = self.decoding.get(event.idx)
        if task is None:
            return  # a file already given up on
        if event.kind is Kind.BLOCK:
            self.add_ready(task, task.chunker.push(event.block))
        elif event.kind is Kind.DONE:
            self.add_ready(task, task.chunker.finish())
            task.decoded = True  # after its chunks: the file is complete once they are in
        else:  # FAILED, CRASHED, STALLED
            self.fail(task, event.status, event.reason)
        if self.ready_windows >= EMBED_BATCH_WINDOWS:
            self.embed()

    # -- 3. embed ------------------------------------------------------------------------------
    def add_ready(self, task: FileTask, chunks: list[np.ndarray]) -> None:
        """Queue chunks for VGGish; a call never exceeds EMBED_BATCH_WINDOWS (its memory)."""
        for chunk in chunks:
            windows = chunk_instances(chunk) + 1  # + the window straddling its padding
            if self.ready and self.ready_windows + windows > EMBED_BATCH_WINDOWS:
                self.embed()
            self.ready.append((task, chunk))
            self.ready_windows += windows

    def embed(self) -> None:
        """Embed the ready chunks in one VGGish call, then store every file now complete."""
        live = [(t, c) for t, c in self.ready if t.idx in self.decoding]
        for (task, _), f in zip(live, self.embedder.embed_chunks([c for _, c in live]),
                                strict=True):
            if task.idx not in self.decoding:
                continue  # failed on an earlier chunk of this call
            if f is None:
                self.fail(task, Status.ERROR, NON_FINITE)
            else:
                task.parts.append(f)
        self.ready.clear()
        self.ready_windows = 0
        self.counts.embedded_audio(sum(chunk_instances(c) for _, c in live) * INSTANCE_SECONDS)
        for task in sorted((t for t in self.decoding.values() if t.decoded),
                           key=lambda t: t.idx):
            self.store(task)
        if live:  # after the files now complete are counted
            self.reporter.embedded(self.counts)

    # -- 4. store ------------------------------------------------------------------------------
    def store(self, task: FileTask) -> None:
        """A file's complete features: checked, cached, counted, then scored."""
        del self.decoding[task.idx]
        feats = Features.from_parts(task.parts, task.chunker.samples)
        try:
            check_features(task.path, feats)
        except AudioError as e:
            self.fail(task, e.status, e.reason)
            return
        self.cache.put_features(task.key, self.embedder.identity, Status.OK,
                                duration=feats.duration, feats=feats.values)
        self.counts.cached()
        # the audio embedded, not the file's duration: partly embedded files are the rest
        self.counts.embedded_file(len(feats.values) * INSTANCE_SECONDS)
        self.score(task, feats)

    def fail(self, task: FileTask, status: Status, reason: str) -> None:
        """A file that cannot be embedded: remembered (a permanent failure stays), finished."""
        self.decoding.pop(task.idx, None)
        if task.key is not None:
            self.cache.put_features(task.key, self.embedder.identity, status, reason)
            self.counts.cached(status.permanent)
        self.finish(task, FileResult(task.path, status, reason))

    # -- 5. score ------------------------------------------------------------------------------
    def score(self, task: FileTask, feats: Features, from_cache: bool = False) -> None:
        if self.batch is None:  # an embedding run: the features are the result
            self.finish(task, FileResult(task.path, Status.OK, duration=feats.duration,
                                         features=feats), from_cache)
        else:
            self.hand_out(self.batch.add((task, from_cache), task.path, feats))

    # -- 6. hand_out ---------------------------------------------------------------------------
    def hand_out(self, done: list[tuple[object, FileResult]]) -> None:
        for (task, from_cache), result in done:  # type: ignore[misc]
            self.finish(task, result, from_cache)

    def finish(self, task: FileTask, result: FileResult, from_cache: bool = False) -> None:
        """A file's result: stamped with the file as it was decoded, counted, and queued in
        walk order; nothing else of the file is kept."""
        if task.key is not None:
            result.size, result.mtime_ns = task.key.size, task.key.mtime_ns
        result.model_id = self.identity
        self.counts.add(result, from_cache)
        self.reporter.file_done(result, self.counts)
        self.window.put(task.idx, result)


class TagSession(Session):
    """What a run sets up once, kept for several runs: the cache's lock and connection, VGGish,
    the scoring model and the decode pool (the beets plugin holds one for a whole import, not
    one per album), usable from any thread (`Session`). Use it as a context manager; `tag` (or
    `embed`) in it runs over paths."""

    def tag(self, paths: Iterable[str | Path]) -> TagRun:
        """A run over `paths` in this session (its results, as `instag.tag`'s)."""
        return TagRun(paths, self.config, self.reporter, self.with_scoring, session=self)


class TagRun(JobRun):
    """A run over `paths`: iterate it for one FileResult per audio file in walk order (then one
    per unreadable folder); `counts` counts them as they come. The cache's lock is held while
    iterating (by its own session, or by the `TagSession` it was made in). Build it with `tag`,
    `embed` or `TagSession.tag`."""

    def __init__(self, paths: Iterable[str | Path], opts: TagOptions | Config,
                 reporter: Reporter | None, scoring: bool, session: TagSession | None = None
                 ) -> None:
        super().__init__(paths, opts, reporter, scoring)
        self.scoring = scoring
        self.session = session
        self._cache: Cache | None = None  # the session's, while the run goes

    def same_audio(self, was: FileKey, now: FileKey) -> bool:
        """Whether `now` is what instag's own tag writes made of `was` (the cache remembers)."""
        return self._cache is not None and self._cache.same_audio(was, now)

    def rekey(self, was: FileKey, now: FileKey) -> None:
        """instag rewrote a file's tags: its cache entry follows it (the audio is the same)."""
        if self._cache is not None:
            self._cache.rekey(was, now)

    def __iter__(self) -> Iterator[FileResult]:
        files, folder_errors = self.walk()
        with ExitStack() as stack:
            session = self.session or stack.enter_context(
                TagSession(self.config, self.reporter, self.scoring))
            if session.scoring is not None:
                self.thresholds = session.scoring.thresholds
            self._cache = session.cache
            try:
                yield from session.run(_Run(files, session, self.counts,
                                            self.session is None).results)
            finally:
                self._cache = None
        for p, why in folder_errors:
            result = FileResult(p, Status.UNREADABLE, why)
            self.counts.add(result, from_cache=False)
            self.reporter.file_done(result, self.counts)
            yield result


def tag(paths: Iterable[str | Path], options: TagOptions | Config | None = None,
        reporter: Reporter | None = None) -> TagRun:
    """Tag every audio file under `paths` (files or folders): iterate the result for
    FileResults, each with its status, bags, probabilities and segments."""
    return TagRun(paths, options or TagOptions(), reporter, scoring=True)


def embed(paths: Iterable[str | Path], options: TagOptions | None = None,
          reporter: Reporter | None = None) -> TagRun:
    """The same run without scoring: each ok FileResult carries its `features` (uint8 [N, 128]
    per 0.96 s instance); the model options are not used. FP32's features unless `precision`
    is given: tagging's default (settings, environment) may be INT8, but features to train on
    or to compare with OpenMIC's released ones are FP32's."""
    options = options or TagOptions()
    if options.precision is None:
        options = replace(options, precision=Precision.FP32)
    return TagRun(paths, options, reporter, scoring=False)
