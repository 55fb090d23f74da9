"""The one mapping from what went wrong with a file to its status, for both engines.

Permanent statuses are the ones that cannot change without the file changing: `error` (corrupt,
not audio, a damaged header, a cut file: "damaged: the header says 150.0 s, 15.8 s decodes", whose
decodable part is not tagged), `empty`, `too_short`. Everything else is retried by the next
run: the file vanished (`missing`), could not be read (`unreadable`: permission denied, and
every I/O error: EIO, ENXIO, ESTALE from a network or USB disk), the decoder died or failed in
a way that is not the file's (`crashed`: a decoder, a prober or a decode worker killed by a
signal such as the OOM killer, at whichever stage; a bug in a decoder), or made no progress
(`timeout`)."""

from __future__ import annotations

from instag.common.status import Status
from instag.features.decode import AudioError

RETRIED = "retried next run"


def failure(e: BaseException) -> tuple[Status, str]:
    """(status, reason) of a file whose decoding raised `e`."""
    if isinstance(e, AudioError):
        return e.status, e.reason
    if isinstance(e, FileNotFoundError):
        return Status.MISSING, "file vanished"
    if isinstance(e, PermissionError):
        return Status.UNREADABLE, "permission denied"
    if isinstance(e, TimeoutError):
        return Status.TIMEOUT, str(e) or "no progress: stopped, " + RETRIED
    if isinstance(e, OSError):
        return Status.UNREADABLE, f"I/O error ({e.strerror or e}); {RETRIED}"
    return Status.CRASHED, f"the decoder failed ({type(e).__name__}: {e}); {RETRIED}"


def stalled(seconds: float) -> str:
    """The reason of a file whose decoder made no progress for `seconds`."""
    return f"no progress for {seconds:g} s (a hung mount or decoder?); stopped, {RETRIED}"
