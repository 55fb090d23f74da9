"""Loading Google's VGGish with tensorflow_hub (``https://tfhub.dev/google/vggish/1`` by default,
or a local SavedModel), once per process, with TensorFlow's start-up chatter kept off stderr.

TensorFlow is the `setup` extra: it fetches VGGish and converts it to ONNX once
(``vggish_onnx``); a machine that only tags, with the converted model, does without it."""

from __future__ import annotations

import warnings
from pathlib import Path

from instag.common import locations
from instag.common.environment import environment
from instag.common.errors import InstagError
from instag.common.extras import installed, require
from instag.common.quiet import native_stderr_silenced


def load_vggish(handle: str):
    """The hub model for `handle` (callers keep it). tensorflow_hub is pointed at instag's hub
    cache for the load only; TensorFlow grows GPU memory on demand so that onnxruntime can share
    the card. Failures arrive as one InstagError that says how to provision VGGish."""
    local = Path(handle).expanduser()
    if not locations.is_url(handle) and not (local / "saved_model.pb").is_file():
        raise InstagError(f"{handle}: not a SavedModel folder (no saved_model.pb in it)",
                          "pass --vggish a folder holding VGGish's saved_model.pb, or a hub URL")
    try:
        # TensorFlow's C++ start-up lines (oneDNN, cudart, cpu_feature_guard) and
        # tensorflow_hub's pkg_resources warning are not the user's business: imported here,
        # inside the silence, never before it
        with environment(TFHUB_CACHE_DIR=str(locations.tfhub_cache_dir()),
                          TF_CPP_MIN_LOG_LEVEL="2"), \
                native_stderr_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf = require("tensorflow")
            hub = require("tensorflow_hub")

            for gpu in tf.config.list_physical_devices("GPU"):
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # already initialised by an earlier load in this process
                    pass
            # once fetched (under this name or a mirror's), from the hub cache: no request
            cached = locations.hub_cached(handle)
            return hub.load(str(cached) if cached else handle)
    except InstagError:
        raise
    except Exception as e:
        raise InstagError(
            f"cannot load VGGish from {handle} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
            "run `instag setup` once on a machine with internet (it fills the cache in "
            f"{locations.tfhub_cache_dir()}), or pass --vggish DIR with a local SavedModel",
        ) from e


def tensorflow_installed() -> bool:
    return installed("tensorflow") and installed("tensorflow_hub")
