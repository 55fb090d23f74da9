"""Stand-ins for what cannot be downloaded offline: a VGGish SavedModel and a PCA file.

The stand-in SavedModel has the hub model's exact call signature (1-D float32 16 kHz waveform in,
[N, 128] float32 out, one row per 0.96 s window) and VGGish's front end (25 ms / 10 ms STFT,
64 mel bands 125-7500 Hz, log offset 0.01, 96x64 patches). ``architecture="vggish"`` adds the
real VGGish network (6 conv layers, 3 fully connected, 72 M parameters) with random weights, so
benchmarks spend the same FLOPs as the real model; ``"tiny"`` is one small layer for fast tests;
``"small"`` two convs and a dense layer that INT8 quantises at parity, ``"fragile"`` the same
with one tensor INT8 cannot hold, ``"brittle"`` with such a tensor after every layer (for the
INT8 tests).
Everything here is for tests and benchmarks; instag's own code never loads it implicitly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 16000
WINDOW, HOP, FFT = 400, 160, 512
MEL_BANDS, MEL_LO, MEL_HI, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
PATCH_FRAMES = 96


def log_mel_patches(waveform):
    """VGGish's input: [N, 96, 64] log-mel patches of a 16 kHz waveform (TensorFlow ops)."""
    import tensorflow as tf

    stft = tf.signal.stft(waveform, frame_length=WINDOW, frame_step=HOP, fft_length=FFT)
    mel = tf.signal.linear_to_mel_weight_matrix(MEL_BANDS, FFT // 2 + 1, SR, MEL_LO, MEL_HI)
    log_mel = tf.math.log(tf.matmul(tf.abs(stft), mel) + LOG_OFFSET)
    return tf.signal.frame(log_mel, PATCH_FRAMES, PATCH_FRAMES, axis=0)


def _vggish_layers(rng, tf):
    convs, in_ch = [], 1
    for out_ch, pool in ((64, True), (128, True), (256, False), (256, True), (512, False),
                         (512, True)):
        w = rng.normal(0, np.sqrt(2.0 / (9 * in_ch)), (3, 3, in_ch, out_ch)).astype(np.float32)
        convs.append((tf.Variable(w), tf.Variable(np.zeros(out_ch, np.float32)), pool))
        in_ch = out_ch
    dense, in_dim = [], 6 * 4 * 512
    for out_dim in (4096, 4096, 128):
        w = rng.normal(0, np.sqrt(1.0 / in_dim), (in_dim, out_dim)).astype(np.float32)
        dense.append((tf.Variable(w), tf.Variable(np.zeros(out_dim, np.float32))))
        in_dim = out_dim
    return convs, dense


# the small architectures, and which of their two convs have a channel INT8 cannot hold
OUTLIERS = {"small": (), "fragile": (1,), "brittle": (0, 1)}


def _small_layers(rng, tf, outliers: tuple[int, ...]):
    """Two 8-channel convs and a dense layer, outputs small: INT8 keeps its features. With
    `outliers`, those convs' last channel is a constant 1000 that the next layer ignores
    (weights 0): FP32 does not see it, but INT8 quantising that tensor over [0, 1000] loses
    the rest."""
    convs, in_ch = [], 1
    for i in range(2):
        w = rng.normal(0, np.sqrt(2.0 / (9 * in_ch)), (3, 3, in_ch, 8)).astype(np.float32)
        b = np.zeros(8, np.float32)
        if i in outliers:
            w[..., 7], b[7] = 0.0, 1000.0
        if i - 1 in outliers:
            w[:, :, 7, :] = 0.0  # the constant channel of the conv before is ignored
        convs.append((tf.Variable(w), tf.Variable(b), True))
        in_ch = 8
    w = rng.normal(0, 0.05 / np.sqrt(24 * 16 * 8), (24 * 16 * 8, 128)).astype(np.float32)
    if 1 in outliers:
        w[7::8] = 0.0  # flattened [24, 16, 8]: every 8th row is the constant channel
    return convs, [(tf.Variable(w), tf.Variable(np.zeros(128, np.float32)))]


def build_standin_vggish(path: str | Path, architecture: str = "tiny", seed: int = 0) -> Path:
    """Write a SavedModel at `path` that `tensorflow_hub.load` accepts like the VGGish model."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class StandIn(tf.Module):
        def __init__(self):
            super().__init__()
            if architecture == "vggish":
                self.convs, self.dense = _vggish_layers(rng, tf)
            elif architecture in OUTLIERS:
                self.convs, self.dense = _small_layers(rng, tf, OUTLIERS[architecture])
            elif architecture == "tiny":
                self.convs, self.dense = [], [(
                    tf.Variable(rng.normal(0, 0.05, (MEL_BANDS, 128)).astype(np.float32)),
                    tf.Variable(rng.normal(0.5, 0.2, 128).astype(np.float32)),
                )]
            else:
                raise ValueError(f"architecture {architecture!r}: use tiny, small, fragile, "
                                 "brittle or vggish")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, waveform):
            x = log_mel_patches(waveform)
            if not self.convs:  # tiny: mean log-mel of each patch through one layer
                w, b = self.dense[0]
                return tf.matmul(tf.reduce_mean(x, axis=1), w) + b
            x = x[..., None]
            for w, b, pool in self.convs:
                x = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME") + b)
                if pool:
                    x = tf.nn.max_pool2d(x, 2, 2, "SAME")
            x = tf.reshape(x, [tf.shape(x)[0], -1])
            for i, (w, b) in enumerate(self.dense):
                x = tf.matmul(x, w) + b
                if i < len(self.dense) - 1:
                    x = tf.nn.relu(x)
            return x  # like the hub model: no final ReLU

    path = Path(path)
    tf.saved_model.save(StandIn(), str(path))
    return path


def write_standin_pca(path: str | Path, seed: int = 0) -> Path:
    """A vggish_pca_params.npz-shaped file: orthonormal eigenvectors and small means."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    np.savez(path, pca_eigen_vectors=q.astype(np.float64), pca_means=rng.normal(0, 0.1, (128, 1)))
    return Path(path)


# -- the committed stand-ins: what the fast tier tags with, without TensorFlow or torch ----------
COMMITTED = Path(__file__).parent / "golden" / "standins"
VGGISH_DIR, VGGISH_ONNX, PCA_FILE, SCORING = ("vggish-tiny", "vggish-tiny.onnx",
                                              "vggish_pca_params.npz", "att.onnx")


def write_committed_standins(folder: Path) -> Path:
    """Make every committed stand-in in `folder`, as the tests' session fixtures used to each
    time: the tiny VGGish SavedModel and its ONNX form (converted and parity-checked by instag's
    own `vggish_onnx.convert`, with its parity record), the PCA file, and a scoring model
    trained briefly on random data (`att`, classes c0-c2) and exported to ONNX. Needs
    TensorFlow, tf2onnx and torch (the `setup` extra)."""
    import shutil
    import tempfile

    from builders import random_openmic

    from instag.features import vggish_onnx
    from instag.features.pca import load_pca
    from instag.learning.data import load_openmic
    from instag.learning.export import export_run
    from instag.learning.train import Recipe, train_run

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pca = write_standin_pca(folder / PCA_FILE)
    with tempfile.TemporaryDirectory() as work:  # no path of this checkout in what is kept
        work = Path(work)
        saved = build_standin_vggish(work / VGGISH_DIR, "tiny")
        onnx, _ = vggish_onnx.convert(str(saved), *load_pca(pca))
        shutil.rmtree(folder / VGGISH_DIR, ignore_errors=True)
        shutil.copytree(saved, folder / VGGISH_DIR)
        shutil.copyfile(onnx, folder / VGGISH_ONNX)
        shutil.copyfile(onnx.with_suffix(".json"), (folder / VGGISH_ONNX).with_suffix(".json"))
        data = load_openmic(random_openmic(work / "data", n=80))
        train_run(data, Recipe(epochs=2, batch_size=16, device="cpu"), work / "run", False)
        export_run(work / "run", folder / SCORING)
    return folder


def install_committed_vggish(dest: Path, folder: Path = COMMITTED) -> Path:
    """The committed tiny VGGish copied to `dest`, and its committed ONNX form put where instag
    looks for the conversion of that SavedModel (the hub cache's onnx/ folder, named by the
    handle and the SavedModel's digest): a run with it never imports TensorFlow."""
    import shutil

    from instag.features import vggish_onnx

    shutil.copytree(folder / VGGISH_DIR, dest)
    target = vggish_onnx.converted_path(str(dest))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / VGGISH_ONNX, target)
    shutil.copyfile((folder / VGGISH_ONNX).with_suffix(".json"), target.with_suffix(".json"))
    return dest
