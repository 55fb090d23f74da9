"""Where instag keeps things, and which VGGish, PCA file and scoring model a run uses.

Caches (VGGish hub model, PCA parameters, the tagging cache) go in the user cache directory,
installed models in the user data directory (platformdirs), both movable by environment:
``INSTAG_CACHE_DIR``, ``INSTAG_DATA_DIR``. tensorflow_hub's own cache defaults to /tmp, which cron
hosts clean, so instag points it at ``<cache>/tfhub`` unless the user set ``TFHUB_CACHE_DIR``.

Every choice follows one order: the option, else its environment variable, else what
``instag setup`` installed or was given (remembered in ``<data>/settings.json``), else the
official source. Tagging and provisioning both resolve here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from instag.common.atomic import atomic_write
from instag.common.downloads import download
from instag.common.errors import InstagError, SetupError
from instag.common.guard.inputs import SETTINGS, read_text

APP = "instag"
DEFAULT_VGGISH = "https://tfhub.dev/google/vggish/1"
# The same model under the name Kaggle Models gives it: tfhub.dev now redirects there, and
# either host may refuse (403s from tfhub.dev have been reported); setup falls back from one
# to the other, and a model fetched under either name serves both.
KAGGLE_VGGISH = "https://www.kaggle.com/models/google/vggish/tensorFlow2/vggish/1"
VGGISH_MIRRORS = (DEFAULT_VGGISH, KAGGLE_VGGISH)
PCA_URL = "https://storage.googleapis.com/audioset/vggish_pca_params.npz"
PCA_MD5 = "c80cae691033abe7c7ecd11ea39fc834"
PCA_FILE = "vggish_pca_params.npz"
INSTALLED_MODEL = "instag-att.onnx"
SETTINGS_FILE = "settings.json"


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("INSTAG_CACHE_DIR") or user_cache_dir(APP)).expanduser()


def data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("INSTAG_DATA_DIR") or user_data_dir(APP)).expanduser()


def tfhub_cache_dir() -> Path:
    """The hub cache: $TFHUB_CACHE_DIR, else ``<cache>/tfhub``. Only VGGish loading hands it
    to tensorflow_hub; asking changes nothing."""
    return Path(os.environ.get("TFHUB_CACHE_DIR") or cache_dir() / "tfhub")


# what settings.json may hold: each a non-empty string (a path, a handle, a precision)
SETTINGS_KEYS = ("vggish", "pca", "openmic", "precision")
SETTINGS_FIX = ("correct it or remove the file (`instag setup` writes it again); each of "
                + ", ".join(SETTINGS_KEYS) + " is a string")


def settings() -> dict:
    """What `instag setup` remembered (the VGGish, PCA and OpenMIC folder it used): a regular
    file of bounded size (`guard.inputs`), a JSON object whose every known value is checked
    (a user may edit it), or one InstagError naming the key."""
    path = data_dir() / SETTINGS_FILE
    if not os.path.lexists(path):
        return {}
    text = read_text(path, "", SETTINGS)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InstagError(f"{path}: not JSON ({str(e)[:200]})", SETTINGS_FIX) from None
    if not isinstance(doc, dict):
        raise InstagError(f"{path}: not a JSON object", SETTINGS_FIX)
    for key in SETTINGS_KEYS:
        if key in doc and not (isinstance(doc[key], str) and doc[key]):
            raise InstagError(f"{path}: key {key!r}: {json.dumps(doc[key])[:60]} is not a "
                              "non-empty string", SETTINGS_FIX)
    return doc


def openmic_data() -> Path | None:
    """The OpenMIC-2018 folder setup last used (extracted or given), if it is still there."""
    folder = settings().get("openmic")
    return Path(folder) if folder and Path(folder).is_dir() else None


def remember(**values: str) -> None:
    with atomic_write(data_dir() / SETTINGS_FILE) as f:
        json.dump({**settings(), **values}, f, indent=2)


def is_url(handle: str) -> bool:
    return "://" in handle


def vggish_handle(option: str | None = None) -> str:
    """--vggish, else $INSTAG_VGGISH, else the one setup remembered, else the official URL."""
    return (option or os.environ.get("INSTAG_VGGISH") or settings().get("vggish")
            or DEFAULT_VGGISH)


def precision(option: str | None = None) -> str:
    """--precision, else $INSTAG_PRECISION, else `precision` in settings.json (a user whose
    setup kept the INT8 VGGish may make it the default there), else fp32."""
    return option or os.environ.get("INSTAG_PRECISION") or settings().get("precision") or "fp32"


def given_pca(option: str | Path | None = None) -> Path | None:
    """--pca, else $INSTAG_PCA, else the one setup remembered; None: the official file."""
    given = option or os.environ.get("INSTAG_PCA") or settings().get("pca")
    return Path(given).expanduser() if given else None


def mirrors(handle: str) -> tuple[str, ...]:
    """The names `handle` goes by, itself first: both hosts' for the official VGGish."""
    return (handle, *(m for m in VGGISH_MIRRORS if m != handle)) if handle in VGGISH_MIRRORS \
        else (handle,)


def fetched_as(handle: str) -> str:
    """The name under which `handle`'s model is in the hub cache (a mirror's, when it was
    fetched from the other host), else `handle`."""
    return next((m for m in mirrors(handle) if _in_hub_cache(m)), handle)


def _in_hub_cache(handle: str) -> Path | None:
    cached = tfhub_cache_dir() / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return cached if (cached / "saved_model.pb").is_file() else None


def hub_cached(handle: str) -> Path | None:
    """The local SavedModel for a VGGish handle, if it is a directory or already in the hub
    cache under any of its names (tensorflow_hub names cache folders by the sha1 of the
    handle)."""
    local = Path(handle).expanduser()
    if local.is_dir():
        return local if (local / "saved_model.pb").is_file() else None
    return _in_hub_cache(fetched_as(handle))


def pca_params(path_or_none: str | Path | None = None, url: str = PCA_URL,
               md5: str = PCA_MD5) -> Path:
    """The VGGish PCA file: one given (`given_pca`), else the cached official file (fetched and
    checksum-verified once)."""
    path = given_pca(path_or_none)
    if path is not None:
        if not path.is_file():
            raise InstagError(f"{path}: no such PCA file", "pass vggish_pca_params.npz or omit "
                              "--pca to use the official one")
        return path
    cached = cache_dir() / PCA_FILE
    if cached.is_file():
        return cached
    try:
        return download(url, cached, md5)
    except InstagError as e:
        raise SetupError(f"no VGGish PCA parameters in {cache_dir()}: {e.message}",
                          "run `instag setup` once on a machine with internet, or pass "
                          "--pca FILE") from e


def installed_model() -> Path:
    """Where `instag setup` installs the scoring model (its model card beside it)."""
    return data_dir() / "models" / INSTALLED_MODEL


def resolve_model(option: str | Path | None = None) -> Path:
    """--model, else $INSTAG_MODEL, else the model `instag setup` installed, else a clear error."""
    given = option or os.environ.get("INSTAG_MODEL")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InstagError(f"{path}: no such model file",
                              "pass an .onnx from `instag export-onnx`, or run `instag setup`")
        return path
    if installed_model().is_file():
        return installed_model()
    raise SetupError("no trained model", "run `instag setup` (downloads 2.6 GB, trains in "
                     "minutes; offline: `instag setup --offline --vggish DIR --pca FILE "
                     "--openmic PATH`), or pass --model")
