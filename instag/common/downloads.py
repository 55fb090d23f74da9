"""Fetching and verifying files: resumable downloads checked against an md5, file digests.

A download goes to ``NAME.part`` (resumed with HTTP Range after a dropped connection) and takes
its final name only once its checksum matches: nothing half-written ever sits at the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from instag.common.errors import InstagError

FREE_SPACE_MARGIN = 100 * 2**20  # leave this much on the disk after a download


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def folder_digest(folder: Path, algorithm: str = "sha256") -> str:
    """A digest of every file under `folder` (names and contents, in sorted order): a SavedModel
    whose variables are replaced in place gets a new one."""
    h = hashlib.new(algorithm)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(file_digest(path, algorithm).encode() + b"\0")
    return h.hexdigest()


def download(
    url: str, dest: Path, md5: str | None = None, *, retries: int = 4, timeout: float = 60,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Fetch `url` to `dest`, resuming a partial `dest.part` with HTTP Range after a dropped
    connection (with retries), then verify the md5 before the file takes its final name. A
    checksum mismatch deletes the download and raises; nothing half-written ever sits at
    `dest`. The free space is checked as soon as the server says how much is coming."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout, progress)
            break
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
            refused = isinstance(getattr(e, "reason", None), ConnectionRefusedError)
            if attempt == retries or refused or isinstance(e, urllib.error.HTTPError):
                raise InstagError(
                    f"{url}: download failed ({getattr(e, 'reason', e)})",
                    f"check the network and run again (a partial download in {part} is resumed)",
                ) from e
            time.sleep(min(2**attempt, 30) * 0.25)
    if md5 is not None:
        got = file_digest(part, "md5")
        if got != md5:
            part.unlink(missing_ok=True)
            raise InstagError(
                f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download was discarded",
                "run again; if it persists the file on the server has changed",
            )
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float, progress) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file is complete
            return
        raise
    with resp:
        resumed = resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        done = have if resumed else 0
        if length:
            free = shutil.disk_usage(part.parent).free
            if free < int(length) + FREE_SPACE_MARGIN:
                raise InstagError(
                    f"{part.parent}: {free / 1e9:.1f} GB free, the download needs "
                    f"{int(length) / 1e9:.1f} GB", "free some space or set INSTAG_CACHE_DIR "
                    "to a disk with room")
        with open(part, "ab" if resumed else "wb") as f:
            while block := resp.read(1 << 20):
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        if total is not None and done < total:
            raise OSError(f"connection closed after {done} of {total} bytes")
