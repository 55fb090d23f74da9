"""Optional parts of instag (pip extras): importing one that is not installed says which extra
brings it, in one line, instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from instag.common.errors import SetupError

# module -> (pip extra, what needs it)
EXTRAS = {
    "torch": ("train", "training, evaluating and exporting models"),
    "sklearn": ("train", "the random forest baseline and the paper's metrics"),
    "joblib": ("train", "loading an old random forest run (model.joblib)"),
    "skops.io": ("train", "saving and loading the random forest baseline"),
    "onnx": ("train", "exporting models to ONNX"),
    "tqdm": ("train", "training progress"),
    "matplotlib": ("plot", "drawing figures"),
    "tensorflow": ("setup", "loading VGGish from its SavedModel (to convert it to ONNX)"),
    "tensorflow_hub": ("setup", "fetching VGGish from tfhub.dev"),
    "tf2onnx": ("setup", "converting VGGish to ONNX"),
    "pyarrow": ("parquet", "Parquet output"),
    "ray": ("ray", "--engine ray"),
    "jams": ("jams", "writing segments as JAMS files"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (TensorFlow takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


class MissingExtra(SetupError):
    """A module of an extra that is not installed: the fix is its pip command, whatever else
    is missing."""


def require(module: str) -> ModuleType:
    """Import `module`, or raise an InstagError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra, purpose = EXTRAS[module.split(".")[0]]
        raise MissingExtra(f"{module.split('.')[0]} is not installed; {purpose} needs it",
                           f"pip install 'instag[{extra}]'") from e
