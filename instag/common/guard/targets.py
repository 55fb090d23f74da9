"""What instag may write: one rule for every file or folder a user names as an output.

- A new path is created. An existing file is replaced only if it is empty or instag made it
  (each writer says how it recognises its own kind of file: a header, metadata, a marker);
  an input of the same command, an audio file or anything else is refused in one line, and
  left untouched. A link named as an output file is refused (what it points to is not
  instag's to judge).
- The write checks, just before its rename, that the path is still what was claimed
  (`Target.replaces`, passed to `atomic.atomic_path`): a file put there meanwhile is kept.
- Inside an output folder (`inside`): nothing is written through a link (a linked folder or
  file inside it is that file's failure), a name longer than the file system's limit is
  shortened with a digest, and a name already taken by a folder (or a folder name taken by a
  file) gets a digest of its own, so every file has one place, the same on every run.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from instag.common.atomic import Stamp
from instag.common.errors import InstagError

Recognise = Callable[[Path], bool]  # whether an existing file is one instag made
NAME_MAX = 255  # bytes in one name on the file systems libraries live on
HEAD_BYTES = 1 << 16  # what a recogniser reads of a file's start


class Refused(InstagError):
    """A target that is not instag's to write: nothing was written to it."""


@dataclass(frozen=True)
class Target:
    """A claimed output: its path, and what is there now (None: nothing), which a write must
    still find just before its rename."""

    path: Path
    replaces: Stamp | None


def claim_file(path: Path, option: str, ours: Recognise, inputs: Iterable[Path] = ()
               ) -> Target:
    """Claim `path` for a new output (see the module's rule), or raise `Refused`."""
    path = Path(path)
    what = f"{option} {path}"
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise Refused(f"{what}: the name is longer than {NAME_MAX} bytes", "name it shorter")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Target(path, None)
    except OSError as e:
        raise Refused(f"{what}: cannot look at it ({e.strerror})", "name another file") from None
    if stat.S_ISLNK(st.st_mode):
        raise Refused(f"{what}: is a link", "name the file itself, or a new one")
    if stat.S_ISDIR(st.st_mode):
        raise Refused(f"{what}: is a folder", "name a file")
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{what}: is not a regular file", "name a new file")
    for source in inputs:
        if _same(path, st, source):
            raise Refused(f"{what}: is an input of this command", "write the output elsewhere")
    if st.st_size and not _recognised(path, ours):
        raise Refused(f"{what}: exists and is not an output instag made",
                      "name a new file, or remove that one if it is yours to remove")
    return Target(path, Stamp.of_stat(st))


def claim_files(claims: Iterable[tuple[Path, str, Recognise]], inputs: Iterable[Path] = ()
                ) -> list[Target]:
    """Claim the files one command writes (`claim_file` each: path, option, recogniser), none
    named twice: two outputs on one path would each replace the other."""
    inputs, targets, seen = list(inputs), [], {}
    for path, option, ours in claims:
        where = Path(path).resolve()
        if where in seen:
            raise Refused(f"{seen[where]} and {option} name one file, {path}",
                          "give each output its own name")
        seen[where] = option
        targets.append(claim_file(path, option, ours, inputs))
    return targets


def claim_folder(folder: Path, option: str, ours: Recognise) -> Path:
    """Claim `folder` for outputs written inside it: a new or existing folder (not a file);
    `ours` says whether an existing, non-empty folder may be replaced as a whole where the
    writer replaces it (`browse`); writers that add files judge each file with `inside`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise Refused(f"{option} {folder}: is a file", "name a folder")
    if folder.is_dir() and not ours(folder):
        raise Refused(f"{option} {folder}: holds files instag did not write there",
                      "name a new or empty folder")
    return folder


def inside(folder: Path, relative: bytes, ours: Recognise) -> Target:
    """The place of `relative` (a path of bytes, '/'-separated) inside `folder`, created as
    needed, never through a link; raises `Refused` for this one file."""
    here = os.fsencode(Path(folder))
    parts = [p for p in relative.split(b"/") if p not in (b"", b".", b"..")]
    if not parts:
        raise Refused(f"{folder}: no name to write", "name the file")
    for i, part in enumerate(parts[:-1]):
        here = _folder_in(here, _fitted(part, b"/".join(parts[: i + 1])), relative)
    name = _fitted(parts[-1], relative)
    path = os.path.join(here, name)
    if _is_folder(path):  # a folder of that name: the file gets a name of its own
        path = os.path.join(here, _fitted(name, relative, force=True))
    return _claimed(Path(os.fsdecode(path)), ours)


def _is_folder(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _claimed(path: Path, ours: Recognise) -> Target:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Target(path, None)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise Refused(f"{path}: is a link or not a regular file", "remove it, or write "
                      "elsewhere")
    if st.st_size and not _recognised(path, ours):
        raise Refused(f"{path}: exists and is not a file instag made", "remove it if it is "
                      "yours to remove, or write elsewhere")
    return Target(path, Stamp.of_stat(st))


def _folder_in(here: bytes, name: bytes, relative: bytes) -> bytes:
    """`name` as a folder in `here`: made if absent; one taken by a file gets a name of its
    own; a link is refused."""
    for candidate in (name, _fitted(name, relative, force=True)):
        path = os.path.join(here, candidate)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path)
            return path
        if stat.S_ISLNK(st.st_mode):
            raise Refused(f"{os.fsdecode(path)}: is a link inside the output folder",
                          "remove the link; instag writes nothing through one")
        if stat.S_ISDIR(st.st_mode):
            return path
    raise Refused(f"{os.fsdecode(path)}: taken by a file", "remove it, or write elsewhere")


def _fitted(name: bytes, relative: bytes, force: bool = False) -> bytes:
    """`name` within the file system's limit: a long one (or, with `force`, any) keeps its
    start and its extension around a digest of the whole relative path."""
    if len(name) <= NAME_MAX and not force:
        return name
    digest = b"~" + hashlib.sha256(relative).hexdigest()[:12].encode()
    stem, dot, ext = name.rpartition(b".")
    ext = dot + ext if dot and len(ext) <= 16 else b""
    stem = name[: len(name) - len(ext)]
    keep = NAME_MAX - len(digest) - len(ext)
    return stem[:keep] + digest + ext


def _same(path: Path, st: os.stat_result, source: Path) -> bool:
    try:
        other = os.stat(source)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _recognised(path: Path, ours: Recognise) -> bool:
    try:
        return ours(path)
    except Exception:  # noqa: BLE001 - whatever a recogniser cannot read is not instag's
        return False


def head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first bytes of a file, for a recogniser."""
    with open(path, "rb") as f:
        return f.read(size)


def starts_with(*prefixes: bytes) -> Recognise:
    """A recogniser: the file starts with one of `prefixes` (a UTF-8 BOM allowed)."""
    return lambda path: head(path).removeprefix(b"\xef\xbb\xbf").startswith(prefixes)


def json_with(key: str) -> Recognise:
    """A recogniser: a JSON object whose first 64 kB name `key` (instag's own documents)."""
    return lambda path: (head(path).lstrip().startswith(b"{")
                         and f'"{key}"'.encode() in head(path))


PNG_SOFTWARE = "instag"  # the PNG text field instag's figures carry (matplotlib's metadata)
PNG_METADATA = {"Software": PNG_SOFTWARE}


def png_by_instag(path: Path) -> bool:
    """A PNG whose Software text says instag drew it."""
    data = head(path)
    return data.startswith(b"\x89PNG") and b"tEXtSoftware\x00" + PNG_SOFTWARE.encode() in data
