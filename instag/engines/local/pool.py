"""The decode pool: worker processes that turn file paths into 16 kHz blocks.

Plumbing only: paths go in (`submit`), events come out (`next_event`): a block of a file, the
file done, the file failed (with its status), the worker decoding it crashed, or it made no
progress for `stall_timeout` seconds and was stopped. What becomes of them (chunking, embedding,
caching, ordering, progress) is the run's business.

Every file ends in an event whatever a worker does. Each worker has its own pipe, read by a
thread of the main process into a small bounded inbox, whole messages only; the main process
waits on the inboxes with a timeout, so nothing a worker does can block it: a worker that dies,
even half-way through sending a block, is seen at once (its pipe ends), and its file is reported
`crashed`; a worker that hangs or is frozen (a stuck network mount, a stuck ffmpeg, a SIGSTOP
half-way through a message) makes no progress, is killed after `stall_timeout` and its file
reported `timeout`; files queued behind either go to another worker.

Workers are spawn-started, so nothing of TensorFlow or onnxruntime is forked into them, and
single-threaded (numpy's BLAS included): there is one worker per core already, and a BLAS
thread pool in each would take cores from VGGish. Each sends through a small bounded buffer
(memory stays bounded for any file length) and ignores Ctrl-C, which is the main process's to
handle; a worker exits by itself as soon as its pipe to the main process breaks. A Ctrl-C or
SIGTERM while a worker starts is held back until the start returns, then stops the run (the
worker is born with both blocked, and sets its own handling once it runs).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from instag.common.environment import environment
from instag.common.errors import InstagError
from instag.common.status import Status
from instag.common.stops import deferred
from instag.engines.local.decoder import BLOCKS_BUFFERED, READY, Kind, decode_worker
from instag.features.resample import Resampler
from instag.tagging.failures import stalled
from instag.tagging.options import STALL_TIMEOUT

STARTUP_SECONDS = 60.0  # a worker not ready by then (or by the stall timeout, if longer) failed
# a worker's exit code when it finds itself re-running the user's script while it boots: a
# script that calls instag.tag without `if __name__ == "__main__":` (spawn imports it again)
REENTERED_SCRIPT = 86
UNGUARDED = ("instag.tag/embed was called while a decode worker was starting: the script that "
             "calls it runs again in every worker")
GUARD_FIX = 'put the call under `if __name__ == "__main__":` (see the docs: guides/python.md)'

FILES_PER_WORKER = 2  # files assigned to a worker at once: the next is ready when one ends
# read by the BLAS and OpenMP libraries when numpy loads in a worker (user settings win)
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def refuse_while_bootstrapping() -> None:
    """In a decode worker still importing the user's script (spawn re-runs it), a run must not
    start: the worker exits at once with REENTERED_SCRIPT, and the pool says why."""
    if getattr(mp.current_process(), "_inheriting", False):
        raise SystemExit(REENTERED_SCRIPT)


@dataclass(frozen=True)
class Event:
    kind: Kind
    idx: int  # the file, as numbered by `submit`
    block: np.ndarray | None = None
    status: Status = Status.OK
    reason: str = ""


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection  # read by its reader thread only; the main thread sends on it
    files: deque[tuple[int, Path]] = field(default_factory=deque)  # first: being decoded
    since: float = field(default_factory=time.monotonic)  # last progress
    ready: bool = False  # has started (spawning is not "no progress")
    # whole messages its reader thread has received; None: the pipe ended
    inbox: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=BLOCKS_BUFFERED))
    gone: threading.Event = field(default_factory=threading.Event)  # replaced or closed

    @property
    def current(self) -> int | None:
        return self.files[0][0] if self.files else None


class DecodePool:
    """`jobs` decode workers; a worker that crashes or stalls is replaced, costing its file."""

    def __init__(self, jobs: int, resampler: Resampler,
                 stall_timeout: float = STALL_TIMEOUT, max_seconds: float | None = None) -> None:
        self.jobs = max(1, jobs)
        self.resampler = resampler
        self.stall_timeout = stall_timeout
        self.max_seconds = max_seconds
        self.ctx = mp.get_context("spawn")
        self.waiting: deque[tuple[int, Path]] = deque()  # submitted, not yet given to a worker
        self.events: deque[Event] = deque()
        self.open: set[int] = set()  # submitted files whose last event is not yet handed out
        self.wake = threading.Event()  # a reader thread put something in an inbox
        self.workers = [self._start_worker() for _ in range(self.jobs)]

    @property
    def in_flight(self) -> int:
        return len(self.open)

    def _start_worker(self) -> _Worker:
        mine, theirs = self.ctx.Pipe()
        process = self.ctx.Process(target=decode_worker,
                                   args=(theirs, self.resampler, self.max_seconds), daemon=True)
        # both inherited: Ctrl-C and SIGTERM blocked while it boots (a Ctrl-C prints nothing
        # there; one now stops the run once the start has returned); one thread
        with deferred(), environment(**ONE_THREAD):
            process.start()
        theirs.close()  # only the worker holds its end: its death ends the pipe
        w = _Worker(process, mine)
        threading.Thread(target=self._read, args=(w,), daemon=True).start()
        return w

    def _read(self, w: _Worker) -> None:
        """Reader thread: worker `w`'s messages into its inbox, whole. A message half sent by
        a frozen worker blocks this thread, never the run; the pipe is closed here, once it
        has ended (closing it under a blocked read could hand its number to another pipe)."""
        with w.conn:
            while True:
                try:
                    message = w.conn.recv()
                except (EOFError, OSError):
                    message = None
                while True:  # the inbox is bounded: a busy main process holds the worker back
                    try:
                        w.inbox.put(message, timeout=0.5)
                        break
                    except queue.Full:
                        if w.gone.is_set():
                            return
                self.wake.set()
                if message is None:
                    return

    def submit(self, idx: int, path: Path) -> None:
        self.open.add(idx)
        self.waiting.append((idx, path))
        self._assign()

    def _assign(self) -> None:
        for w in sorted(self.workers, key=lambda w: len(w.files)):
            while self.waiting and len(w.files) < FILES_PER_WORKER:
                task = self.waiting.popleft()
                if not w.files:
                    w.since = time.monotonic()
                w.files.append(task)
                try:
                    w.conn.send(task)
                except OSError:
                    break  # it died: found and handled by next_event

    def next_event(self, timeout: float = 0.2) -> Event | None:
        """The next event, or None when none came within `timeout` (then the caller may use
        the lull, e.g. to embed what it has)."""
        if not self.events:
            self.wake.wait(timeout)
            self.wake.clear()
            for w in list(self.workers):
                self._receive(w)
            self._stop_stalled()
            self._assign()
        if not self.events:
            return None
        event = self.events.popleft()
        if event.kind is not Kind.BLOCK:
            self.open.discard(event.idx)
        return event

    def _receive(self, w: _Worker) -> None:
        """Everything worker `w`'s reader has received; if its pipe has ended, it died."""
        while True:
            try:
                message = w.inbox.get_nowait()
            except queue.Empty:
                return
            if message is None:
                w.process.join(1)
                if not w.ready:
                    raise _startup_failure(w.process.exitcode)
                self._replace(w, Kind.CRASHED, Status.CRASHED,
                              f"decoder crashed (exit {w.process.exitcode})")
                return
            kind, idx, payload = message
            w.since = time.monotonic()
            if kind == READY:
                w.ready = True
                continue
            if kind == Kind.BLOCK.value:
                self.events.append(Event(Kind.BLOCK, idx, block=payload))
                continue
            w.files.popleft()
            if kind == Kind.DONE.value:
                self.events.append(Event(Kind.DONE, idx))
            else:
                self.events.append(Event(Kind.FAILED, idx, status=Status(payload[0]),
                                         reason=payload[1]))
            if w.files:
                w.since = time.monotonic()

    def _stop_stalled(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if not w.ready and now - w.since > max(self.stall_timeout, STARTUP_SECONDS):
                w.process.kill()
                raise InstagError(f"a decode worker did not start within "
                                  f"{max(self.stall_timeout, STARTUP_SECONDS):g} s",
                                  "check the machine's load and memory; a script calling "
                                  f"instag: {GUARD_FIX}")
        for w in list(self.workers):
            if w.ready and w.files and now - w.since > self.stall_timeout:
                w.process.kill()
                self._replace(w, Kind.STALLED, Status.TIMEOUT, stalled(self.stall_timeout))

    def _replace(self, w: _Worker, kind: Kind, status: Status, reason: str) -> None:
        """Worker `w` is gone: its current file ends with `status`; the files queued behind it
        go back to the front of the queue; a new worker takes its place."""
        lost = w.files.popleft() if w.files else None
        self.waiting.extendleft(reversed(w.files))
        w.gone.set()
        if w.process.is_alive():
            w.process.kill()  # its pipe ends with it, and its reader thread
        self.workers[self.workers.index(w)] = self._start_worker()
        if lost is not None:
            self.events.append(Event(kind, lost[0], status=status, reason=reason))

    def close(self) -> None:
        """Idle workers are told to exit; busy ones (a run cut short) are stopped."""
        for w in self.workers:
            if w.files:
                w.process.kill()
                continue
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.gone.set()
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()


def _startup_failure(exitcode: int | None) -> InstagError:
    """A worker that died before it was ready: the pool cannot run, no file is to blame."""
    if exitcode == REENTERED_SCRIPT:
        return InstagError(UNGUARDED, GUARD_FIX)
    return InstagError(f"a decode worker died while starting (exit {exitcode})",
                       "check the machine's memory and instag's installation (`instag doctor`)")
