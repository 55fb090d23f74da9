"""How a file's processing ended: one vocabulary for the decoder, the cache, the run and the
outputs."""

from __future__ import annotations

from instag.common.enums import TextEnum


class Status(TextEnum):
    """A file's outcome. A str, so it is written as its value in CSV and JSON."""

    OK = "ok"
    ERROR = "error"  # not audio, corrupt, or cut short (damaged): will not change by itself
    EMPTY = "empty"  # zero samples
    TOO_SHORT = "too_short"  # less than one 0.96 s instance
    TOO_LONG = "too_long"  # over --max-duration (not remembered: the limit may change)
    UNSUPPORTED = "unsupported"  # no decoder here for it (e.g. ffmpeg missing)
    MISSING = "missing"  # vanished between the walk and the decoding
    UNREADABLE = "unreadable"  # permission denied, folder unreadable
    CRASHED = "crashed"  # a decoder or prober died on it (the OOM killer?): not the file's
    TIMEOUT = "timeout"  # the decoder made no progress (a hung mount, a stuck ffmpeg)


    @property
    def permanent(self) -> bool:
        """A failure that will not go away on its own, so the cache may remember it; the others
        (a permission fixed, ffmpeg installed) are retried by the next run."""
        return self in (Status.ERROR, Status.EMPTY, Status.TOO_SHORT)
