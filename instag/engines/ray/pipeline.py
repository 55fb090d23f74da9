"""The Ray engine: the same job as the local engine, as a Ray Data pipeline over a
cluster, for catalogues one machine cannot tag in time.

    paths ─▶ decode tasks (one file each, CPU): the file's 16 kHz audio as rows of whole
             instances, at most 31 (29.76 s) plus VGGish's 15 ms lookahead, the last row marked
          ─▶ embedding actors (VGGish on onnxruntime, loaded once per actor; GPU actors where
             the cluster has GPUs): uint8 features per row, rows of several files per call
          ─▶ the driver: a file's rows, in order, make its features; bags, scoring (the
             attention model is tiny), thresholds and segments as the local engine does them
          ─▶ the writers

What crosses stages stays small: at most ~2 MB of audio per row, never a whole file, and
uint8 features after VGGish. Rows keep the file order (Ray Data's `preserve_order`), so the
driver reassembles a file's rows without a shuffle. The per-file functions are the local
engine's: `stream_16k`, `Chunker`, `embed_chunks`, `Scoring`.

Failures: a file that fails is a result with its status, as locally. A task or actor whose
worker dies is retried by Ray (`MAX_RETRIES`); a file whose every retry died (a decoder that
crashes the process on it) is given up on - Ray Data skips its block (one file, or a few in
catalogues of more than `MAX_BLOCKS` files) - and reported `crashed`. A decoder that makes
no progress for --file-timeout seconds ends its file as `timeout`. The SQLite cache is not
used (it is per machine); instead a run resumes from its previous Parquet output
(`parquet.PreviousOutput`: read by columns, the files looked at in parallel, the carried rows
copied as Arrow rows).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from queue import Empty, Full, Queue

import numpy as np

from instag.common.devices import Device
from instag.common.enums import TextEnum
from instag.common.errors import InstagError
from instag.common.extras import require
from instag.common.status import Status
from instag.engines.ray import reassembly
from instag.engines.ray.tasks import EmbedActor, decode_file
from instag.engines.ray.watchdog import (
    NO_CPU_SECONDS,
    Sentinel,
    frozen_reason,
)
from instag.features import vggish_onnx
from instag.features.decode import AudioError
from instag.features.embed import NON_FINITE, Embedder
from instag.features.instances import INSTANCE_SECONDS, Features, check_features
from instag.outputs.parquet import PreviousOutput
from instag.tagging.identity import sizes_and_mtimes
from instag.tagging.job import InOrder, JobRun, Reporter
from instag.tagging.options import Config, Decoding, TagOptions
from instag.tagging.results import FileResult, display_path
from instag.tagging.scoring import Scoring, ScoringBatch


class Engine(TextEnum):
    LOCAL = "local"  # this machine: the decode pool, the cache (engines.local)
    RAY = "ray"  # a Ray cluster: this module


ROWS_PER_CALL = {False: 2, True: 16}  # rows per VGGish call, by whether actors have a GPU
MAX_RETRIES = 3  # a task or actor call whose worker died is tried this many more times
# decode tasks take one file each up to this many files, then several: a task is the unit of
# retry (a file that kills its worker every time costs its task's files, reported `crashed`)
MAX_BLOCKS = 20_000


class RayRun(JobRun):
    """A run over `paths` on a Ray cluster; iterate it for FileResults like a `TagRun`: first
    those carried over from `previous` (a Parquet output of an earlier run), then the others
    in walk order. `address`: a running cluster (`auto`, `ray://host:10001`), else Ray's own
    choice ($RAY_ADDRESS, or a local cluster started for this run)."""

    def __init__(self, paths: Iterable[str | Path], opts: TagOptions | Config,
                 reporter: Reporter | None = None, address: str | None = None,
                 previous: Path | None = None) -> None:
        super().__init__(paths, opts, reporter)
        self.address = address
        # the resume rule: an existing Parquet output, unless the run is told to recompute
        self.previous = previous if previous is not None and previous.exists() and \
            not self.config.force else None
        self.embedding_nodes: set[str] = set()  # Ray node ids VGGish actors ran on

    def __iter__(self) -> Iterator[FileResult]:
        config = self.config
        ray = require("ray")
        files, folder_errors = self.walk()
        scoring = Scoring(config.compute)
        self.thresholds = scoring.thresholds
        embedder = config.compute.embedder(self.reporter.note)
        embedder.fetch_if_missing()
        onnx = embedder.onnx_file()
        if onnx is None:
            embedder.model  # noqa: B018 - converts it now, or says why it cannot
            if (onnx := vggish_onnx.find(embedder.handle)) is None:
                raise InstagError("the Ray engine runs VGGish on onnxruntime, and VGGish "
                                  "could not be converted here", "see `instag doctor`")
        identity = scoring.identity(embedder.identity)
        if self.address:
            _check_reachable(self.address)
        started = not ray.is_initialized()
        if started:
            try:
                with _signal_handlers_kept():
                    ray.init(address=self.address or _local_address(), include_dashboard=False,
                             log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise InstagError(f"cannot start or reach the Ray cluster ({where}): "
                                  f"{str(e).splitlines()[0][:200]}",
                                  "start it (`ray start --head`) or check --ray-address") from None
        try:
            self.reporter.started(self.counts, scoring.scorer.provider)
            carried = np.zeros(len(files), bool)
            if self.previous is not None:
                for result in _carried(files, PreviousOutput(self.previous, identity), carried):
                    result.segment_rule = scoring.segment_rule  # this run's, not the last's
                    yield self._done(result, from_cache=True)
            todo = np.flatnonzero(~carried)  # the files to compute, by their index in the walk
            if len(todo):
                with Sentinel(ray, config.decoding.file_timeout) as sentinel:
                    rows = _unless_starved(lambda: _pipeline(
                        ray, files, todo, config.decoding, onnx, embedder,
                        sentinel.watchdog).iter_rows(),
                        sentinel.starved)
                    for result in _results(rows, files, todo, scoring, identity, self,
                                           sentinel.frozen):
                        yield self._done(result)
                    self.embedding_nodes = ray.get(sentinel.watchdog.nodes_of_actors.remote())
        finally:
            if started:
                ray.shutdown()
        for p, why in folder_errors:
            yield self._done(FileResult(p, Status.UNREADABLE, why))

    def _done(self, result: FileResult, from_cache: bool = False) -> FileResult:
        self.counts.add(result, from_cache)
        self.reporter.file_done(result, self.counts)
        return result


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Ray's driver installs its own SIGTERM handler (a stack dump, exit 15); the caller's
    (instag's: one line, exit 143, the previous output kept) are put back after it."""
    signals = (signal.SIGINT, signal.SIGTERM)
    kept = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in kept.items():
                if handler is not None:
                    signal.signal(s, handler)


def _local_address() -> str | None:
    """Where a run without --ray-address goes: $RAY_ADDRESS, else the cluster `ray start`
    recorded on this machine if it still answers, else a Ray of its own ("local"). Ray itself
    would follow a record left by a Ray that was killed and wait minutes on a dead cluster."""
    if os.environ.get("RAY_ADDRESS"):
        return None  # Ray's own lookup takes it
    record = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / \
        "ray_current_cluster"  # where Ray keeps it (its default temp dir)
    try:
        recorded = record.read_text().strip()
        host, _, port = recorded.rpartition(":")
        socket.create_connection((host, int(port)), timeout=2).close()
        return recorded
    except (OSError, ValueError):
        return "local"


def _check_reachable(address: str) -> None:
    """A cluster address (`host:port`, `ray://host:port`) that nothing answers at is one line
    now; Ray itself would retry it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto`, `local`: Ray's own lookup
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise InstagError(f"--ray-address {address}: nothing answers there "
                          f"({e.strerror or e})",
                          "start the cluster (`ray start --head`) or fix the address") from None


def _carried(files: Sequence[Path], previous: PreviousOutput, carried: np.ndarray
             ) -> Iterator[FileResult]:
    """The previous output's results of the files that are unchanged since (same size and
    mtime), marked in `carried` (over `files`). Matched by column (Arrow), the files looked at
    by a pool of threads (on a network disk a stat is a round trip)."""
    pa, pc = require("pyarrow"), require("pyarrow.compute")
    candidates = previous.candidates
    if not candidates.num_rows:
        return
    walked = pa.array((display_path(p) for p in files), pa.string(), size=len(files))
    where = pc.fill_null(pc.index_in(walked, value_set=candidates["path"]), -1).to_numpy()
    del walked
    known = np.flatnonzero(where >= 0)  # walked files it has rows of
    position = where[known].astype(np.int64)
    size = candidates["size"].to_numpy()[position]
    mtime = candidates["mtime_ns"].to_numpy()[position]
    now = sizes_and_mtimes(files[i] for i in known)
    same = (now[:, 0] == size) & (now[:, 1] == mtime)
    unchanged = np.zeros(candidates.num_rows, bool)
    unchanged[position[same]] = True
    walk_index = np.full(candidates.num_rows, -1, np.int64)
    walk_index[position] = known  # a file walked twice: its last place carries, the other runs
    carried[walk_index[unchanged]] = True
    yield from previous.results(unchanged, lambda pos: files[walk_index[pos]])


def _pipeline(ray, files: Sequence[Path], todo: np.ndarray, decoding: Decoding, onnx: Path,
              embedder: Embedder, watchdog):
    """The Ray Data pipeline over the files to do: decode tasks, then embedding actors."""
    import ray.data

    # Ray Data's console: progress lines, and a traceback of its own for any exception that
    # passes through it (a Ctrl-C included), which then reaches instag anyway; its log files
    # keep everything.
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the driver reassembles files in order
    ctx.max_errored_blocks = -1  # a file whose every retry died is reported, not fatal
    ctx.enable_progress_bars = False
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    device = Device.parse(embedder.device)
    if device is Device.CUDA and not gpus:
        raise InstagError("--device cuda: the Ray cluster has no GPUs",
                          "use --device auto, or add GPU nodes")
    on_gpu = gpus > 0 and device is not Device.CPU
    models = ray.put({"vggish": onnx.read_bytes(), "eigen_vectors": embedder.eigen_vectors,
                      "means": embedder.means})
    # absolute (the walk makes them so): a worker's working directory is not the user's;
    # columns, not a dict per file (a million files' list would weigh on the driver)
    pa = require("pyarrow")
    items = pa.table({"idx": pa.array(todo, pa.int64()),
                      "path": pa.array((os.fsencode(files[i]) for i in todo), pa.binary(),
                                       size=len(todo))})
    bounds = np.linspace(0, len(todo), min(len(todo), MAX_BLOCKS) + 1).astype(int)
    # VGGish is ~90 % of the CPU work: on CPUs, actors take 3/4 of the cores (one a node at
    # least, spread over the nodes from the start), each with its share of threads; decode
    # tasks, light, fill the gaps. They reserve no CPU, only their number is capped: a node
    # that dies takes its CPUs with it, the actors restarted elsewhere may then hold every CPU
    # left, and tasks waiting for one would wait forever.
    nodes = max(1, sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")))
    actors = gpus if on_gpu else max(nodes, cpus * 3 // 4)
    threads = None if on_gpu else max(1, cpus // actors)
    with warnings.catch_warnings():
        # Ray's defaults retry a dying task forever: one file that kills its worker would hang
        # the run. Bounded retries are still remote args in the pinned range (named ones may
        # replace them from Ray 2.64).
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ray.data.from_arrow([items.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:],
                                                                         strict=True)])
        ds = ds.flat_map(decode_file, fn_kwargs={"resampler": embedder.resampler.value,
                                                 "stall_timeout": decoding.file_timeout,
                                                 "watchdog": watchdog,
                                                 "max_seconds": decoding.max_duration},
                         num_cpus=0, concurrency=max(1, cpus), scheduling_strategy="SPREAD",
                         max_retries=MAX_RETRIES)
        return ds.map_batches(
            EmbedActor, batch_size=ROWS_PER_CALL[on_gpu], batch_format="numpy",
            fn_constructor_kwargs={"models": [models], "device": device.value,
                                   "threads": threads, "watchdog": watchdog},
            compute=ray.data.ActorPoolStrategy(min_size=min(actors, nodes), max_size=actors),
            num_cpus=1, num_gpus=1 if on_gpu else 0, scheduling_strategy="SPREAD",
            max_restarts=-1, max_task_retries=MAX_RETRIES)


def _unless_starved(rows: Callable[[], Iterator[dict]], starved: threading.Event
                    ) -> Iterator[dict]:
    """The rows `rows()` makes (the pipeline, built and read by a thread of their own: Ray
    Data waits on tasks while it builds one too), so that the driver never waits inside Ray
    where it could not notice the cluster has lost its last CPU (`starved`): then one line."""
    queue: Queue = Queue(maxsize=64)
    stop = threading.Event()
    end = object()

    def read() -> None:
        try:
            for item in itertools.chain(rows(), [end]):
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=1)
                        break
                    except Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - handed to the driver, raised there
            queue.put(e)

    threading.Thread(target=read, daemon=True, name="instag-rows").start()
    try:
        while True:
            try:
                item = queue.get(timeout=1)
            except Empty:
                if starved.is_set():
                    raise InstagError(
                        f"the Ray cluster has had no CPU for {NO_CPU_SECONDS:.0f} s (its CPU "
                        "nodes are gone): no file can be embedded; stopped, the previous "
                        "output kept", "add CPU nodes and run again") from None
                continue
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _results(rows: Iterator[dict], files: Sequence[Path], todo: np.ndarray, scoring: Scoring,
             identity: str, run: RayRun, frozen: Counter[int]) -> Iterator[FileResult]:
    """Reassemble each file's rows into features (checked: `reassembly`), score files in small
    batches, and yield results in walk order; a file whose rows are not all there (every retry
    of its task died) is `crashed`, or `timeout` where the tries froze (`frozen`: how many
    tries of each file the watchdog ended)."""
    batch = ScoringBatch(scoring, run.counts)
    window = InOrder()
    position = {int(idx): pos for pos, idx in enumerate(todo)}

    def finish(row: dict, result: FileResult) -> None:
        window.put(position[int(row["idx"])], _stamp(result, row, identity))

    def progress(row: dict) -> None:
        run.counts.embedded_audio(len(row["feats"]) * INSTANCE_SECONDS)
        run.reporter.embedded(run.counts)

    for file in reassembly.files(rows, map(int, todo), progress):
        path, row = files[file.idx], file.last
        if file.incomplete:
            why = (frozen_reason(run.config.decoding.file_timeout, frozen[file.idx])
                   if frozen[file.idx] else f"its worker died on every retry "
                   f"({file.incomplete}); retried next run")
            window.put(position[file.idx], FileResult(
                path, Status.TIMEOUT if frozen[file.idx] else Status.CRASHED, why,
                model_id=identity))
        elif row["status"] != Status.OK.value or not file.finite:
            status, reason = ((Status.ERROR, NON_FINITE) if row["status"] == Status.OK.value
                              else (Status(row["status"]), row["reason"]))
            finish(row, FileResult(path, status, reason))
        else:
            try:
                feats = check_features(path, Features.from_parts(file.parts,
                                                                 int(row["samples"])))
            except AudioError as e:
                finish(row, FileResult(path, e.status, e.reason))
            else:
                run.counts.embedded_file(len(feats.values) * INSTANCE_SECONDS)
                for done_row, result in batch.add(row, path, feats):
                    finish(done_row, result)  # type: ignore[arg-type]
                run.reporter.embedded(run.counts)
        yield from window.take()
    for done_row, result in batch.flush():
        finish(done_row, result)  # type: ignore[arg-type]
    yield from window.take()


def _stamp(result: FileResult, row: dict, identity: str) -> FileResult:
    """The file's size and mtime as the decode task saw them, and the run's identity."""
    if row["size"] >= 0:
        result.size, result.mtime_ns = int(row["size"]), int(row["mtime_ns"])
    result.model_id = identity
    return result


def tag_on_ray(paths: Iterable[str | Path], options: TagOptions | Config | None = None,
               reporter: Reporter | None = None, address: str | None = None,
               previous: Path | None = None) -> RayRun:
    """`tag`, on a Ray cluster: iterate the result for FileResults. `previous`: a Parquet output
    of an earlier run, whose results for unchanged files are carried over (if it exists, and
    unless `options.force`)."""
    return RayRun(paths, options or TagOptions(), reporter, address, previous)
