"""The paper's learning half: OpenMIC-2018 data, the models (with their inference helpers), the
training recipe, run directories, metrics, reports, and export to the ONNX file tagging loads.
Needs torch and scikit-learn (the `train` extra); never imports the tagging path.

Its public names load on first use, so that ``import instag.learning`` costs nothing::

    from instag.learning import Recipe, load_openmic, train_run, export_run
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instag.learning.data import load_openmic
    from instag.learning.export import export_run
    from instag.learning.labels import (
        NEGATIVE_PREFIX,
        Labels,
        labels_from_folders,
        labels_from_rows,
        read_labels_csv,
    )
    from instag.learning.train import Recipe, train_run

_API = {
    "load_openmic": "instag.learning.data",
    "Recipe": "instag.learning.train",
    "train_run": "instag.learning.train",
    "export_run": "instag.learning.export",
    "Labels": "instag.learning.labels",
    "read_labels_csv": "instag.learning.labels",
    "labels_from_folders": "instag.learning.labels",
    "labels_from_rows": "instag.learning.labels",
    "NEGATIVE_PREFIX": "instag.learning.labels",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'instag.learning' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
