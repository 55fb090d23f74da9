"""The decode pool: worker processes that turn file paths into 16 kHz blocks.

Plumbing only: paths go in (`submit`), events come out (`next_event`): a block of a file, the
file done, the file failed (with its status), or the worker decoding it crashed. What becomes of
them (chunking, embedding, caching, ordering, progress) is the run's business.

Workers are spawn-started, so nothing of TensorFlow or onnxruntime is forked into them; each
streams its file's blocks through a bounded queue (memory stays bounded for any file length),
and every wait in a worker has a timeout, so workers exit by themselves when the main process
dies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from instag.common.status import Status
from instag.features.decode import AudioError
from instag.features.resample import Resampler

QUEUE_BLOCKS_PER_JOB = 4  # decoded blocks in flight per worker: bounds memory


class Kind(Enum):
    BLOCK = "block"  # the next 16 kHz block of a file
    DONE = "done"  # the file's last block has been sent
    FAILED = "failed"  # the decoder said why the file cannot be decoded
    CRASHED = "crashed"  # the worker died while decoding the file


@dataclass(frozen=True)
class Event:
    kind: Kind
    idx: int  # the file, as numbered by `submit`
    block: np.ndarray | None = None
    status: Status = Status.OK
    reason: str = ""


def _decode_worker(tasks, out, resampler: Resampler) -> None:
    """Worker process: stream each assigned file's 16 kHz blocks back to the main process."""
    from instag.features.resample import stream_16k

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
                send((Kind.BLOCK.value, idx, block))
            send((Kind.DONE.value, idx, None))
        except AudioError as e:
            send((Kind.FAILED.value, idx, (e.status.value, e.reason)))
        except Exception as e:  # a decoder bug must cost one file, not the run
            send((Kind.FAILED.value, idx, (Status.ERROR.value, f"{type(e).__name__}: {e}")))


class DecodePool:
    """`jobs` decode workers; a crashed worker is replaced, and costs only its file."""

    def __init__(self, jobs: int, resampler: Resampler) -> None:
        self.jobs = max(1, jobs)
        self.resampler = resampler
        self.ctx = mp.get_context("spawn")
        self.tasks = self.ctx.Queue()
        self.out = self.ctx.Queue(maxsize=QUEUE_BLOCKS_PER_JOB * self.jobs)
        self.workers = [self._start_worker() for _ in range(self.jobs)]
        self.pending: set[int] = set()  # submitted, not yet done, failed or crashed
        self.by_pid: dict[int, int] = {}  # worker pid -> the file it works on
        self.crashed: deque[Event] = deque()

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def _start_worker(self):
        w = self.ctx.Process(target=_decode_worker, args=(self.tasks, self.out, self.resampler),
                             daemon=True)
        w.start()
        return w

    def submit(self, idx: int, path: Path) -> None:
        self.pending.add(idx)
        self.tasks.put((idx, path))

    def next_event(self, timeout: float = 0.2) -> Event | None:
        """The next event, or None when none came within `timeout` (then the caller may use
        the lull, e.g. to embed what it has)."""
        deadline = time.monotonic() + timeout
        while not self.crashed:
            try:
                kind, idx, payload = self.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._replace_dead_workers()
                break
            if kind == "start":
                self.by_pid[payload] = idx
                continue
            if kind != Kind.BLOCK.value:
                self.pending.discard(idx)
            if kind == Kind.FAILED.value:
                return Event(Kind.FAILED, idx, status=Status(payload[0]), reason=payload[1])
            return Event(Kind(kind), idx, block=payload)
        return self.crashed.popleft() if self.crashed else None

    def _replace_dead_workers(self) -> None:
        """A worker that crashed (a decoder library's segfault) costs its file only."""
        for n, w in enumerate(self.workers):
            if not w.is_alive() and w.exitcode not in (0, None):
                lost = self.by_pid.pop(w.pid, None)
                if lost in self.pending:
                    self.pending.discard(lost)
                    self.crashed.append(Event(Kind.CRASHED, lost, status=Status.ERROR,
                                              reason=f"decoder crashed (exit {w.exitcode})"))
                self.workers[n] = self._start_worker()

    def close(self) -> None:
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=2)
            if w.is_alive():
                w.terminate()
