"""instag: recognise musical instruments in music libraries (Gururani et al., ISMIR 2019).

The Python API, beside the `instag` command line (loaded lazily: importing instag, or the
tagging API, never imports torch or TensorFlow)::

    from pathlib import Path

    import instag

    for result in instag.tag([Path.home() / "Music"], instag.TagOptions(bag=10)):
        print(result.path, result.status, result.instruments(), result.segments())

    # what `instag tag ~/Music --out tags.csv --summary summary.csv --write-tags` writes:
    instag.Run([Path.home() / "Music"], instag.TagOptions(), [instag.TagsFile("tags.csv"),
               instag.SummaryFile("summary.csv"), instag.FileTags()]).run()

- ``tag(paths, options, outputs=...)`` (a ``Run`` on this machine): iterate FileResults in
  walk order; ``Run(paths, options, outputs, engine="ray")`` the same on a Ray cluster; the
  outputs: ``TagsFile``, ``SummaryFile``, ``SegmentsFolder``, ``PlotFolder``, ``FileTags``.
- ``embed(paths, options)``: the same walk, each result carrying its uint8 VGGish
  ``features``.
- ``tag_on_ray(paths, options, address=..., previous=...)``: the same run on a Ray cluster
  (the ``ray`` extra), resuming from a previous Parquet output.
- ``Reporter``: subclass it and pass it to ``tag`` for progress as the run goes (each call
  gets the running ``RunCounts``: files counted once their features are in, audio embedded,
  the time left).
- ``read_documents(output)``: any output (CSV, JSON, JSONL, Parquet) back as one document
  per file, streamed, each checked against one schema (``checked_documents(output)``: all
  checked before the first is handed out); ``SegmentsWriter(folder, "jams"|"audacity"|"sv",
  root)``: a document's segments as a JAMS, Audacity or Sonic Visualiser file (called with
  each document).
- ``Embedder``: VGGish + PCA on waveforms or files in this process.
- ``instag.learning``: the paper's learning half (the ``train`` extra): ``load_openmic``,
  ``Recipe``, ``train_run``, ``export_run``; ``read_labels_csv``, ``labels_from_folders``,
  ``labels_from_rows`` (``Labels``), with ``teach(labels, out_dir, options, recipe)``: new
  instruments from your own weakly labelled songs, embedded by the same run as ``embed``.
- Errors: ``InstagError`` (a message naming the file, and a ``fix``) and its kinds, so that a
  caller can tell them apart: ``UsageError``, ``SetupError``, ``BusyError``, ``DataError``.

Type checkers and editors see the real types (``py.typed``; the names are imported for them
under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from instag.common import VERSION as __version__  # noqa: F401

if TYPE_CHECKING:  # what editors and type checkers see; at run time each loads on first use
    from instag import learning
    from instag.common.devices import Device
    from instag.common.errors import BusyError, DataError, InstagError, SetupError, UsageError
    from instag.common.locations import resolve_model
    from instag.common.status import Status
    from instag.engines.local.run import TagRun, TagSession, embed
    from instag.engines.ray.pipeline import RayRun, tag_on_ray
    from instag.features.embed import Embedder
    from instag.features.instances import Features
    from instag.features.resample import Resampler
    from instag.jobs.run import Run, tag
    from instag.outputs.exports import SegmentsWriter
    from instag.outputs.filetags import write_tags
    from instag.outputs.readback import checked_documents, read_documents
    from instag.outputs.sinks import FileTags, PlotFolder, SegmentsFolder, SummaryFile, TagsFile
    from instag.provision.teach import teach
    from instag.tagging.counts import RunCounts
    from instag.tagging.job import Reporter, score, tag_audio
    from instag.tagging.options import TagOptions
    from instag.tagging.results import FileResult
    from instag.tagging.tagwriting import TagWriting

# public name -> module that defines it
_API = {
    "tag": "instag.jobs.run",
    "Run": "instag.jobs.run",
    "TagsFile": "instag.outputs.sinks",
    "SummaryFile": "instag.outputs.sinks",
    "SegmentsFolder": "instag.outputs.sinks",
    "PlotFolder": "instag.outputs.sinks",
    "FileTags": "instag.outputs.sinks",
    "embed": "instag.engines.local.run",
    "TagOptions": "instag.tagging.options",
    "TagRun": "instag.engines.local.run",
    "TagSession": "instag.engines.local.run",
    "tag_on_ray": "instag.engines.ray.pipeline",
    "tag_audio": "instag.tagging.job",
    "score": "instag.tagging.job",
    "RayRun": "instag.engines.ray.pipeline",
    "Reporter": "instag.tagging.job",
    "RunCounts": "instag.tagging.counts",
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
    "UsageError": "instag.common.errors",
    "SetupError": "instag.common.errors",
    "BusyError": "instag.common.errors",
    "DataError": "instag.common.errors",
    "Embedder": "instag.features.embed",
    "Features": "instag.features.instances",
    "Resampler": "instag.features.resample",
    "teach": "instag.provision.teach",
}
# the learning names, now under instag.learning; here for one more release
_MOVED = ("load_openmic", "Recipe", "train_run", "export_run", "Labels", "read_labels_csv",
          "labels_from_folders", "labels_from_rows", "NEGATIVE_PREFIX")
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name == "learning":  # `import instag` then instag.learning.X, as for the names above
        return importlib.import_module("instag.learning")
    if name == "Summary":
        warnings.warn("instag.Summary is now instag.RunCounts", DeprecationWarning, stacklevel=2)
        name = "RunCounts"
    if name in _MOVED:
        warnings.warn(f"instag.{name} moved to instag.learning.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module("instag.learning"), name)
    if name not in _API:
        raise AttributeError(f"module 'instag' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
