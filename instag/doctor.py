"""`instag doctor`: what instag would use on this machine, and whether `instag tag` can run."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from instag import assets
from instag.errors import InstagError

NEEDED_TO_TAG = ("numpy", "tensorflow", "tensorflow-hub", "soundfile", "resampy", "soxr")
OPTIONAL = ("instag", "torch", "typer")  # torch trains and exports; tagging runs without it


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


def _cuda_usable() -> tuple[bool, str]:
    """Whether onnxruntime can really run on CUDA here: a one-node model is loaded with it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from instag.runtime import CUDA, preload_cuda_libraries

    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime has no CUDA provider"
    preload_cuda_libraries(ort)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[CUDA])
        ok = sess.get_providers()[0] == CUDA
    except Exception as e:
        return False, f"CUDA provider failed to load ({str(e).splitlines()[0][:120]})"
    finally:
        ort.set_default_logger_severity(2)
    return ok, "yes" if ok else "no GPU or CUDA/cuDNN libraries missing"


def _tf_gpus() -> str:
    from instag.quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():
            import tensorflow as tf

            return str(len(tf.config.list_physical_devices("GPU")))
    except Exception as e:
        return f"cannot import tensorflow ({e})"


def _disk(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return f"{path} ({shutil.disk_usage(probe).free / 1e9:.1f} GB free)"


def diagnose(model: str | None = None, vggish: str | None = None,
             pca: str | None = None) -> list[Check]:
    from instag.embed import vggish_handle

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
    checks.append(Check("runtime", "onnxruntime providers", ", ".join(
        ort.get_available_providers())))
    cuda, why = _cuda_usable()
    checks.append(Check("runtime", "CUDA usable by onnxruntime", why, cuda))
    checks.append(Check("runtime", "GPUs TensorFlow sees", _tf_gpus()))
    ffmpeg = shutil.which("ffmpeg")
    checks.append(Check("runtime", "ffmpeg (m4a/aac, wma...)", ffmpeg or "not on PATH",
                        bool(ffmpeg)))
    checks.append(Check("directories", "cache", _disk(assets.cache_dir())))
    checks.append(Check("directories", "data", _disk(assets.data_dir())))
    checks.append(Check("directories", "hub cache", str(assets.tfhub_cache_dir())))

    handle = vggish_handle(vggish)
    local = assets.hub_cached(handle)
    checks.append(Check("models", "VGGish", f"{handle}: " + (f"present ({local})" if local else
                        "not downloaded (run `instag setup`)"), bool(local),
                        blocks_tagging=not local))
    try:
        pca_path = Path(pca) if pca else None
        cached = assets.cache_dir() / assets.PCA_FILE
        path = assets.pca_params(pca_path) if pca_path else (cached if cached.is_file() else None)
        if path is None:
            raise InstagError("not downloaded (run `instag setup` or pass --pca)")
        official = assets.file_digest(path, "md5") == assets.PCA_MD5
        kind = "official, md5 verified" if official else "not the official file"
        checks.append(Check("models", "PCA parameters", f"{path} ({kind})", True))
    except InstagError as e:
        checks.append(Check("models", "PCA parameters", str(e), False, blocks_tagging=True))
    try:
        from instag.data import OPENMIC_CLASSES
        from instag.runtime import Scorer

        path = assets.resolve_model(model)
        scorer = Scorer(path, "cpu")
        vocabulary = "OpenMIC-2018's" if scorer.classes == OPENMIC_CLASSES else "a custom"
        checks.append(Check("models", "scoring model", f"{path} ({scorer.model_name}, "
                            f"{len(scorer.classes)} instruments: {vocabulary} vocabulary)", True))
    except InstagError as e:
        checks.append(Check("models", "scoring model", str(e), False, blocks_tagging=True))
    return checks
