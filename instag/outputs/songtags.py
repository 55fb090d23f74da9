"""A song as its own tags name it: artist, title and album, read once per file (mutagen) where
the tags file is written (`sinks.TagsFile`), so that either engine records the same, and
carried in every output format as optional fields (`documents`): `browse` shows people the
names they know instead of paths.

Each value is text of at most `MAX_CHARS` characters (longer ones are cut: a tag is a name, not
a document); several values of one field are joined with "; ". A file whose tags cannot be read
(no tags, a format mutagen does not know, a damaged header) simply has none.
"""

from __future__ import annotations

from pathlib import Path

SONG_FIELDS = ("artist", "title", "album")
MAX_CHARS = 500
# each field's names per tag family: the easy/Vorbis/APE/MP4-easy key, ID3's frame, ASF's
_KEYS = {"artist": ("artist", "TPE1", "Author"),
         "title": ("title", "TIT2", "Title"),
         "album": ("album", "TALB", "WM/AlbumTitle")}


def read_song(path: Path) -> dict[str, str]:
    """{field: text} for the fields the file's tags have (none: {})."""
    import mutagen

    try:
        audio = mutagen.File(path, easy=True)
        tags = audio.tags if audio is not None else None
        if not tags:
            return {}
        song = {}
        for field, keys in _KEYS.items():
            if text := _value(tags, keys):
                song[field] = text
        return song
    except Exception:  # mutagen's errors, and whatever a damaged file makes it raise
        return {}


def _value(tags, keys: tuple[str, ...]) -> str:
    """The first of `keys` the tags hold, as one line of text (case-insensitive where the
    family's keys are: Vorbis comments, APEv2)."""
    present = {str(k).lower(): k for k in tags.keys()}
    for key in keys:
        actual = present.get(key.lower())
        if actual is None:
            continue
        raw = tags[actual]
        values = raw.text if hasattr(raw, "text") else raw  # an ID3 frame holds a list
        if not isinstance(values, list):
            values = [values]
        text = "; ".join(s for v in values if (s := str(v).replace("\0", " ").strip()))
        if text:
            return " ".join(text.split())[:MAX_CHARS]
    return ""


def song_of(doc: dict) -> dict[str, str]:
    """The song fields a document (or a row read back) has, non-empty ones only."""
    return {f: doc[f] for f in SONG_FIELDS if doc.get(f)}
