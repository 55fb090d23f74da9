"""Ctrl-C and SIGTERM during a command: one line saying what was done and what is kept, the
exit code 130 or 143, temp files removed on the way out; once a command has put its output in
place, its own exit code stands."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import typer

from instag.cli.console import say_stopped
from instag.common.stops import Process, Terminated, signal_behind
from instag.engines.local.run import TagRun
from instag.engines.ray.pipeline import RayRun


class Stop:
    """Ctrl-C and SIGTERM while a command runs: they stop it, until `hold()` says that what it
    does now (putting its output in place, its last line) is to stand whatever comes."""

    def __init__(self) -> None:
        self.held = False

    def hold(self) -> None:
        self.held = True
        Process.held = True  # and `python -m instag`'s own handler, once this one is restored

    def handler(self, error: type[BaseException]):
        def raise_unless_held(signum, frame):
            if not self.held:
                raise error

        return raise_unless_held


@contextlib.contextmanager
def stopping(say: Callable[[], str], before: Callable[[], None] = lambda: None
             ) -> Iterator[Stop]:
    """Ctrl-C (exit 130) and SIGTERM (exit 143) unwind the command (temp files removed on the
    way out) and end it with one line: `say()` tells what was done and what is kept. Once the
    command holds (its output renamed into place), its exit code is its own."""
    stop = Stop()
    previous = {sig: signal.signal(sig, stop.handler(error)) for sig, error in
                ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt))}
    try:
        yield stop
    except BaseException as e:
        if (behind := signal_behind(e)) is None:
            raise
        before()
        raise typer.Exit(say_stopped(behind, say())) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stoppable(run: TagRun | RayRun, kept: str) -> Iterator[Stop]:
    """A run stopped by a signal: workers are stopped, the cache is consistent, and the line
    says how many files were finished."""
    try:
        with stopping(lambda: interrupted_line(run, kept), before=run.reporter.close) as stop:
            yield stop  # (the progress bar is closed before the line)
    finally:
        run.reporter.close()


def interrupted_line(run: TagRun | RayRun, kept: str) -> str:
    """What a stopped run leaves for the next one: locally, what the cache holds of the run's
    files (their features: scoring them again is quick); on Ray, the results."""
    s = run.counts
    if isinstance(run, RayRun):
        return f"{s.done} of {s.total} files finished, {kept}"
    return (f"the cache holds {s.cached_features} of {s.total} files, where the next run "
            f"starts; {kept}")
