"""Where instag keeps what it downloads and installs, and how it downloads: resumable, verified.

Caches (VGGish hub model, PCA parameters, the tagging cache) go in the user cache directory,
installed models in the user data directory (platformdirs), both movable by environment:
``INSTAG_CACHE_DIR``, ``INSTAG_DATA_DIR``. tensorflow_hub's own cache defaults to /tmp, which cron
hosts clean, so ``TFHUB_CACHE_DIR`` defaults to ``<cache>/tfhub`` unless the user set it.
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

from instag.errors import InstagError

APP = "instag"
PCA_URL = "https://storage.googleapis.com/audioset/vggish_pca_params.npz"
PCA_MD5 = "c80cae691033abe7c7ecd11ea39fc834"
PCA_FILE = "vggish_pca_params.npz"
FREE_SPACE_MARGIN = 100 * 2**20  # leave this much on the disk after a download


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("INSTAG_CACHE_DIR") or user_cache_dir(APP)).expanduser()


def data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("INSTAG_DATA_DIR") or user_data_dir(APP)).expanduser()


def tfhub_cache_dir() -> Path:
    """The hub cache, set in the environment for tensorflow_hub unless the user chose one."""
    os.environ.setdefault("TFHUB_CACHE_DIR", str(cache_dir() / "tfhub"))
    return Path(os.environ["TFHUB_CACHE_DIR"])


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
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


def pca_params(path_or_none: str | Path | None = None, url: str = PCA_URL,
               md5: str = PCA_MD5) -> Path:
    """The VGGish PCA file: a path given by the user, else the cached official file (fetched and
    checksum-verified once). ``INSTAG_PCA`` names a path too."""
    given = path_or_none or os.environ.get("INSTAG_PCA")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InstagError(f"{path}: no such PCA file", "pass vggish_pca_params.npz or omit "
                              "--pca to use the official one")
        return path
    cached = cache_dir() / PCA_FILE
    if cached.is_file():
        return cached
    try:
        return download(url, cached, md5)
    except InstagError as e:
        raise InstagError(f"no VGGish PCA parameters in {cache_dir()}: {e.message}",
                          "run `instag setup` once on a machine with internet, or pass "
                          "--pca FILE") from e


def hub_cached(handle: str) -> Path | None:
    """The local SavedModel for a VGGish handle, if it is a directory or already in the hub
    cache (tensorflow_hub names cache folders by the sha1 of the handle)."""
    local = Path(handle).expanduser()
    if local.is_dir():
        return local if (local / "saved_model.pb").is_file() else None
    cached = tfhub_cache_dir() / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return cached if (cached / "saved_model.pb").is_file() else None


INSTALLED_MODEL = "instag-att.onnx"


def installed_model() -> Path:
    """Where `instag setup` installs the scoring model (its model card beside it)."""
    return data_dir() / "models" / INSTALLED_MODEL


def resolve_model(option: str | Path | None = None) -> Path:
    """--model, else $INSTAG_MODEL, else the model `instag setup` installed, else a clear error."""
    given = option or os.environ.get("INSTAG_MODEL")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InstagError(f"{path}: no such model file",
                              "pass an .onnx from `instag export-onnx`, or run `instag setup`")
        return path
    if installed_model().is_file():
        return installed_model()
    raise InstagError("no trained model", "run `instag setup` (downloads 2.6 GB, trains in "
                      "minutes) or pass --model")
