"""One tagging (or embedding) run over a library: the stages wired together.

The run walks the files in order and, for each, finishes it from the cache or hands it to the
decode pool; it cuts the decoded 16 kHz blocks into VGGish chunks, embeds chunks of several files
in one call, commits each finished file's features to the cache, scores bags of several files in
one ONNX call and hands out results in walk order. A bounded window (results waiting for an
earlier file, files being decoded) keeps memory flat for any library, and nothing is kept of a
file once its result is out.

A file the cache knows (same path, size, mtime; same features identity) is not decoded again:
its features are scored (cheaper than keeping scores: see `cache`). ``embed`` is the same run
without the scoring: its results carry the features only.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np

from instag.common.status import Status
from instag.engines.local.cache import Cache
from instag.engines.local.pool import Event, Kind
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
from instag.tagging.job import JobRun, Reporter
from instag.tagging.options import TagOptions
from instag.tagging.results import FileResult
from instag.tagging.scoring import ScoringBatch

# VGGish windows per call (its activations are most of a run's memory): as fast per window as
# 128, with half the memory; a chunk of 64 instances (CHUNK_INSTANCES) is one call
EMBED_BATCH_WINDOWS = 64
MAX_WAITING_RESULTS = 256  # finished results held: waiting for an earlier file, or for the caller


class _Run:
    """State of one run over a list of files, in a session (the cache open, its lock held)."""

    def __init__(self, files: Sequence[Path], session: TagSession, counts: RunCounts,
                 private: bool) -> None:
        self.files = files
        self.session = session
        self.opts = opts = session.opts
        self.cache = session.cache
        self.embedder = embedder = session.embedder
        self.scoring = scoring = session.scoring
        self.reporter = session.reporter
        self.counts = counts
        # never more workers than files, unless the pool outlives this run
        jobs = opts.jobs or os.cpu_count() or 1
        self.jobs = max(1, min(jobs, len(files)) if private else jobs)
        self.identity = (scoring.identity(embedder.identity) if scoring else
                         result_identity(embedder.identity))
        self.keys: dict[int, FileKey] = {}
        self.waiting: dict[int, FileResult] = {}  # finished, held until their turn
        self.next_out = 0
        self.outbox: deque[FileResult] = deque()  # in walk order, for the caller
        self.chunkers: dict[int, Chunker] = {}  # files being decoded
        self.parts: dict[int, list[np.ndarray]] = {}  # their embedded chunks so far
        self.decoded: set[int] = set()  # ... of which every block has arrived
        self.ready: list[tuple[int, np.ndarray]] = []  # chunks waiting for a VGGish call
        self.ready_windows = 0  # ... and the VGGish windows they take
        # (file, features, from cache, its bags), and how many bags they hold together
        self.batch = ScoringBatch(scoring, counts) if scoring else None

    def results(self) -> Iterator[FileResult]:
        """Walk the files in order: finish what the cache knows, send the rest to the decode
        pool, and yield results as soon as every earlier file's result has been yielded."""
        self.reporter.started(self.counts,
                              self.scoring.scorer.provider if self.scoring else None)
        pool = None
        next_in = 0
        finished = False
        try:
            while self.next_out < len(self.files):
                # files in the pool, not files awaiting VGGish: a decoded short file must not
                # hold the next one back until the next VGGish call
                while (next_in < len(self.files) and self.held() < MAX_WAITING_RESULTS
                       and (pool.in_flight if pool else 0) < 2 * self.jobs):
                    if not self.from_cache(next_in):
                        if pool is None:  # files to embed: VGGish loads while workers start
                            self.embedder.load_soon()
                            pool = self.session.pool(self.jobs)
                        self.chunkers[next_in], self.parts[next_in] = Chunker(), []
                        pool.submit(next_in, self.files[next_in])
                    next_in += 1
                if pool is not None and pool.in_flight:
                    self.on_event(pool.next_event())
                elif self.chunkers:
                    self.embed_ready()
                else:  # nothing decoding: what remains waits only for scoring
                    self.finish_scored(self.batch.flush() if self.batch else [])
                while self.outbox:
                    yield self.outbox.popleft()
            finished = True
        finally:
            if pool is not None and not finished:
                self.session.drop_pool()  # a run cut short: its workers' files are stale

    # -- bookkeeping ---------------------------------------------------------------------------
    def held(self) -> int:
        """Results finished but not yet handed out (a run served from the cache finishes files
        faster than its caller takes them: without this bound it would hold them all)."""
        return len(self.waiting) + len(self.outbox)

    def finish(self, idx: int, result: FileResult, from_cache: bool = False) -> None:
        # the file as it was decoded; then forgotten: the run's state stays the walk's list
        # and its window, whatever the library's size
        if (key := self.keys.pop(idx, None)) is not None:
            result.size, result.mtime_ns = key.size, key.mtime_ns
        result.model_id = self.identity
        self.counts.add(result, from_cache)
        self.reporter.file_done(result, self.counts)
        self.waiting[idx] = result
        while self.next_out in self.waiting:
            self.outbox.append(self.waiting.pop(self.next_out))
            self.next_out += 1

    def fail(self, idx: int, status: Status, reason: str) -> None:
        if idx in self.keys:
            self.cache.put_features(self.keys[idx], self.embedder.identity, status, reason)
            self.counts.cached(status.permanent)
        self.finish(idx, FileResult(self.files[idx], status, reason))

    def from_cache(self, idx: int) -> bool:
        """Finish a file from the cache if possible; True when nothing is left to decode."""
        path = self.files[idx]
        try:
            key = self.keys[idx] = FileKey.of(path)
        except FileNotFoundError:
            self.finish(idx, FileResult(path, Status.MISSING, "file vanished"))
            return True
        except OSError as e:
            self.finish(idx, FileResult(path, Status.UNREADABLE, e.strerror or str(e)))
            return True
        if self.opts.force:
            return False
        cached = self.cache.get_features(key, self.embedder.identity)
        if cached is None:
            return False
        self.counts.cached()
        if cached.status is not Status.OK:
            self.finish(idx, FileResult(path, cached.status, cached.reason), from_cache=True)
            return True
        feats = Features(cached.feats, cached.duration)
        if self.scoring is None:
            self.finish(idx, FileResult(path, Status.OK, duration=feats.duration,
                                        features=feats), from_cache=True)
            return True
        self.add_for_scoring(idx, feats, from_cache=True)
        return True

    # -- decoding and embedding ----------------------------------------------------------------
    def on_event(self, event: Event | None) -> None:
        """A decode pool event; None (a lull) embeds what is ready."""
        if event is None:
            self.embed_ready()
            return
        idx = event.idx
        if idx not in self.chunkers:
            return  # a file already given up on
        if event.kind is Kind.BLOCK:
            self.add_ready(idx, self.chunkers[idx].push(event.block))
        elif event.kind is Kind.DONE:
            self.add_ready(idx, self.chunkers[idx].finish())
            self.decoded.add(idx)  # after its chunks: the file is complete once they are in
        else:  # FAILED, CRASHED, STALLED
            self._drop(idx)
            self.fail(idx, event.status, event.reason)
        if self.ready_windows >= EMBED_BATCH_WINDOWS:
            self.embed_ready()

    def add_ready(self, idx: int, chunks: list[np.ndarray]) -> None:
        """Queue chunks for VGGish; a call never exceeds EMBED_BATCH_WINDOWS (its memory)."""
        for chunk in chunks:
            windows = chunk_instances(chunk) + 1  # + the window straddling its padding
            if self.ready and self.ready_windows + windows > EMBED_BATCH_WINDOWS:
                self.embed_ready()
            self.ready.append((idx, chunk))
            self.ready_windows += windows

    def embed_ready(self) -> None:
        """Embed the ready chunks in one VGGish call; cache every file that is now complete
        and pass it on."""
        live = [(i, c) for i, c in self.ready if i in self.chunkers]
        for (i, _), f in zip(live, self.embedder.embed_chunks([c for _, c in live]),
                             strict=True):
            if i not in self.chunkers:
                continue  # failed on an earlier chunk of this call
            if f is None:
                self._drop(i)
                self.fail(i, Status.ERROR, NON_FINITE)
                continue
            self.parts[i].append(f)
        self.ready.clear()
        self.ready_windows = 0
        self.counts.embedded_audio(sum(chunk_instances(c) for _, c in live) * INSTANCE_SECONDS)
        for i in sorted(self.decoded & set(self.chunkers)):
            feats = Features.from_parts(self.parts[i], self.chunkers[i].samples)
            self._drop(i)
            try:
                check_features(self.files[i], feats)
            except AudioError as e:
                self.fail(i, e.status, e.reason)
                continue
            self.cache.put_features(self.keys[i], self.embedder.identity, Status.OK,
                                    duration=feats.duration, feats=feats.values)
            self.counts.cached()
            # the audio embedded, not the file's duration: partly embedded files are the rest
            self.counts.embedded_file(len(feats.values) * INSTANCE_SECONDS)
            if self.scoring is None:
                self.finish(i, FileResult(self.files[i], Status.OK, duration=feats.duration,
                                          features=feats))
            else:
                self.add_for_scoring(i, feats)
        if live:  # after the files now complete are counted
            self.reporter.embedded(self.counts)

    def _drop(self, idx: int) -> None:
        self.chunkers.pop(idx, None)
        self.parts.pop(idx, None)
        self.decoded.discard(idx)

    # -- scoring -------------------------------------------------------------------------------
    def add_for_scoring(self, idx: int, feats: Features, from_cache: bool = False) -> None:
        self.finish_scored(self.batch.add((idx, from_cache), self.files[idx], feats))

    def finish_scored(self, done: list[tuple[object, FileResult]]) -> None:
        for (idx, from_cache), result in done:
            self.finish(idx, result, from_cache)


class TagSession(Session):
    """What a run sets up once, kept for several runs: the cache's lock and connection, VGGish,
    the scoring model and the decode pool (the beets plugin holds one for a whole import, not
    one per album), usable from any thread (`Session`). Use it as a context manager; `tag` (or
    `embed`) in it runs over paths."""

    def tag(self, paths: Iterable[str | Path]) -> TagRun:
        """A run over `paths` in this session (its results, as `instag.tag`'s)."""
        return TagRun(paths, self.opts, self.reporter, self.with_scoring, session=self)


class TagRun(JobRun):
    """A run over `paths`: iterate it for one FileResult per audio file in walk order (then one
    per unreadable folder); `summary` counts them as they come. The cache's lock is held while
    iterating (by its own session, or by the `TagSession` it was made in). Build it with `tag`,
    `embed` or `TagSession.tag`."""

    def __init__(self, paths: Iterable[str | Path], opts: TagOptions, reporter: Reporter | None,
                 scoring: bool, session: TagSession | None = None) -> None:
        super().__init__(paths, opts, reporter)
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
        opts = self.opts
        files, folder_errors = self.walk()
        with ExitStack() as stack:
            session = self.session or stack.enter_context(
                TagSession(opts, self.reporter, self.scoring))
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


def tag(paths: Iterable[str | Path], options: TagOptions | None = None,
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
