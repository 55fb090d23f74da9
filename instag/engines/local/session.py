"""What runs set up once and share (the cache's lock and connection, VGGish, the scoring
model, the decode pool), usable from whichever thread calls it: `run.TagSession` is this with
its runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

from instag.engines.local.cache import Cache, lock
from instag.engines.local.pool import DecodePool, refuse_while_bootstrapping
from instag.tagging.job import Reporter
from instag.tagging.options import Config, TagOptions
from instag.tagging.results import FileResult
from instag.tagging.scoring import Scoring


class Session:
    """Any thread may open it, run in it and close it (beets' threaded importer opens it in one
    thread, tags in another and closes it in a third): each is done under the session's lock,
    so one thread at a time uses what it holds (the cache's connection included), and one run
    at a time. A lock, not one owner thread: the caller's thread does the work, as without
    threads, and nothing is handed between threads but the lock."""

    def __init__(self, opts: TagOptions | Config | None = None,
                 reporter: Reporter | None = None, scoring: bool = True) -> None:
        opts = opts or TagOptions()
        # resolved once: every run in the session reads these values
        self.config = opts if isinstance(opts, Config) else opts.resolve(scoring)
        self.reporter = reporter or Reporter()
        self.with_scoring = scoring
        self._pool: DecodePool | None = None
        self._stack: ExitStack | None = None
        self._lock = threading.RLock()
        self._running = False

    def __enter__(self) -> Session:
        refuse_while_bootstrapping()  # an unguarded script, re-run by a starting worker
        with self._lock:
            return self._open()

    def _open(self) -> Session:
        cache_path = self.config.local.cache
        with ExitStack() as stack:
            held = stack.enter_context(lock(cache_path, self.config.local.wait))
            self.scoring = Scoring(self.config.compute) if self.with_scoring else None
            self.embedder = self.config.compute.embedder(self.reporter.note)
            self.embedder.fetch_if_missing()
            stack.callback(self.embedder.settle)  # (closed last: a stopped run waits for it)
            self.cache = Cache(cache_path, held)
            stack.callback(self.cache.close)
            stack.callback(self.drop_pool)
            if self.cache.moved_aside:
                self.reporter.note(f"{cache_path} was damaged: moved aside to "
                                   f"{self.cache.moved_aside}; starting a fresh cache")
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._stack is not None:
                self._stack.close()
                self._stack = None

    def pool(self, jobs: int) -> DecodePool:
        """The session's decode workers, started on first need."""
        with self._lock:
            if self._pool is None:
                decoding = self.config.decoding
                self._pool = DecodePool(jobs, self.embedder.resampler,
                                        decoding.file_timeout, decoding.max_duration)
            return self._pool

    def drop_pool(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def run(self, start: Callable[[], Iterator[FileResult]]) -> Iterator[FileResult]:
        """A run's results (`start` makes its steps), each step under the session's lock and
        not across the yields: the caller may take them in another thread, or close the
        session between them."""
        with self._lock:
            if self._stack is None or self._running:
                raise RuntimeError("a session runs once opened, one run at a time")
            self._running = True
            steps = start()
        try:
            while True:
                with self._lock:
                    if self._stack is None:
                        raise RuntimeError("the session was closed during its run")
                    result = next(steps, None)
                if result is None:
                    return
                yield result
        finally:
            with self._lock:
                steps.close()
                self._running = False
