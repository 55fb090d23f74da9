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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instag import assets
from instag.audio import AUDIO_EXTENSIONS, DEFAULT_RESAMPLER, AudioError
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
MAX_WAITING_RESULTS = 256  # finished results held back until an earlier file is done


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
    jobs: int | None = None  # decoding processes; None: one per CPU
    cache: Path | None = None
    force: bool = False
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    include_hidden: bool = False
    wait: bool = False


@dataclass
class Summary:
    """Running counts of a tagging run."""

    total: int = 0
    done: int = 0
    from_cache: int = 0  # files for which nothing was decoded in this run
    audio_s: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)  # status -> count

    def add(self, result: FileResult, from_cache: bool) -> None:
        self.done += 1
        self.from_cache += from_cache
        self.audio_s += result.duration or 0.0
        if not result.ok:
            self.failed[result.status] = self.failed.get(result.status, 0) + 1

    @property
    def ok(self) -> int:
        return self.done - sum(self.failed.values())


class Reporter:
    """What the tagger tells its caller as it goes; the CLI draws progress from it."""

    def started(self, summary: Summary, provider: str) -> None: ...

    def file_done(self, result: FileResult, summary: Summary) -> None: ...


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

    def __init__(self, files: list[Path], opts: TagOptions, reporter: Reporter,
                 sink: Callable[[FileResult], None]) -> None:
        self.files = files
        self.opts = opts
        self.reporter = reporter
        self.sink = sink
        self.summary = Summary(total=len(files))
        self.next_out = 0  # results go to the sink in walk order, held here until their turn
        self.scorer = Scorer(opts.model, opts.device)
        self.classes = self.scorer.classes
        self.thresholds = load_thresholds(self.classes, opts.threshold, opts.thresholds_file)
        self.embedder = Embedder(opts.vggish, opts.pca, opts.resampler)
        self.model_id = assets.file_digest(Path(opts.model))
        self.bag_setting = f"{opts.bag_size or 'full'}/{opts.hop or opts.bag_size or ''}"
        self.keys: dict[int, FileKey] = {}
        self.waiting: dict[int, FileResult] = {}
        self.pending_scores: list[tuple[int, Features, bool]] = []  # (file, features, cached)

    # -- bookkeeping ---------------------------------------------------------------------------
    def finish(self, idx: int, result: FileResult, from_cache: bool = False) -> None:
        self.summary.add(result, from_cache)
        self.reporter.file_done(result, self.summary)
        self.waiting[idx] = result
        while self.next_out in self.waiting:
            self.sink(self.waiting.pop(self.next_out))
            self.next_out += 1

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
    def run(self, cache: Cache) -> Summary:
        """Walk the files in order: finish what the cache knows, send the rest to the decode
        pool. A bounded window (results waiting for an earlier file, files in the pool) keeps
        memory flat however large the library."""
        self.cache = cache
        self.reporter.started(self.summary, self.scorer.provider)
        pool = None
        next_in = 0
        try:
            while self.next_out < len(self.files):
                while (next_in < len(self.files) and len(self.waiting) < MAX_WAITING_RESULTS
                       and (pool is None or pool.in_flight < 2 * pool.jobs)):
                    if not self.from_cache(next_in):
                        pool = pool or _DecodePool(self, self.opts.jobs)
                        pool.submit(next_in)
                    next_in += 1
                if pool is not None and pool.in_flight:
                    pool.pump()
                else:  # nothing decoding: what remains waits only for scoring
                    self.score(flush=True)
        finally:
            if pool is not None:
                pool.close()
        return self.summary

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


class _DecodePool:
    """Decode workers feeding this process, which embeds their blocks, batching instances of
    several files into one VGGish call, and hands finished files to the run for scoring."""

    def __init__(self, run: _Run, jobs: int | None) -> None:
        self.run = run
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.ctx = mp.get_context("spawn")  # nothing of TensorFlow or onnxruntime is forked
        self.tasks = self.ctx.Queue()
        self.out = self.ctx.Queue(maxsize=QUEUE_BLOCKS_PER_JOB * self.jobs)
        self.workers = [self._start_worker() for _ in range(self.jobs)]
        self.chunkers: dict[int, Chunker] = {}
        self.parts: dict[int, list[np.ndarray]] = {}
        self.decoded: set[int] = set()
        self.by_pid: dict[int, int] = {}  # worker pid -> the file it works on
        self.ready: list[tuple[int, np.ndarray]] = []

    @property
    def in_flight(self) -> int:
        return len(self.chunkers)

    def _start_worker(self):
        w = self.ctx.Process(target=_decode_worker,
                             args=(self.tasks, self.out, self.run.opts.resampler), daemon=True)
        w.start()
        return w

    def submit(self, idx: int) -> None:
        self.chunkers[idx] = Chunker()
        self.parts[idx] = []
        self.tasks.put((idx, self.run.files[idx]))

    def pump(self) -> None:
        """Handle one message from the workers, or, when none comes, embed what is ready."""
        try:
            kind, idx, payload = self.out.get(timeout=0.2)
        except queue.Empty:
            self.flush()
            self._replace_dead_workers()
            return
        if kind == "start":
            self.by_pid[payload] = idx
        elif idx not in self.chunkers:
            pass  # a file already given up on
        elif kind == "block":
            self.ready.extend((idx, c) for c in self.chunkers[idx].push(payload))
        elif kind == "done":
            self.ready.extend((idx, c) for c in self.chunkers[idx].finish())
            self.decoded.add(idx)
        elif kind == "fail":
            self._drop(idx)
            self.run.fail(idx, *payload)
        if sum(chunk_instances(c) for _, c in self.ready) >= EMBED_BATCH_INSTANCES:
            self.flush()

    def flush(self) -> None:
        """Embed the ready chunks in one call; hand over every file that is now complete."""
        live = [(i, c) for i, c in self.ready if i in self.chunkers]
        for (i, _), f in zip(live, self.run.embedder.embed_chunks([c for _, c in live]),
                             strict=True):
            self.parts[i].append(f)
        self.ready.clear()
        for i in sorted(self.decoded & set(self.chunkers)):
            feats = Features.from_parts(self.parts[i], self.chunkers[i].samples)
            self._drop(i)
            try:
                check_features(self.run.files[i], feats)
            except AudioError as e:
                self.run.fail(i, e.status, e.reason)
                continue
            self.run.cache.put_features(self.run.keys[i], self.run.embedder.identity, "ok",
                                        duration=feats.duration, feats=feats.values)
            self.run.add_for_scoring(i, feats)

    def _drop(self, idx: int) -> None:
        self.chunkers.pop(idx, None)
        self.parts.pop(idx, None)
        self.decoded.discard(idx)

    def _replace_dead_workers(self) -> None:
        """A worker that crashed (a decoder library's segfault) costs its file only."""
        for n, w in enumerate(self.workers):
            if not w.is_alive() and w.exitcode not in (0, None):
                lost = self.by_pid.pop(w.pid, None)
                if lost in self.chunkers and lost not in self.decoded:
                    self._drop(lost)
                    self.run.fail(lost, "error", f"decoder crashed (exit {w.exitcode})")
                self.workers[n] = self._start_worker()

    def close(self) -> None:
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=2)
            if w.is_alive():
                w.terminate()


def tag(paths: Iterable[str | Path], opts: TagOptions, sink: Callable[[FileResult], None],
        reporter: Reporter | None = None) -> Summary:
    """Tag every audio file under `paths`, handing each FileResult to `sink` in walk order (then
    one per unreadable folder). Holds the cache's lock for the whole run."""
    reporter = reporter or Reporter()
    cache_path = Path(opts.cache) if opts.cache else assets.cache_dir() / CACHE_FILE
    folder_errors: list[tuple[Path, str]] = []
    files = list(walk(paths, opts.extensions, opts.include_hidden,
                      on_error=lambda p, why: folder_errors.append((p, why))))
    with lock(cache_path, opts.wait):
        run = _Run(files, opts, reporter, sink)
        cache = Cache(cache_path)
        try:
            summary = run.run(cache)
        finally:
            cache.close()
    for p, why in folder_errors:
        result = FileResult(p, "unreadable", why)
        summary.total += 1
        summary.add(result, from_cache=False)
        sink(result)
    return summary
