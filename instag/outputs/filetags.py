"""Instrument tags written into the music files themselves, where players, media servers and
taggers look, without ever risking the music (mutagen).

One multi-valued text field, ``INSTRUMENTS`` by default, holds the instruments present (in any
bag), in each format's own multi-value form, the one mutagen and TagLib (what Navidrome,
Strawberry and Clementine read with) both read as several values: ID3 ``TXXX:INSTRUMENTS`` (MP3,
AIFF, WAV) with null-separated values (a v2.3 file stays v2.3: "/"-joined values would read as
one string in TagLib, and mutagen's "/" joining would also rewrite other taggers' multi-valued
frames), a Vorbis comment (FLAC, Ogg Vorbis, Opus: one entry per value), an MP4 freeform atom
``----:com.apple.iTunes:INSTRUMENTS`` (one value per entry), an ASF attribute (WMA) or an APEv2
item (Monkey's Audio, WavPack). With a `separator` the values are joined into one string
instead, for tools that show only the first value (ffprobe, exiftool, mediainfo). Optionally one
``INSTAG_<INSTRUMENT>`` field per instrument with its highest bag probability, two decimals.
The field must be instag's own: every standard field (title, artist, genre, ... in every
family's spelling, from mediafile's and mutagen's mappings) is refused. Nothing else in the
file is touched.

Safety: by default the file is copied beside itself (owner, mode, xattrs and ACLs kept), the
copy opened as the same format as the original (a temp name tells mutagen nothing), its tags
saved, fsynced and renamed over the original (``common.atomic``), but only if the original is
still the file that was copied (same inode, size, mtime, ctime): an edit saved meanwhile by
another tagger is never discarded. A crash at any instant leaves the old file or the new one,
never a broken one. The mtime becomes the time of the write, so media servers rescan. A
symlink is written through (its target is tagged, the link stays a link); a file with several
hard links is not split from its other names by a copy: ``in_place`` (mutagen's own in-place
save, which keeps hard links and needs no space, but an interrupted save can leave a broken
file) is the way to tag it.

Idempotent: a file whose instag fields already say what the result says, as its format
reads them, is `unchanged` and not touched at all (no copy, no rename, no save: the next cron run
moves no mtime and no inode). What the result says is exactly `fields`: no instruments is no
field at all (never an empty one), and INSTAG_* scores only where `fields` has them, with the
same two-decimal values; `--remove` on a file without instag's fields is `unchanged` too.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from instag.common.atomic import Changed, Stamp, atomic_path
from instag.common.enums import TextEnum
from instag.tagging.identity import FileKey
from instag.tagging.tagwriting import MP4_FREEFORM, SCORE_PREFIX, TagWriting


class Outcome(TextEnum):
    """What became of one file's tags."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"  # already right: not rewritten
    WOULD_CHANGE = "would_change"  # a dry run
    UNSUPPORTED = "unsupported"  # a format mutagen cannot tag safely (raw AAC, Matroska, ...)
    FAILED = "failed"


@dataclass(frozen=True)
class TagChange:
    outcome: Outcome
    before: dict[str, list[str]]  # instag's fields as they were
    after: dict[str, list[str]]  # ... and as they are (or would be)
    reason: str = ""

    def describe(self) -> str:
        """The change in words: `would change: INSTRUMENTS=piano, voice` (a dry run)."""
        said = str(self.outcome).replace("_", " ")
        if self.reason:
            return f"{said}: {self.reason}"
        if self.outcome is Outcome.UNCHANGED:
            return said
        return f"{said}: " + "; ".join(  # values as in a list: "a, b"
            f"{k}={', '.join(self.after.get(k, [])) or '(removed)'}"
            for k in sorted(set(self.before) | set(self.after))
            if self.before.get(k) != self.after.get(k))


CHANGED_WHILE_TAGGING = "changed while being tagged (nothing written; the next run retries)"


def failed(reason: str) -> TagChange:
    return TagChange(Outcome.FAILED, {}, {}, reason)


def wanted(instruments: list[str], best: dict[str, float], writing: TagWriting
           ) -> dict[str, list[str]]:
    """The fields instag writes for a file: its instruments, and its scores if asked."""
    values = list(instruments)
    if writing.separator is not None and values:
        values = [writing.separator.join(values)]
    fields = {writing.field: values}
    if writing.scores:
        fields.update({f"{SCORE_PREFIX}{name.upper()}": [f"{p:.2f}"] for name, p in best.items()})
    return fields


# -- the formats --------------------------------------------------------------------------------
class _Family:
    """How a tag family reads: names as written, values as stored (by default)."""

    @staticmethod
    def fold(key: str) -> str:
        return key

    @staticmethod
    def normal(tags, values: list[str]) -> list[str]:
        return values


class _ID3(_Family):
    @staticmethod
    def normal(tags, values: list[str]) -> list[str]:
        """Values as the format means them: in ID3v2.3 "/" separates values (as earlier instag
        and mediafile write), so "a/b" and ["a", "b"] are the same there."""
        if tags is not None and tags.version[:2] == (2, 3):
            return [v for joined in values for v in joined.split("/")]
        return values

    @classmethod
    def get(cls, tags, key: str) -> list[str] | None:
        values = [str(t) for f in tags.getall(f"TXXX:{key}") for t in f.text]
        return cls.normal(tags, values) or None

    @staticmethod
    def set(tags, key: str, values: list[str]) -> None:
        from mutagen.id3 import TXXX

        tags.delall(f"TXXX:{key}")
        tags.add(TXXX(encoding=3, desc=key, text=values))

    @staticmethod
    def delete(tags, key: str) -> None:
        tags.delall(f"TXXX:{key}")

    @staticmethod
    def keys(tags) -> list[str]:
        return [f.desc for f in tags.getall("TXXX")]

    @staticmethod
    def save(audio) -> None:
        version = 3 if audio.tags.version[:2] == (2, 3) else 4  # keep what the file had
        audio.save(v2_version=version, v23_sep=None)  # None: null-separated, as v2.4


class _Mapping(_Family):
    """Vorbis comments, ASF attributes and APEv2 items: name -> list of text."""

    @staticmethod
    def get(tags, key: str) -> list[str] | None:
        if key not in tags:
            return None
        values = tags[key]
        return [str(v) for v in (values if isinstance(values, list) else list(values))]

    @staticmethod
    def set(tags, key: str, values: list[str]) -> None:
        tags[key] = list(values)

    @staticmethod
    def delete(tags, key: str) -> None:
        if key in tags:
            del tags[key]

    @staticmethod
    def keys(tags) -> list[str]:
        return list(tags.keys())

    @staticmethod
    def save(audio) -> None:
        audio.save()


class _Vorbis(_Mapping):
    fold = staticmethod(str.upper)  # Vorbis comment names are case-insensitive

    @staticmethod
    def keys(tags) -> list[str]:
        return [k.upper() for k in tags.keys()]


class _MP4(_Mapping):
    @staticmethod
    def get(tags, key: str) -> list[str] | None:
        values = tags.get(MP4_FREEFORM + key)
        return [bytes(v).decode("utf-8") for v in values] if values else None

    @staticmethod
    def set(tags, key: str, values: list[str]) -> None:
        from mutagen.mp4 import AtomDataType, MP4FreeForm

        tags[MP4_FREEFORM + key] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8)
                                    for v in values]

    @staticmethod
    def delete(tags, key: str) -> None:
        tags.pop(MP4_FREEFORM + key, None)

    @staticmethod
    def keys(tags) -> list[str]:
        return [k[len(MP4_FREEFORM):] for k in tags.keys() if k.startswith(MP4_FREEFORM)]


def _family(audio):
    """The tag family of a mutagen file, or None where instag does not write tags."""
    from mutagen.aiff import AIFF
    from mutagen.apev2 import APEv2File
    from mutagen.asf import ASF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    for kinds, family in (((MP3, AIFF, WAVE), _ID3), ((FLAC, OggVorbis, OggOpus), _Vorbis),
                          ((MP4,), _MP4), ((ASF, APEv2File), _Mapping)):
        if isinstance(audio, kinds):
            return family
    return None


# -- writing ------------------------------------------------------------------------------------
def write_tags(path: Path, fields: dict[str, list[str]] | None, writing: TagWriting,
               expect: FileKey | None = None, within: Sequence[Path] = ()) -> TagChange:
    """Give `path` exactly instag's `fields` (a field without values: none; None: remove every
    field of instag's: the field and the scores), nothing written where it has them already,
    atomically unless `writing.in_place`; with `expect`, only while the file is still
    the one `expect` names (its size and mtime). Never raises for one file's problem: whatever
    goes wrong with one file is that file's `failed`. `within`: the folders a link may lead
    into (the library), unless `writing.follow_links` says otherwise."""
    try:
        if (why := _link_refused(Path(path), writing.follow_links, within)) is not None:
            return TagChange(Outcome.UNSUPPORTED, {}, {}, why)
        return _write(Path(path), fields, writing, expect)
    except Changed:
        return failed(CHANGED_WHILE_TAGGING)
    except OSError as e:
        return failed(e.strerror or str(e))
    except Exception as e:  # mutagen's errors, and whatever a damaged file makes it raise
        return failed(f"{type(e).__name__}: {e}" if not str(e) else str(e))


def _link_refused(path: Path, follow: bool | None, within: Sequence[Path]) -> str | None:
    """Why a file reached through a link is not written: nothing is written through a link
    out of the folder the run was aimed at, unless --follow-links says so."""
    real = Path(os.path.realpath(path))
    if real == Path(os.path.abspath(path)) or follow is True:
        return None
    if follow is False:
        return "a link (--no-follow-links)"
    folders = [Path(os.path.realpath(w)) for w in within]
    if not folders or any(real.is_relative_to(f) for f in folders):
        return None
    return f"a link out of the library (to {real}; --follow-links writes through it)"


def _write(path: Path, fields: dict[str, list[str]] | None, writing: TagWriting,
           expect: FileKey | None) -> TagChange:
    import mutagen

    real = Path(os.path.realpath(path))
    st = os.stat(real)  # before reading: what the guard will compare with
    stamp = Stamp.of_stat(st)
    if expect is not None and (stamp.size, stamp.mtime_ns) != (expect.size, expect.mtime_ns):
        return failed(CHANGED_WHILE_TAGGING)
    audio = mutagen.File(real)
    family = _family(audio) if audio is not None else None
    if family is None:
        return TagChange(Outcome.UNSUPPORTED, {}, {}, "no tag format instag writes safely "
                         "(e.g. raw AAC, Matroska)")
    tags = audio.tags
    ours = [k for k in (family.keys(tags) if tags is not None else [])
            if k.upper() == writing.field.upper() or k.upper().startswith(SCORE_PREFIX)]
    before = {k: v for k in ours if (v := family.get(tags, k)) is not None}
    after = {k: v for k, v in (fields or {}).items() if v}  # no values: no field at all
    if _says(family, tags, before) == _says(family, tags, after):
        return TagChange(Outcome.UNCHANGED, before, before)
    read_only = not st.st_mode & stat.S_IWUSR
    if writing.dry_run:
        return TagChange(Outcome.WOULD_CHANGE, before, after,
                         "read-only file: would be left as it is" if read_only else "")
    if read_only:
        return TagChange(Outcome.FAILED, before, before, "read-only file: left as it is")
    if writing.in_place:
        _apply(audio, family, before, after, check=lambda: _unchanged(real, stamp))
        return TagChange(Outcome.WRITTEN, before, after)
    if st.st_nlink > 1:
        return TagChange(Outcome.UNSUPPORTED, before, before,
                         f"{st.st_nlink} hard links; --in-place keeps them")
    with atomic_path(real, replaces=stamp) as tmp:
        _copy(real, tmp)
        _apply(type(audio)(tmp), family, before, after)  # the original's format, not a guess
    return TagChange(Outcome.WRITTEN, before, after)


def _says(family, tags, fields: dict[str, list[str]]) -> dict[str, list[str]]:
    """What `fields` say as the file's format reads them (its names' case, its separators):
    equal for a file already right, whatever spelling a reader cannot tell apart."""
    return {family.fold(k): family.normal(tags, v) for k, v in fields.items()}


def _apply(audio, family, before: dict, after: dict,
           check: Callable[[], None] = lambda: None) -> None:
    """Set instag's fields on an opened file and save it, `check` just before the save."""
    if audio.tags is None:
        audio.add_tags()  # ID3: v2.4
    for key in set(before) - set(after):
        family.delete(audio.tags, key)
    for key, values in after.items():
        family.set(audio.tags, key, values)
    check()
    family.save(audio)


def _unchanged(path: Path, stamp: Stamp) -> None:
    if Stamp.of(path) != stamp:
        raise Changed(str(path))


def _copy(original: Path, copy: Path) -> None:
    """The file's bytes with its mode, xattrs and ACLs (copystat; ACLs are xattrs on Linux),
    and its owner and group where this process may set them."""
    shutil.copyfile(original, copy)
    shutil.copystat(original, copy)  # the mtime too, but the save that follows moves it on
    st = os.stat(original)
    try:
        os.chown(copy, st.st_uid, st.st_gid)
    except PermissionError:
        pass  # not ours to give: the copy stays ours, as any file we write
