"""onnxruntime sessions for instag's two networks (VGGish and the scoring model): providers for
--device, CUDA libraries from pip packages, and provider fallback kept quiet."""

from __future__ import annotations

from pathlib import Path

from instag.common.devices import Device, cuda_unavailable
from instag.common.quiet import native_stderr_silenced

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# TF32 matrix products (CUDA's default on Ampere and later) move probabilities by ~1e-4; this
# model is far too small for TF32 to pay, so keep full fp32.
PROVIDER_OPTIONS = {CUDA: {"use_tf32": "0"}}
# Whether the CUDA provider loaded, once a session has tried it in this process. A provider
# that cannot load (no GPU, no CUDA libraries) is dlopen'ed and dlclose'd by every session
# that asks for it: a process that makes many sessions (the beets plugin over an import, the
# tests) then races glibc's thread-local storage with every thread it starts ("Inconsistency
# detected by ld.so: dl-tls.c", the process ends with exit 127). Asked once, remembered.
_cuda_loads: list[bool] = []


def choose_providers(device: Device | str) -> list[str]:
    """Providers for --device: auto = CUDA when onnxruntime offers it, else CPU."""
    import onnxruntime as ort

    device = Device.parse(device)
    available = ort.get_available_providers()
    if device is Device.CPU:
        return [CPU]
    if device is Device.CUDA and CUDA not in available:
        raise cuda_unavailable("onnxruntime", f"its providers: {', '.join(available)}; "
                               "install onnxruntime-gpu")
    if device is Device.AUTO and _cuda_loads and not _cuda_loads[0]:
        return [CPU]  # tried in this process already, and it did not load
    return [CUDA, CPU] if CUDA in available else [CPU]


def preload_cuda_libraries(ort) -> None:
    """Let onnxruntime find CUDA/cuDNN in the nvidia-* pip packages (instag's `cuda` extra, or a
    CUDA build of torch), so no system-wide CUDA is needed (onnxruntime >= 1.21)."""
    import contextlib
    import importlib.util
    import io

    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it misses
            try:
                ort.preload_dlls()
            except Exception:
                pass  # then the session falls back to CPU and `provider` says so


def lean_options(opts, prepack: bool) -> None:
    """What keeps VGGish's memory to its weights and one call's working set, at the same speed
    (bench/memory.py: a run's peak 1140 -> under 600 MB): no memory pattern (it plans one
    block for every activation of a call, twice what the call needs at once), and unless
    `prepack`, no pre-packed copy of each weight matrix (weights stored beside the model are
    then used from the mapped file, shared and given back under pressure, never copied). INT8
    conv kernels want theirs packed (36 % slower without; FP32's run as fast either way)."""
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.enable_mem_pattern = False


def open_session(model: str | Path | bytes, providers: list[str], threads: int | None = None,
                 lean: bool = False, prepack: bool = False):
    """An onnxruntime session on the first of `providers` that loads. A CUDA provider that
    cannot load (no GPU, no CUDA libraries) logs to the process's stderr before onnxruntime falls
    back to CPU; that is kept off stderr here, and the session's providers say what was taken.
    `threads`: CPU threads for one call (default: onnxruntime's, one per core). `lean` (VGGish's
    sessions): weights used where they lie unless `prepack`, and no memory planned ahead
    (`lean_options`)."""
    import onnxruntime as ort

    if CUDA in providers:
        preload_cuda_libraries(ort)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # onnxruntime's threads spin between calls by default, burning the cores the decode
    # workers need: 500 one-second files went 63 -> 76 files/s without it, VGGish alone the
    # same (bench/short_files.py, bench/tag_throughput.py)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    if lean:
        lean_options(opts, prepack)
    with native_stderr_silenced():
        session = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), opts,
            providers=[(p, PROVIDER_OPTIONS.get(p, {})) for p in providers])
    if CUDA in providers and not _cuda_loads:
        _cuda_loads.append(CUDA in session.get_providers())
    return session
