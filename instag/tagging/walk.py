"""Find the audio files under the paths a user gives, in a stable order.

Recursive; audio extensions only (case-insensitive); hidden files and folders skipped unless
asked; symlinks followed, each real folder visited once (no loops); folders that cannot be read
are reported, not fatal. Paths stay ``pathlib.Path`` throughout, so names with spaces, leading
dashes or bytes that are not UTF-8 pass through untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from instag.features.decode import AUDIO_EXTENSIONS


def parse_extensions(text: str | None) -> tuple[str, ...]:
    """'mp3,flac' -> ('.mp3', '.flac'); None -> the default audio extensions."""
    if not text:
        return AUDIO_EXTENSIONS
    return tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())


def walk(
    paths: Iterable[str | Path],
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    include_hidden: bool = False,
    on_error: Callable[[Path, str], None] | None = None,
) -> Iterator[Path]:
    """Yield audio files: a file given by name is yielded whatever its extension (the user
    asked for it); folders are searched recursively in sorted order."""
    seen_dirs: set[tuple[int, int]] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from _walk_dir(p, extensions, include_hidden, seen_dirs, on_error)
        else:
            yield p  # a missing or odd file is reported by the decoder, per file


def _walk_dir(root: Path, extensions, include_hidden, seen_dirs, on_error) -> Iterator[Path]:
    try:
        st = root.stat()
    except OSError as e:
        if on_error:
            on_error(root, f"cannot read folder ({e.strerror})")
        return
    if (st.st_dev, st.st_ino) in seen_dirs:
        return  # a symlink back into a folder already walked
    seen_dirs.add((st.st_dev, st.st_ino))
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as e:
        if on_error:
            on_error(root, f"cannot read folder ({e.strerror})")
        return
    for entry in entries:
        if not include_hidden and entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk_dir(path, extensions, include_hidden, seen_dirs, on_error)
        elif path.suffix.lower() in extensions:
            yield path
