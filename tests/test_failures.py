"""One mapping from what went wrong to a status: permanent only when the file itself is the
cause, retried by the next run otherwise."""

import errno

import pytest

from instag.common.status import Status
from instag.features.decode import AudioError
from instag.tagging.failures import failure


@pytest.mark.parametrize("error, status", [
    (OSError(errno.EIO, "Input/output error"), Status.UNREADABLE),
    (OSError(errno.ENXIO, "No such device or address"), Status.UNREADABLE),
    (OSError(errno.ESTALE, "Stale file handle"), Status.UNREADABLE),
    (PermissionError(errno.EACCES, "Permission denied"), Status.UNREADABLE),
    (FileNotFoundError(errno.ENOENT, "No such file"), Status.MISSING),
    (TimeoutError("no progress for 3 s"), Status.TIMEOUT),
    (ValueError("a decoder's bug"), Status.CRASHED),
    (AudioError("x.flac", "corrupt or truncated audio"), Status.ERROR),
    (AudioError("x.wav", "no audio", Status.EMPTY), Status.EMPTY),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_each_failure_has_one_status(error, status):
    assert failure(error)[0] is status


def test_only_what_the_file_itself_causes_is_permanent():
    assert {s for s in Status if s.permanent} == {Status.ERROR, Status.EMPTY, Status.TOO_SHORT}
