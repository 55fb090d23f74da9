"""How a long set-up step speaks in a log (cron, a CI job), where no bar is drawn: a line every
few seconds, saying how far it is where it can."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

Say = Callable[[str], None]
TICK_SECONDS = 15.0  # a long step off a terminal says how far it is this often


@contextlib.contextmanager
def ticking(say: Say, what: str, on_terminal: bool,
            seconds: float = TICK_SECONDS) -> Iterator[None]:
    """Off a terminal (a log, cron), a line every `seconds` while a step that cannot say how
    far it is runs (the ONNX conversion), so that a log never looks hung; on a terminal the
    bars speak."""
    if on_terminal:
        yield
        return
    done, started = threading.Event(), time.monotonic()

    def tick() -> None:
        while not done.wait(seconds):
            say(f"{what}: still going, {time.monotonic() - started:.0f} s so far")

    thread = threading.Thread(target=tick, daemon=True, name="instag-tick")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def epoch_lines(say: Say, what: str, seconds: float = TICK_SECONDS,
                clock: Callable[[], float] = time.monotonic):
    """Off a terminal, training's progress as a line every `seconds`: the epoch, the best
    validation loss so far and the time left at the pace so far (a log that only said "still
    going" left a user guessing)."""
    last = clock()

    def on_epoch(epoch: int, epochs: int, best: float, elapsed: float) -> None:
        nonlocal last
        if clock() - last < seconds or epoch == epochs:
            return
        last = clock()
        left = timedelta(seconds=round(elapsed / epoch * (epochs - epoch)))
        say(f"{what}: epoch {epoch}/{epochs}, best validation loss {best:.4f}, about {left} "
            "left")

    return on_epoch
