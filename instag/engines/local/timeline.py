"""A tagged file's per-instance timeline, recomputed for `instag plot` from the cache's
features and the scoring model: outputs carry it only with `--timeline` (it is most of a JSON
document's size), so CSV, Parquet and compact JSON/JSONL documents are given it here.

The document's own bags are scored again (their spans say which instances), and the bag
probabilities must come out as the document has them: otherwise the model or the file is not
the one that made the document, and the timeline would be someone else's."""

from __future__ import annotations

import os
from pathlib import Path

from instag.common.errors import InstagError
from instag.engines.local.cache import Cache
from instag.features.instances import INSTANCE_SECONDS, Features
from instag.outputs.forms import bag_timeline
from instag.tagging.bags import Bag
from instag.tagging.identity import FileKey
from instag.tagging.options import TagOptions
from instag.tagging.results import audio_path
from instag.tagging.scoring import Scoring

TOLERANCE = 6e-4  # outputs round probabilities to 4 decimals (CSV) or keep them (Parquet)


MOVED_FIX = "pass --audio with the file's current path"


def with_timeline(doc: dict, opts: TagOptions, audio: Path | None = None,
                  moved_fix: str = MOVED_FIX) -> dict:
    """`doc` (an `outputs.readback` document of a tagged file) with every bag's timeline;
    one that has them is returned as it is. `audio`: where the file is now (moved or copied
    since: its features are cached under the path it was tagged at, and found there while
    it is the same size). `moved_fix`: what the caller's user does about a file not found."""
    if all("timeline" in b for b in doc["bags"]):
        return doc
    path = audio or audio_path(doc["path"])
    how = "tag it with --timeline (a .json or .jsonl output), or pass the run's --cache"
    try:
        key = FileKey.of(path)
    except OSError as e:
        raise InstagError(f"{path}: cannot read it for its timeline ({e.strerror or e})",
                          moved_fix) from None
    size, mtime = doc.get("size"), doc.get("mtime_ns")
    if audio is not None and key.size == size and isinstance(mtime, int):
        key = FileKey(os.fsencode(audio_path(doc["path"]).resolve()), size, mtime)
    config = opts.resolve()
    embedder = config.compute.embedder()
    cache_path = config.local.cache
    if not cache_path.exists():
        raise InstagError(f"{path}: the output has no attention timeline and there is no cache "
                          f"at {cache_path} to recompute it from", how)
    cache = Cache(cache_path)
    try:
        cached = cache.get_features(key, embedder.identity)
    finally:
        cache.close()
    if cached is None or cached.feats is None:
        raise InstagError(f"{path}: the output has no attention timeline, and the cache "
                          f"({cache_path}) holds no features of the file as it is now", how)
    scoring = Scoring(config.compute)
    feats = Features(cached.feats, cached.duration)
    bags = [Bag(round(b["start_s"] / INSTANCE_SECONDS), round(b["end_s"] / INSTANCE_SECONDS))
            for b in doc["bags"]]
    if not bags or bags[-1].stop > len(feats.values):
        raise InstagError(f"{path}: the cached features are shorter than the output's bags: the "
                          "file changed since it was tagged", "tag it again with --timeline")
    (result,) = scoring.score_many([(path, feats, bags)])
    for mine, theirs in zip(result.bags, doc["bags"], strict=True):
        drift = max(abs(p - theirs["probabilities"].get(c, -1.0))
                    for c, p in mine.probabilities.items())
        if drift > TOLERANCE:
            raise InstagError(f"{path}: the scoring model ({scoring.scorer.path}) gives other "
                              f"probabilities than the output has (by {drift:.3f}): it is not "
                              "the model that tagged the file, or the file changed",
                              "pass --model with the model the run used, or tag the file "
                              "again with --timeline")
    return {**doc, "bags": [{**theirs, "timeline": bag_timeline(mine)}
                            for mine, theirs in zip(result.bags, doc["bags"], strict=True)]}
