"""Ctrl-C and SIGTERM as exceptions, what the process knows of a command's stop, and a way to
hold them back while something that must not be cut half-way runs.

Light on purpose: `python -m instag` installs its handlers from here before it imports anything
heavy, so a signal at any moment of a run ends it with one line and 130 or 143."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOPS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that a command unwinds as it does on Ctrl-C (a
    BaseException, like KeyboardInterrupt: no per-file `except Exception` swallows it)."""


class Process:
    """What the command line's process knows of the running command's stop (read by
    `instag.__main__` only: in a script or a test nothing looks at it)."""

    held = False  # its output is in place, or it is unwinding: a signal now changes nothing
    said = False  # it has said in one line why it stopped: nothing more to say


def stop_for(signum: int) -> BaseException:
    """The exception a stop signal becomes."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the block runs, then acted on once, as they would
    have been. For starting a process: one cut half-way leaves a child that dies of SIGABRT or
    runs on unseen, and the run must not ignore the signal instead (it would write its output
    after a Ctrl-C). Two parts: the calling thread's mask blocks them, and a child started
    meanwhile is born with that mask (it sets its own handling once it runs); and, since
    another thread may take the signal and Python runs handlers in the main thread at any
    moment, the main thread's handlers only record it until the block ends."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # its start would unblock the mask half-way
    got: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():  # elsewhere: none to change
        previous = {s: signal.signal(s, lambda n, _: got.append(n)) for s in STOPS
                    if signal.getsignal(s) is not None}  # (None: not Python's to set)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending one is recorded now
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(got):
            signal.raise_signal(s)  # the handler it would have met acts on it


def signal_behind(e: BaseException) -> KeyboardInterrupt | Terminated | None:
    """The Ctrl-C or SIGTERM that `e` is, or that caused it: one that lands while a C
    extension imports (onnxruntime, numpy) comes back as ImportError("initialization failed"),
    which the loading code would report as a broken model."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt | Terminated):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
