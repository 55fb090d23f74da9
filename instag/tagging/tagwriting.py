"""How a run writes the files' own tags (`TagWriting`), checked when made: the field must be
instag's own, never one that players and taggers give a meaning (a standard field, from
mediafile's and mutagen's own mappings of every format)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from instag.common.errors import UsageError
from instag.common.spelling import output

DEFAULT_FIELD = "INSTRUMENTS"
SCORE_PREFIX = "INSTAG_"
MP4_FREEFORM = "----:com.apple.iTunes:"


@dataclass(frozen=True)
class TagWriting:
    """How tags are written: which field, with scores or not, how, or only shown. Checked when
    made, so the CLI, the Python API and the beets plugin refuse the same settings."""

    field: str = DEFAULT_FIELD
    scores: bool = False
    in_place: bool = False
    dry_run: bool = False
    separator: str | None = None  # None: the format's own multi-value form
    # None (the default): a link is written through while its target is in the library (the
    # folder the run was aimed at), else `unsupported`; True: any link; False: no link
    follow_links: bool | None = None

    def __post_init__(self) -> None:
        check_field(self.field)
        if self.separator is not None and not self.separator.strip():
            raise UsageError(f"{output('--tag-separator', 'separator')} {self.separator!r}: "
                             "needs a visible character",
                             f"e.g. {output('--tag-separator', 'separator=')} '; '")


_FIELD_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*")  # a Vorbis name, readable anywhere


def _spelling(name: str) -> str:
    """A field name with case, spaces and punctuation folded: ALBUM ARTIST = album_artist."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@functools.cache
def standard_fields() -> frozenset[str]:
    """Every field name that players and taggers give a meaning, folded (`_spelling`): the
    names and storage keys of mediafile (beets' own mapping, every family's spelling), mutagen's
    EasyID3 and EasyMP4 names and the ID3 frame ids."""
    import mutagen.id3
    from mediafile import MediaFile
    from mutagen.easyid3 import EasyID3
    from mutagen.easymp4 import EasyMP4Tags

    names = set(EasyID3.valid_keys) | set(EasyMP4Tags.Get) | set(mutagen.id3.Frames)
    for name in MediaFile.fields():
        names.add(name)
        for style in getattr(MediaFile.__dict__.get(name), "_styles", None) or ():
            for key in (style.key, getattr(style, "description", "")):
                names.add(key.removeprefix(MP4_FREEFORM).removeprefix("WM/"))
    return frozenset(f for f in map(_spelling, names) if f)


def check_field(field: str) -> None:
    """instag writes (and removes) only a field of its own: never one with a standard meaning
    (`--tag-field TITLE --remove` would delete every title)."""
    if not _FIELD_CHARS.fullmatch(field):
        raise UsageError(f"{output('--tag-field', 'field')} {field!r}: letters, digits, "
                         "spaces, '_', '.' and '-' only",
                         f"e.g. {output('--tag-field ', 'field=')}{DEFAULT_FIELD}")
    if _spelling(field) in standard_fields() or field.upper().startswith(SCORE_PREFIX):
        raise UsageError(f"{output('--tag-field', 'field')} {field}: a standard tag (or "
                         "instag's scores): instag writes only a field of its own",
                         f"use the default {DEFAULT_FIELD} or a name no tagger uses")
