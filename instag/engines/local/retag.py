"""`instag write-tags`: a finished run's tags written into its files, each only while it holds
the audio that was tagged (the local engine's cache remembers instag's own rewrites)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from instag.engines.local.cache import Cache, lock
from instag.outputs.filetags import Outcome, TagChange, failed, wanted, write_tags
from instag.tagging.identity import FileKey
from instag.tagging.results import audio_path
from instag.tagging.tagwriting import TagWriting

CHANGED_SINCE_TAGGED = "changed since it was tagged (re-run instag tag)"


def retag(docs: Iterator[dict], writing: TagWriting, remove: bool, cache_path: Path,
          wait: bool = False, within: Sequence[Path] = ()) -> Iterator[tuple[Path, TagChange]]:
    """`instag write-tags`: write (or with `remove`, take out) the tags of a finished run's
    files, from its JSON documents. A file is written only while it holds the audio that was
    tagged: the size and mtime the document recorded, or what instag's own tag writes made of
    them since (the cache remembers those). Holds the cache's lock and moves each rewritten
    file's cache entry along, so that the next run does not decode it again."""
    with lock(cache_path, wait) as held:
        cache = Cache(cache_path, held)
        try:
            for doc in docs:
                if doc.get("status") != "ok":
                    continue
                path = audio_path(doc["path"])
                yield path, _retag_one(path, doc, writing, remove, cache, within)
        finally:
            cache.close()


def _retag_one(path: Path, doc: dict, writing: TagWriting, remove: bool, cache: Cache,
               within: Sequence[Path]) -> TagChange:
    try:
        now = FileKey.of(path)
    except OSError as e:
        return failed(e.strerror or str(e))
    if "size" not in doc or "mtime_ns" not in doc:
        return failed("the document records no size and mtime (re-run instag tag)")
    tagged = FileKey(now.path, doc["size"], doc["mtime_ns"])
    if now != tagged and not cache.same_audio(tagged, now):
        return failed(CHANGED_SINCE_TAGGED)
    best = {c: max(b["probabilities"][c] for b in doc["bags"])
            for c in (doc["bags"][0]["probabilities"] if doc["bags"] else {})}
    change = write_tags(path, None if remove else wanted(doc["instruments"], best, writing),
                        writing, expect=now, within=within)
    if change.outcome is Outcome.WRITTEN:
        cache.rekey(now, FileKey.of(path))
    return change
