"""Find the audio files under the paths a user gives, in a stable order.

Recursive; audio extensions only (case-insensitive); hidden files and folders skipped unless
asked; symlinks followed, each real folder visited once (no loops); folders that cannot be read
are reported, not fatal. Paths stay ``pathlib.Path`` throughout, so names with spaces, leading
dashes or bytes that are not UTF-8 pass through untouched.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from instag.common.errors import UsageError
from instag.features.decode import AUDIO_EXTENSIONS


def parse_extensions(text: str | None) -> tuple[str, ...]:
    """'mp3,flac' -> ('.mp3', '.flac'); None -> the default audio extensions."""
    if not text:
        return AUDIO_EXTENSIONS
    return tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())


def as_paths(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """A run's paths: a list of them, or one given alone (never taken apart character by
    character: `tag("/srv/music")` is that folder, not `/`, `s`, `r`, ...)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [Path(p) for p in paths]


def check_roots(paths: Iterable[str | Path]) -> None:
    """Paths a user names must exist: a missing one (an unmounted disk, a typo) is a usage
    error before anything runs, never a run that replaces good output with \"missing\"."""
    for p in paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p}: no such file or folder",
                             "check the path (is the disk mounted?); nothing was written")


def walk(
    paths: Iterable[str | Path],
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    hidden: bool = False,
    on_error: Callable[[Path, str], None] | None = None,
) -> Iterator[Path]:
    """Yield audio files, as absolute paths: a file given by name is yielded whatever its
    extension (the user asked for it); folders are searched in sorted order, depth first,
    without recursion (so any depth of nesting works)."""
    seen_dirs: set[tuple[int, int]] = set()
    for p in paths:
        # absolute (links kept as named): an output names files that another folder finds
        p = Path(os.path.abspath(p))
        if not p.is_dir():
            yield p  # a missing or odd file is reported by the decoder, per file
            continue
        stack = [_entries(p, seen_dirs, on_error)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
            elif not hidden and entry.name.startswith("."):
                continue
            elif _is_dir(entry):
                stack.append(_entries(Path(entry.path), seen_dirs, on_error))
            elif Path(entry.path).suffix.lower() in extensions:
                yield Path(entry.path)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _entries(folder: Path, seen_dirs: set[tuple[int, int]],
             on_error: Callable[[Path, str], None] | None) -> Iterator[os.DirEntry]:
    """A folder's entries in byte order; nothing for a folder already walked (a symlink back
    into it) or one that cannot be read (reported)."""
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            return iter(())
        seen_dirs.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            return iter(sorted(it, key=lambda e: os.fsencode(e.name)))
    except OSError as e:
        if on_error:
            on_error(folder, f"cannot read folder ({e.strerror})")
        return iter(())


class PathList(Sequence[Path]):
    """A run's files, packed: their names' bytes end to end and where each ends (about 50
    bytes a file, where a list of Paths takes 240: the walk's list is what a run of a million
    files holds longest)."""

    def __init__(self, paths: Iterable[Path] = ()) -> None:
        self._names = bytearray()
        self._ends = array("Q")
        for p in paths:
            self.append(p)

    def append(self, path: Path) -> None:
        self._names += os.fsencode(path)
        self._ends.append(len(self._names))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> Path:  # type: ignore[override] - no slices
        if i < 0:
            i += len(self._ends)
        end = self._ends[i]  # IndexError past the end, as a list's
        start = self._ends[i - 1] if i else 0
        return Path(os.fsdecode(bytes(self._names[start:end])))


def files_and_folder_errors(paths: Iterable[str | Path], extensions: tuple[str, ...],
                            hidden: bool) -> tuple[PathList, list[tuple[Path, str]]]:
    """A run's audio files, and the folders it could not read (each becomes an `unreadable`
    result after the files), as both engines take them."""
    errors: list[tuple[Path, str]] = []
    files = PathList(walk(paths, extensions, hidden,
                          on_error=lambda p, why: errors.append((p, why))))
    return files, errors
