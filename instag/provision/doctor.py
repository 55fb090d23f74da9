"""`instag doctor`: what instag would use on this machine, and whether `instag tag` can run."""

from __future__ import annotations

import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from instag.common import locations
from instag.common.devices import Device
from instag.common.downloads import file_digest
from instag.common.errors import InstagError
from instag.common.quiet import native_stderr_silenced
from instag.features import precision as at_precision
from instag.features import vggish_onnx
from instag.features.pca import load_pca
from instag.features.precision import Precision
from instag.features.vggish import load_vggish, tensorflow_installed
from instag.learning.data import OPENMIC_CLASSES
from instag.provision.int8 import decision_line
from instag.tagging.scoring import CUDA, ScoringModel

NEEDED_TO_TAG = ("numpy", "soundfile", "resampy", "soxr")
# torch trains and exports (the `train` extra); TensorFlow fetches and converts VGGish (`setup`)
OPTIONAL = ("instag", "typer", "torch", "tensorflow", "tensorflow-hub", "tf2onnx")


@dataclass(frozen=True)
class Check:
    section: str
    item: str
    value: str
    ok: bool | None = None  # None: information only
    blocks_tagging: bool = False  # a failed check that stops `instag tag`


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_usable(model: Path | None) -> tuple[bool | None, str]:
    """Whether onnxruntime really runs the scoring model on CUDA here (loading it is the only
    sure test: the provider can be compiled in and still miss its libraries)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime has no CUDA provider (pip install 'instag[cuda]')"
    if model is None:
        return None, "not checked: no scoring model to load"
    try:
        ScoringModel(model, Device.CUDA)
    except InstagError as e:
        return False, e.message
    return True, "yes"


def nvidia_gpu() -> bool:
    """Whether an NVIDIA driver is loaded here (a GPU the user may expect instag to use)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def _cuda(model: Path | None) -> Check:
    """CUDA's row: on a machine without an NVIDIA GPU whose CPU path works, that CUDA is not
    usable is information (tagging runs on the CPU), not a failure; with a GPU, it is one."""
    usable, why = cuda_usable(model)
    if usable is not False or (nvidia_gpu() and model is not None):
        return Check("runtime", "CUDA usable by onnxruntime", why, usable)
    where = "tagging runs on the CPU" if model is not None else "no scoring model to run"
    return Check("runtime", "CUDA usable by onnxruntime", f"no, {where} ({why})")


def _tf_gpus() -> str:
    if not tensorflow_installed():
        return "TensorFlow is not installed (the `setup` extra; tagging with a converted VGGish " \
               "does not need it)"
    try:
        with native_stderr_silenced():
            import tensorflow as tf

            return str(len(tf.config.list_physical_devices("GPU")))
    except Exception as e:
        return f"cannot import tensorflow ({e})"


def _converters() -> Check:
    """The TensorFlow and tf2onnx that convert VGGish: the pair the tests convert with?"""
    here = {name: _version(name) for name in vggish_onnx.TESTED_CONVERTERS}
    pair = " + ".join(f"{n} {v or 'not installed'}" for n, v in here.items())
    tested = " + ".join(f"{n} {v}" for n, v in vggish_onnx.TESTED_CONVERTERS.items())
    if not any(here.values()):
        return Check("versions", "VGGish converter", f"{pair} (only `instag setup` needs them)")
    if here == vggish_onnx.TESTED_CONVERTERS:
        return Check("versions", "VGGish converter", f"{pair}: the tested pair", True)
    return Check("versions", "VGGish converter", f"{pair}: not the tested pair ({tested}); "
                 "a conversion may fail or be refused: pip install 'instag[setup]'", False)


def _disk(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return f"{path} ({shutil.disk_usage(probe).free / 1e9:.1f} GB free)"


def _reduced(handle: str, precision: Precision) -> Check:
    """Whether this machine's setup kept the INT8 (or FP16) VGGish, with its parity figures,
    and how to make it the default once it did."""
    name = f"{precision.upper()} VGGish"
    if (doc := at_precision.figures(handle, precision)) is not None:
        default = locations.precision() == precision
        return Check("models", name, decision_line(doc, precision) + (
            "; the default here" if default else "; parity shown: make it the default with "
            f'"precision": "{precision}" in settings.json (the docs: guides/int8.md)'), True)
    if (doc := at_precision.refused(handle, precision)) is not None:
        return Check("models", name, decision_line(doc, precision))
    return Check("models", name, "not made (`instag setup --only-int8` makes and judges it" + (
        "" if precision is Precision.INT8 else ", on a machine with CUDA") +
        "); tagging runs VGGish in FP32")


def _vggish_runtime(handle: str) -> Check:
    path = vggish_onnx.find(handle)
    if path is None and not tensorflow_installed():
        return Check("models", "VGGish runtime", "none: not converted to ONNX here, and "
                     "TensorFlow (which converts it) is not installed; pip install "
                     "'instag[setup]' and run `instag setup`", False, blocks_tagging=True)
    if path is None:
        return Check("models", "VGGish runtime", "tensorflow for now: converted to ONNX on "
                     "first use or by `instag setup` (then tagging never imports TensorFlow)")
    parity = vggish_onnx.parity_of(path)
    checked = (f"; raw max |diff| {parity.raw_max_diff:.1e}, uint8 equal "
               f"{parity.uint8_equal:.2%} against the hub model") if parity else ""
    return Check("models", "VGGish runtime", f"onnxruntime: {path}{checked}")


def _one_line(e: Exception, fix: str) -> str:
    """An error as one row's text, with what to do."""
    if isinstance(e, InstagError):
        return f"{e.message} (fix: {e.fix or fix})"
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {first} (fix: {fix})"


def _vggish_loads(handle: str) -> Check:
    """VGGish loaded as tagging loads it (its ONNX conversion if kept, else the SavedModel on
    TensorFlow) and run on a second of silence: a folder with a junk saved_model.pb is
    present, but cannot tag."""
    import numpy as np

    item = "VGGish loads"
    path = vggish_onnx.find(handle)
    if path is None and not (locations.hub_cached(handle) and tensorflow_installed()):
        return Check("models", item, "not checked: no VGGish to load (above)")
    try:
        model = vggish_onnx.OnnxVggish(path, Device.CPU) if path else load_vggish(handle)
        out = np.asarray(model(np.zeros(16000, np.float32)))
        if out.ndim != 2 or out.shape[1] != 128:
            raise InstagError(f"it returned shape {out.shape}, not [N, 128]")
    except Exception as e:  # whatever a broken model raises: a row, never a traceback
        return Check("models", item, f"{handle}: " + _one_line(
            e, "run `instag setup --force` to fetch and convert VGGish again"), False,
            blocks_tagging=True)
    return Check("models", item, f"yes, on {'onnxruntime' if path else 'tensorflow'}", True)


def _cache_writable() -> Check:
    """The cache folder takes a file (tagging keeps its features there): a probe is written
    and removed."""
    folder = locations.cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".instag-doctor-"):
            pass
    except OSError as e:
        return Check("directories", "cache writable", f"{folder}: cannot write in it "
                     f"({e.strerror or e}) (fix: make it a writable folder, or set "
                     "INSTAG_CACHE_DIR)", False, blocks_tagging=True)
    return Check("directories", "cache writable", "yes", True)


def _pca(pca: str | None) -> Check:
    """The PCA file tagging would use: --pca, $INSTAG_PCA, setup's, or the official one."""
    try:
        given = locations.given_pca(pca)
        path = given or locations.cache_dir() / locations.PCA_FILE
        if not path.is_file():
            raise InstagError(f"{path}: no such PCA file" if given else "not downloaded",
                              "run `instag setup` (offline: `instag setup --offline --pca "
                              "FILE ...`), or pass --pca FILE")
        load_pca(path)
        official = file_digest(path, "md5") == locations.PCA_MD5
        kind = "official, md5 verified" if official else "not the official file"
        return Check("models", "PCA parameters", f"{path} ({kind})", True)
    except InstagError as e:
        return Check("models", "PCA parameters", _one_line(e, e.fix or "pass --pca FILE"), False,
                     blocks_tagging=True)


def _scoring_model(model: str | None) -> tuple[Check, Path | None]:
    try:
        path = locations.resolve_model(model)
        scorer = ScoringModel(path, Device.CPU)
    except InstagError as e:
        return Check("models", "scoring model", _one_line(e, "run `instag setup`"), False,
                     blocks_tagging=True), None
    vocabulary = "OpenMIC-2018's" if scorer.classes == OPENMIC_CLASSES else "a custom"
    return Check("models", "scoring model", f"{path} ({scorer.model_name}, "
                 f"{len(scorer.classes)} instruments: {vocabulary} vocabulary)", True), path


def diagnose(model: str | None = None, vggish: str | None = None,
             pca: str | None = None) -> list[Check]:
    checks = [Check("versions", "python", platform.python_version())]
    for name in OPTIONAL + NEEDED_TO_TAG:
        v = _version(name)
        missing = v is None and name in NEEDED_TO_TAG
        checks.append(Check("versions", name, v or "not installed", False if missing else None,
                            blocks_tagging=missing))
    ort_name = next((n for n in ("onnxruntime-gpu", "onnxruntime") if _version(n)), None)
    checks.append(Check("versions", ort_name or "onnxruntime",
                        _version(ort_name) if ort_name else "not installed",
                        None if ort_name else False, blocks_tagging=ort_name is None))
    import onnxruntime as ort
    import soundfile

    checks.append(Check("versions", "libsndfile", soundfile.__libsndfile_version__))
    checks.append(_converters())
    model_check, model_path = _scoring_model(model)
    checks.append(Check("runtime", "onnxruntime providers", ", ".join(
        ort.get_available_providers())))
    checks.append(_cuda(model_path))
    checks.append(Check("runtime", "GPUs TensorFlow sees", _tf_gpus()))
    ffmpeg = shutil.which("ffmpeg")
    checks.append(Check("runtime", "ffmpeg (m4a/aac, wma...)", ffmpeg or "not on PATH",
                        bool(ffmpeg)))
    checks.append(Check("directories", "cache", _disk(locations.cache_dir())))
    checks.append(_cache_writable())
    checks.append(Check("directories", "data", _disk(locations.data_dir())))
    checks.append(Check("directories", "hub cache", str(locations.tfhub_cache_dir())))
    data = locations.openmic_data()
    checks.append(Check("directories", "OpenMIC-2018 (instag train's default --openmic)",
                        str(data) if data else "not provisioned (instag setup, or --openmic)"))

    handle = locations.vggish_handle(vggish)
    local = locations.hub_cached(handle)
    checks.append(Check("models", "VGGish", f"{handle}: " + (f"present ({local})" if local else
                        "not downloaded (run `instag setup`)"), bool(local),
                        blocks_tagging=not local))
    checks.append(_vggish_runtime(handle))
    checks.append(_vggish_loads(handle))
    checks += [_reduced(handle, p) for p in (Precision.INT8, Precision.FP16)]
    checks.append(_pca(pca))
    checks.append(model_check)
    return checks
