"""An output folder of one file per audio file (segment exports, Figure 4 plots): each named
after the audio's path under the library's root with an extension added (`album/01.flac` ->
`album/01.flac.jams`: two `01.flac` in two albums, or `01.flac` beside `01.mp3`, never
collide; names that are not UTF-8 keep their bytes), the same place on every run.

Every file goes through the output-target rule (`guard.targets.inside`): nothing through a
link, long names shortened, collisions given names of their own, only over files instag made;
a file refused is `note`d and counted in `failed`, the rest are written; a file whose new
bytes are its old ones is left as it was (a second run changes nothing). Staged (`staged()`),
files are made in a temp folder inside the output folder and moved into place only when the
block ends without error: a run that fails, is stopped or fills the disk leaves the previous
files as they were.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from instag.common.atomic import Changed, atomic_path, temp_dir
from instag.common.errors import InstagError
from instag.common.guard.targets import Recognise, Refused, claim_folder, inside

MANIFEST = "manifest"  # in the staging folder: each staged file's place, one a line


class FolderOutput:
    """One file per audio file into `out`, names relative to `root` plus `extension`; files
    the folder holds already are replaced only where `ours` recognises them."""

    def __init__(self, out: Path, root: Path, extension: str, ours: Recognise,
                 note: Callable[[str], None] = lambda line: None) -> None:
        self.out, self.root, self.extension, self.ours = Path(out), Path(root), extension, ours
        self.note = note
        self.written = self.unchanged = self.failed = 0
        self._staging: Path | None = None
        self._manifest: IO[str] | None = None
        self._staged = 0

    @contextlib.contextmanager
    def staged(self) -> Iterator[FolderOutput]:
        claim_folder(self.out, "--out", lambda folder: True)
        with temp_dir(self.out) as staging, open(staging / MANIFEST, "w+") as manifest:
            self._staging, self._manifest = staging, manifest
            try:
                yield self
            finally:
                self._staging = self._manifest = None
            manifest.seek(0)
            for line in manifest:
                number, relative = line.rstrip("\n").split(" ", 1)
                self._put(bytes.fromhex(relative),
                          lambda tmp, staged=staging / number: os.replace(staged, tmp))

    def relative(self, audio: Path) -> bytes:
        """The name of `audio`'s file, relative to the folder: its path under the root."""
        relative = os.path.relpath(os.fsencode(audio), os.fsencode(self.root))
        if relative.startswith(b".." + os.fsencode(os.sep)) or relative == b"..":
            raise InstagError(f"{audio}: not under the library's root {self.root}",
                              "pass --root with a folder that holds every file")
        return relative.replace(os.fsencode(os.sep), b"/") + self.extension.encode()

    def add(self, audio: Path, fill: Callable[[Path], None]) -> None:
        """The file for `audio`, which `fill` writes at the path it is given."""
        relative = self.relative(audio)
        if self._staging is None or self._manifest is None:
            self._put(relative, fill)
            return
        self._staged += 1
        fill(self._staging / str(self._staged))
        self._manifest.write(f"{self._staged} {relative.hex()}\n")

    def _put(self, relative: bytes, fill: Callable[[Path], None]) -> None:
        """A file into its place in the folder, or one line saying why not; a full disk ends
        the whole output."""
        try:
            target = inside(self.out, relative, self.ours)
            with atomic_path(target.path, target.replaces, keep_same=True) as tmp:
                fill(tmp)
            self.written += 1
        except (Refused, Changed, OSError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            self.failed += 1
            self.note(f"{os.fsdecode(relative)}: not written ({e})")
