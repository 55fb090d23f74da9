"""Instrument tags written into the music files themselves, where players, media servers and
taggers look, without ever risking the music (mutagen).

One multi-valued text field, ``INSTRUMENTS`` by default, holds the instruments present (in any
bag), in each format's own form: ID3 ``TXXX:INSTRUMENTS`` (MP3, AIFF, WAV; a v2.3 file stays
v2.3, its values joined with "/" as v2.3 readers expect; a file without ID3 gets v2.4), a Vorbis
comment (FLAC, Ogg Vorbis, Opus: one entry per value), an MP4 freeform atom
``----:com.apple.iTunes:INSTRUMENTS`` (UTF-8, one value per entry), an ASF attribute (WMA) or an
APEv2 item (Monkey's Audio, WavPack). Optionally one ``INSTAG_<INSTRUMENT>`` field per instrument
with its highest bag probability, two decimals. Nothing else in the file is touched.

Safety: by default the file is copied beside itself, the copy's tags saved, the copy fsynced and
renamed over the original (``common.atomic``): a crash at any instant leaves the old file or the
new one, never a broken one. The mode is kept, and the owner and group where this process may
set them; the mtime becomes the time of the write, so media servers rescan. ``in_place`` uses
mutagen's own in-place save instead: hard links survive and no space is needed, but an
interrupted save can leave a broken file. A file whose tags are already right is not rewritten.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from instag.common.atomic import atomic_path
from instag.common.enums import TextEnum
from instag.tagging.cache import Cache, FileKey, lock
from instag.tagging.results import audio_path

DEFAULT_FIELD = "INSTRUMENTS"
SCORE_PREFIX = "INSTAG_"
MP4_FREEFORM = "----:com.apple.iTunes:"


class Outcome(TextEnum):
    """What became of one file's tags."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"  # already right: not rewritten
    WOULD_CHANGE = "would_change"  # a dry run
    UNSUPPORTED = "unsupported"  # a format mutagen cannot tag safely (raw AAC, Matroska, ...)
    FAILED = "failed"



@dataclass(frozen=True)
class TagWriting:
    """How tags are written: which field, with scores or not, how, or only shown."""

    field: str = DEFAULT_FIELD
    scores: bool = False
    in_place: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class TagChange:
    outcome: Outcome
    before: dict[str, list[str]]  # instag's fields as they were
    after: dict[str, list[str]]  # ... and as they are (or would be)
    reason: str = ""

    def describe(self) -> str:
        if self.reason:
            return f"{self.outcome}: {self.reason}"
        if self.outcome is Outcome.UNCHANGED:
            return str(self.outcome)
        return f"{self.outcome}: " + "; ".join(
            f"{k}={'/'.join(self.after.get(k, [])) or '(removed)'}"
            for k in sorted(set(self.before) | set(self.after))
            if self.before.get(k) != self.after.get(k))


def wanted(instruments: list[str], best: dict[str, float], writing: TagWriting
           ) -> dict[str, list[str]]:
    """The fields instag writes for a file: its instruments, and its scores if asked."""
    fields = {writing.field: list(instruments)}
    if writing.scores:
        fields.update({f"{SCORE_PREFIX}{name.upper()}": [f"{p:.2f}"] for name, p in best.items()})
    return fields


# -- the formats --------------------------------------------------------------------------------
class _ID3:
    @staticmethod
    def get(tags, key: str) -> list[str] | None:
        values = [str(t) for f in tags.getall(f"TXXX:{key}") for t in f.text]
        if tags.version[:2] == (2, 3):  # v2.3 has one text per frame: values joined with "/"
            values = [v for joined in values for v in joined.split("/")]
        return values or None

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
        audio.save(v2_version=version, v23_sep="/")


class _Mapping:
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
def write_tags(path: Path, fields: dict[str, list[str]] | None, writing: TagWriting
               ) -> TagChange:
    """Give `path` instag's `fields` (None: remove every field of instag's: the field and the
    scores), atomically unless `writing.in_place`. Never raises for one file's problem."""
    import mutagen

    try:
        audio = mutagen.File(path)
        family = _family(audio) if audio is not None else None
        if family is None:
            return TagChange(Outcome.UNSUPPORTED, {}, {}, "no tag format instag writes safely "
                             "(e.g. raw AAC, Matroska)")
        tags = audio.tags
        ours = [k for k in (family.keys(tags) if tags is not None else [])
                if k.upper() == writing.field.upper() or k.upper().startswith(SCORE_PREFIX)]
        before = {k: family.get(tags, k) for k in ours}
        before = {k: v for k, v in before.items() if v is not None}
        after = {} if fields is None else {**before, **fields}  # other scores stay as they are
        if after == before:
            return TagChange(Outcome.UNCHANGED, before, after)
        read_only = not os.stat(path).st_mode & stat.S_IWUSR
        if writing.dry_run:
            return TagChange(Outcome.WOULD_CHANGE, before, after,
                             "read-only file: would be left as it is" if read_only else "")
        if read_only:
            return TagChange(Outcome.FAILED, before, before, "read-only file: left as it is")
        if writing.in_place:
            _apply(audio, family, before, after)
        else:
            with atomic_path(path) as tmp:
                shutil.copyfile(path, tmp)
                _keep_owner(path, tmp)
                _apply(mutagen.File(tmp), family, before, after)
        return TagChange(Outcome.WRITTEN, before, after)
    except (OSError, mutagen.MutagenError, ValueError) as e:
        return TagChange(Outcome.FAILED, {}, {}, getattr(e, "strerror", None) or str(e))


def _apply(audio, family, before: dict, after: dict) -> None:
    if audio.tags is None:
        audio.add_tags()  # ID3: v2.4
    for key in set(before) - set(after):
        family.delete(audio.tags, key)
    for key, values in after.items():
        family.set(audio.tags, key, values)
    family.save(audio)


def _keep_owner(original: Path, copy: Path) -> None:
    st = os.stat(original)
    try:
        os.chown(copy, st.st_uid, st.st_gid)
    except PermissionError:
        pass  # not ours to give: the copy stays ours, as any file we write


def retag(docs: list[dict], writing: TagWriting, remove: bool, cache_path: Path,
          wait: bool = False) -> Iterator[tuple[Path, TagChange]]:
    """`instag write-tags`: write (or with `remove`, take out) the tags of a finished run's
    files, from its JSON documents. Holds the cache's lock and moves each rewritten file's
    cache entry along, so that the next run does not decode it again."""
    with lock(cache_path, wait):
        cache = Cache(cache_path)
        try:
            for doc in docs:
                if doc.get("status") != "ok":
                    continue
                path = audio_path(doc["path"])
                best = {c: max(b["probabilities"][c] for b in doc["bags"])
                        for c in (doc["bags"][0]["probabilities"] if doc["bags"] else {})}
                try:
                    old = FileKey.of(path)
                except OSError as e:
                    yield path, TagChange(Outcome.FAILED, {}, {}, e.strerror or str(e))
                    continue
                change = write_tags(path, None if remove else
                                    wanted(doc["instruments"], best, writing), writing)
                if change.outcome is Outcome.WRITTEN:
                    cache.rekey(old, FileKey.of(path))
                yield path, change
        finally:
            cache.close()
