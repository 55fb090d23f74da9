"""instag: recognise musical instruments in music libraries (Gururani et al., ISMIR 2019).

The Python API, beside the `instag` command line (loaded lazily: importing instag, or the
tagging API, never imports torch or TensorFlow)::

    import instag

    for result in instag.tag(["~/Music"], instag.TagOptions(bag_size=10)):
        print(result.path, result.status, result.instruments(), result.segments())

- ``tag(paths, options)``: iterate FileResults in walk order; ``embed(paths, options)``: the
  same run, each result carrying its uint8 VGGish ``features``.
- ``tag_on_ray(paths, options, address=..., previous=...)``: the same run on a Ray cluster
  (the ``ray`` extra), resuming from a previous Parquet output.
- ``Reporter``: subclass it and pass it to ``tag`` for progress as the run goes (each call
  gets the running ``Summary``: files counted once their features are in, audio embedded,
  the time left).
- ``read_documents(output)``: any output (CSV, JSON, JSONL, Parquet) back as one document
  per file, streamed, each checked against one schema (``checked_documents(output)``: all
  checked before the first is handed out); ``SegmentsWriter(folder, "jams"|"audacity"|"sv",
  root)``: a document's segments as a JAMS, Audacity or Sonic Visualiser file (called with
  each document).
- ``Embedder``: VGGish + PCA on waveforms or files in this process.
- ``load_openmic``, ``Recipe``, ``train_run``, ``export_run``: the paper's learning half
  (the ``train`` extra).
- ``read_labels_csv``, ``labels_from_folders``, ``labels_from_rows`` (``Labels``) and
  ``teach(labels, out_dir, options, recipe)``: new instruments from your own weakly labelled
  songs, embedded by the same run as ``embed`` (the ``train`` extra).
"""

from __future__ import annotations

import importlib
from typing import Any

from instag.common import VERSION as __version__  # noqa: F401

# public name -> module that defines it
_API = {
    "tag": "instag.engines.local.run",
    "embed": "instag.engines.local.run",
    "TagOptions": "instag.tagging.options",
    "TagRun": "instag.engines.local.run",
    "TagSession": "instag.engines.local.run",
    "tag_on_ray": "instag.engines.ray.pipeline",
    "tag_audio": "instag.tagging.job",
    "score": "instag.tagging.job",
    "RayRun": "instag.engines.ray.pipeline",
    "Reporter": "instag.tagging.job",
    "Summary": "instag.tagging.job",
    "FileResult": "instag.tagging.results",
    "TagWriting": "instag.tagging.tagwriting",
    "write_tags": "instag.outputs.filetags",
    "read_documents": "instag.outputs.readback",
    "checked_documents": "instag.outputs.readback",
    "SegmentsWriter": "instag.outputs.exports",
    "resolve_model": "instag.common.locations",
    "Status": "instag.common.status",
    "Device": "instag.common.devices",
    "InstagError": "instag.common.errors",
    "Embedder": "instag.features.embed",
    "Features": "instag.features.instances",
    "Resampler": "instag.features.resample",
    "load_openmic": "instag.learning.data",
    "Recipe": "instag.learning.train",
    "train_run": "instag.learning.train",
    "export_run": "instag.learning.export",
    "Labels": "instag.learning.labels",
    "read_labels_csv": "instag.learning.labels",
    "labels_from_folders": "instag.learning.labels",
    "labels_from_rows": "instag.learning.labels",
    "NEGATIVE_PREFIX": "instag.learning.labels",
    "teach": "instag.provision.teach",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'instag' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
