"""Tag a music library: walk, decode in worker processes, embed, score, write.

Processes: a pool of decode workers (``jobs``, spawn-started) streams each file's 16 kHz blocks
through a bounded queue to this process, which owns VGGish and the ONNX session. Instances of
several files go into one VGGish call and bags of several files into one ONNX call. Each finished
file's features and scores go to the SQLite cache at once; the output is written at the end,
atomically. A file the cache knows (same path, size, mtime; same VGGish and model) is not
decoded again, and its scores are reused; a new scoring model re-scores cached features.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import queue
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag import assets
from instag.audio import AUDIO_EXTENSIONS, DEFAULT_RESAMPLER, TARGET_SR, AudioError
from instag.bags import make_bags
from instag.cache import CACHE_FILE, Cache, FileKey, lock
from instag.embed import Chunker, Embedder, Features, check_features, chunk_instances
from instag.errors import InstagError
from instag.outputs import FileResult, bag_result
from instag.runtime import Scorer
from instag.walk import walk

EMBED_BATCH_INSTANCES = 128  # instances per VGGish call when several files are ready
SCORE_BATCH_BAGS = 1024  # bags gathered before one round of ONNX calls ...
SCORE_BATCH_FILES = 32  # ... or files, so results reach the cache as the run goes
QUEUE_BLOCKS_PER_JOB = 4  # decoded blocks in flight per worker: bounds memory


@dataclass(frozen=True)
class TagOptions:
    model: Path
    vggish: str | None = None
    pca: Path | None = None
    resampler: str = DEFAULT_RESAMPLER
    bag_size: int | None = None  # None: the whole file is one bag
    hop: int | None = None
    threshold: float = 0.5
    thresholds_file: Path | None = None
    device: str = "auto"
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    cache: Path | None = None
    force: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    include_hidden: bool = False
    wait: bool = False


class Reporter:
    """What the tagger tells its caller as it goes; the CLI draws progress from it."""

    def started(self, n_files: int, provider: str) -> None: ...

    def file_done(self, result: FileResult, from_cache: bool) -> None:
        """`from_cache`: nothing was decoded for it in this run."""


def load_thresholds(classes: tuple[str, ...], default: float, path: Path | None) -> dict:
    """Per-instrument thresholds: `default` for all, overridden by a JSON object or a CSV of
    `instrument,threshold` lines."""
    out = dict.fromkeys(classes, default)
    if path is None:
        return out
    try:
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            given = {k: float(v) for k, v in json.loads(text).items()}
        else:
            given = {row[0].strip(): float(row[1]) for row in csv.reader(text.splitlines())
                     if len(row) >= 2 and row[0].strip() and row[0].strip() != "instrument"}
    except (OSError, ValueError) as e:
        raise InstagError(f"{path}: unreadable thresholds ({e})",
                          'use JSON {"piano": 0.4, ...} or CSV lines piano,0.4') from e
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise InstagError(f"{path}: unknown instruments {unknown}",
                          f"the model's instruments are: {', '.join(classes)}")
    out.update(given)
    return out


def _decode_worker(tasks, out, resampler: str) -> None:
    """Worker process: stream each assigned file's 16 kHz blocks back to the main process.
    Every wait has a timeout, so a worker whose parent was killed (-9) exits by itself."""
    from instag.audio import stream_16k

    parent = os.getppid()

    def orphaned() -> bool:
        if os.getppid() == parent:
            return False
        out.cancel_join_thread()  # nobody reads the pipe any more: don't wait to flush it
        return True

    def send(item) -> None:
        while True:
            try:
                return out.put(item, timeout=1)
            except queue.Full:
                if orphaned():
                    raise SystemExit(0) from None

    while True:
        try:
            task = tasks.get(timeout=1)
        except queue.Empty:
            if orphaned():
                return
            continue
        if task is None:
            return
        idx, path = task
        send(("start", idx, os.getpid()))
        try:
            for block in stream_16k(path, resampler):
                send(("block", idx, block))
            send(("done", idx, None))
        except AudioError as e:
            send(("fail", idx, (e.status, e.reason)))
        except Exception as e:  # a decoder bug must cost one file, not the run
            send(("fail", idx, ("error", f"{type(e).__name__}: {e}")))


class _Run:
    """State of one tagging run over a list of files."""

    def __init__(self, files: list[Path], opts: TagOptions, reporter: Reporter) -> None:
        self.files = files
        self.opts = opts
        self.reporter = reporter
        self.scorer = Scorer(opts.model, opts.device)
        self.classes = self.scorer.classes
        self.thresholds = load_thresholds(self.classes, opts.threshold, opts.thresholds_file)
        self.embedder = Embedder(opts.vggish, opts.pca, opts.resampler)
        self.model_id = assets.file_digest(Path(opts.model))
        self.bag_setting = f"{opts.bag_size or 'full'}/{opts.hop or opts.bag_size or ''}"
        self.keys: dict[int, FileKey] = {}
        self.results: dict[int, FileResult] = {}
        self.pending_scores: list[tuple[int, Features, bool]] = []  # (file, features, cached)

    # -- bookkeeping ---------------------------------------------------------------------------
    def finish(self, idx: int, result: FileResult, from_cache: bool = False) -> None:
        self.results[idx] = result
        self.reporter.file_done(result, from_cache)

    def fail(self, idx: int, status: str, reason: str) -> None:
        if idx in self.keys:
            self.cache.put_features(self.keys[idx], self.embedder.identity, status, reason)
        self.finish(idx, FileResult(self.files[idx], status, reason))

    def build(self, idx: int, feats: Features, bag, instance, attention) -> FileResult:
        bags = make_bags(len(feats.values), self.opts.bag_size, self.opts.hop)
        rows = np.cumsum([0] + [b.length for b in bags])
        return FileResult(self.files[idx], "ok", duration=feats.duration, bags=[
            bag_result(b, self.classes, bag[j], instance[rows[j] : rows[j + 1]],
                       attention[rows[j] : rows[j + 1]], self.thresholds)
            for j, b in enumerate(bags)])

    # -- the three stages ----------------------------------------------------------------------
    def run(self, cache: Cache) -> list[FileResult]:
        self.cache = cache
        self.reporter.started(len(self.files), self.scorer.provider)
        to_embed = [i for i in range(len(self.files)) if not self.from_cache(i)]
        if to_embed:
            self.embed(to_embed)
        self.score(flush=True)
        return [self.results[i] for i in range(len(self.files))]

    def from_cache(self, idx: int) -> bool:
        """Finish a file from the cache if possible; True when nothing is left to decode."""
        path = self.files[idx]
        try:
            key = self.keys[idx] = FileKey.of(path)
        except FileNotFoundError:
            self.finish(idx, FileResult(path, "missing", "file vanished"))
            return True
        except OSError as e:
            self.finish(idx, FileResult(path, "unreadable", e.strerror or str(e)))
            return True
        if self.opts.force:
            return False
        feats = self.cache.get_features(key, self.embedder.identity)
        if feats is None:
            return False
        if feats.status != "ok":
            self.finish(idx, FileResult(path, feats.status, feats.reason), from_cache=True)
            return True
        features = Features(feats.feats, feats.duration)
        scores = self.cache.get_scores(key, self.embedder.identity, self.model_id,
                                       self.bag_setting)
        if scores is not None:
            self.finish(idx, self.build(idx, features, *scores), from_cache=True)
        else:
            self.add_for_scoring(idx, features, from_cache=True)
        return True

    def add_for_scoring(self, idx: int, feats: Features, from_cache: bool = False) -> None:
        self.pending_scores.append((idx, feats, from_cache))
        self.score(flush=False)

    def score(self, flush: bool) -> None:
        """Score the pending files' bags in batched ONNX calls once enough have gathered."""
        work = [(idx, feats, cached, make_bags(len(feats.values), self.opts.bag_size,
                                               self.opts.hop))
                for idx, feats, cached in self.pending_scores]
        n_bags = sum(len(bags) for *_, bags in work)
        if not work or not (flush or n_bags >= SCORE_BATCH_BAGS
                            or len(work) >= SCORE_BATCH_FILES):
            return
        flat = [feats.values[b.first : b.stop] for _, feats, _, bags in work for b in bags]
        scored = iter(self.scorer.score(flat))
        for idx, feats, cached, bags in work:
            s = [next(scored) for _ in bags]
            bag = np.stack([x.bag for x in s])
            instance = np.concatenate([x.instance for x in s])
            attention = np.concatenate([x.attention for x in s])
            self.cache.put_scores(self.keys[idx], self.embedder.identity, self.model_id,
                                  self.bag_setting, bag, instance, attention)
            self.finish(idx, self.build(idx, feats, bag, instance, attention), cached)
        self.pending_scores = []

    def embed(self, indices: list[int]) -> None:
        """Decode in worker processes, embed here, batching instances across files."""
        ctx = mp.get_context("spawn")
        jobs = max(1, min(self.opts.jobs, len(indices)))
        tasks, out = ctx.Queue(), ctx.Queue(maxsize=QUEUE_BLOCKS_PER_JOB * jobs)
        for i in indices:
            tasks.put((i, self.files[i]))

        def start_worker():
            w = ctx.Process(target=_decode_worker, args=(tasks, out, self.opts.resampler),
                            daemon=True)
            w.start()
            tasks.put(None)  # one stop sign per worker, queued behind the files
            return w

        workers = [start_worker() for _ in range(jobs)]
        remaining = set(indices)
        chunkers = {i: Chunker() for i in indices}
        parts: dict[int, list[np.ndarray]] = {i: [] for i in indices}
        decoded: set[int] = set()
        in_flight: dict[int, int] = {}  # worker pid -> file index
        ready: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            live = [(i, c) for i, c in ready if i in remaining]
            for (i, _), f in zip(live, self.embedder.embed_chunks([c for _, c in live]),
                                 strict=True):
                parts[i].append(f)
            ready.clear()
            for i in sorted(decoded & remaining):
                remaining.discard(i)
                values = np.concatenate(parts.pop(i)) if parts[i] else np.zeros((0, 128),
                                                                                  np.uint8)
                feats = Features(values, chunkers.pop(i).samples / TARGET_SR)
                try:
                    check_features(self.files[i], feats)
                except AudioError as e:
                    self.fail(i, e.status, e.reason)
                    continue
                self.cache.put_features(self.keys[i], self.embedder.identity, "ok",
                                        duration=feats.duration, feats=feats.values)
                self.add_for_scoring(i, feats)

        try:
            while remaining:
                try:
                    kind, idx, payload = out.get(timeout=0.2)
                except queue.Empty:
                    flush()
                    for n, w in enumerate(workers):
                        if not w.is_alive() and w.exitcode not in (0, None):
                            lost = in_flight.pop(w.pid, None)
                            if lost in remaining and lost not in decoded:
                                remaining.discard(lost)
                                self.fail(lost, "error", f"decoder crashed (exit {w.exitcode})")
                            workers[n] = start_worker()
                    continue
                if kind == "start":
                    in_flight[payload] = idx
                elif idx not in remaining:
                    continue
                elif kind == "block":
                    ready.extend((idx, c) for c in chunkers[idx].push(payload))
                elif kind == "done":
                    ready.extend((idx, c) for c in chunkers[idx].finish())
                    decoded.add(idx)
                elif kind == "fail":
                    remaining.discard(idx)
                    self.fail(idx, *payload)
                if sum(chunk_instances(c) for _, c in ready) >= EMBED_BATCH_INSTANCES:
                    flush()
        finally:
            for w in workers:
                w.join(timeout=1)
                if w.is_alive():
                    w.terminate()


def tag(paths: Iterable[str | Path], opts: TagOptions,
        reporter: Reporter | None = None) -> list[FileResult]:
    """Tag every audio file under `paths`; one FileResult per file (and per unreadable folder),
    in walk order. Holds the cache's lock for the whole run."""
    reporter = reporter or Reporter()
    cache_path = Path(opts.cache) if opts.cache else assets.cache_dir() / CACHE_FILE
    folder_errors: list[tuple[Path, str]] = []
    files = list(walk(paths, opts.extensions, opts.include_hidden,
                      on_error=lambda p, why: folder_errors.append((p, why))))
    with lock(cache_path, opts.wait):
        run = _Run(files, opts, reporter)
        cache = Cache(cache_path)
        try:
            results = run.run(cache)
        finally:
            cache.close()
    return results + [FileResult(p, "unreadable", why) for p, why in folder_errors]


