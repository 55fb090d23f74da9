"""VGGish on onnxruntime: converted once, kept only if it reproduces the hub model, and then a
tagging run needs no TensorFlow."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from instag.features import vggish_onnx
from instag.features.embed import Embedder


@pytest.fixture
def fresh_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))


def test_first_use_converts_and_then_runs_on_onnxruntime(fresh_hub, standin_vggish, standin_pca):
    notes = []
    embedder = Embedder(str(standin_vggish), standin_pca, note=notes.append)
    assert vggish_onnx.find(str(standin_vggish)) is None
    embedder.embed_blocks([np.zeros(16000 * 2, np.float32)])
    assert embedder.runtime.startswith("onnxruntime") and "converted to ONNX" in notes[0]
    path = vggish_onnx.find(str(standin_vggish))
    parity = vggish_onnx.parity_of(path)
    assert parity.raw_max_diff <= 1e-4 and parity.uint8_equal >= 0.999


def test_a_converter_that_fails_leaves_vggish_on_tensorflow(fresh_hub, standin_vggish,
                                                            standin_pca, monkeypatch):
    import tf2onnx.tfonnx

    def broken(*args, **kwargs):
        raise ValueError("unsupported op: SomethingNew")

    monkeypatch.setattr(tf2onnx.tfonnx, "process_tf_graph", broken)
    notes = []
    embedder = Embedder(str(standin_vggish), standin_pca, note=notes.append)
    embedder.embed_blocks([np.zeros(16000 * 2, np.float32)])
    assert embedder.runtime == "tensorflow"
    assert notes == ["VGGish stays on TensorFlow: tf2onnx could not convert VGGish "
                     "(ValueError: unsupported op: SomethingNew)"]
    assert vggish_onnx.find(str(standin_vggish)) is None
    again = []
    Embedder(str(standin_vggish), standin_pca, note=again.append).model  # noqa: B018
    assert again[0].startswith("VGGish stays on TensorFlow: tf2onnx could not convert")
    assert "setup --force" in again[0]  # not tried again on every run


def test_a_conversion_that_does_not_reproduce_the_hub_model_is_refused(
        fresh_hub, standin_vggish, standin_pca, monkeypatch):
    real = vggish_onnx.OnnxVggish.__call__
    monkeypatch.setattr(vggish_onnx.OnnxVggish, "__call__",
                        lambda self, wave: real(self, wave) + 0.05)  # a subtly wrong graph
    notes = []
    embedder = Embedder(str(standin_vggish), standin_pca, note=notes.append)
    embedder.embed_blocks([np.zeros(16000 * 2, np.float32)])
    assert embedder.runtime == "tensorflow" and "does not reproduce the hub model" in notes[0]
    assert vggish_onnx.find(str(standin_vggish)) is None


def test_the_real_architecture_converts_within_parity_its_copies_collected_as_it_goes(
        fresh_hub, tmp_path, standin_pca, collections):
    from standins import build_standin_vggish

    vggish = build_standin_vggish(tmp_path / "vggish", "vggish")
    from instag.features.pca import load_pca

    path, parity = vggish_onnx.convert(str(vggish), *load_pca(standin_pca))
    assert path.is_file() and parity.passed
    assert json.loads(path.with_suffix(".json").read_text())["raw_max_diff"] <= 1e-4
    assert len(collections) > 20  # before each of tf2onnx's passes: 288 MB of weights


def test_a_small_model_converts_without_collecting_cycles(fresh_hub, tmp_path, standin_pca,
                                                          collections):
    """A collection takes ~0.3 s where TensorFlow is loaded; a model of a few MB has no
    copies worth it (26 of them were 97 % of its conversion)."""
    from standins import build_standin_vggish

    from instag.features.pca import load_pca

    small = build_standin_vggish(tmp_path / "small", "small")
    _, parity = vggish_onnx.convert(str(small), *load_pca(standin_pca))
    assert parity.passed and collections == []


@pytest.fixture
def collections(monkeypatch):
    """The cycle collections the conversion asks for."""
    import gc

    from instag.features import tfconversion

    asked = []
    monkeypatch.setattr(tfconversion, "gc", type("gc", (), {
        "collect": staticmethod(lambda: asked.append(1) or gc.collect())}))
    return asked


def test_the_conversion_is_checked_from_its_file_with_the_parts_runs_use(
        fresh_hub, standin_vggish, standin_pca, monkeypatch):
    """Not from a copy in memory: the check's sessions map their weights from the file, and a
    whole copy of VGGish cut in memory cost gigabytes on top of the conversion's own."""
    built = []
    real = vggish_onnx.OnnxVggish.__init__

    def spy(self, model, *args, **kwargs):
        built.append((type(model), isinstance(model, Path) and model.is_file()))
        real(self, model, *args, **kwargs)

    monkeypatch.setattr(vggish_onnx.OnnxVggish, "__init__", spy)
    from instag.features.pca import load_pca

    path, parity = vggish_onnx.convert(str(standin_vggish), *load_pca(standin_pca))
    assert parity.passed and built and all(kind is not bytes and on_disk
                                           for kind, on_disk in built)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".instag.")) == []


def test_the_conversion_makes_the_graph_from_function_makes_without_grappler_holding_weights(
        fresh_hub, tmp_path, monkeypatch):
    """The weights wait outside TensorFlow's graph optimiser (on VGGish it held them some
    sixteen times over), and the ONNX graph is the one tf2onnx's from_function makes: the same
    operators, the same weights, the same outputs."""
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper
    from standins import build_standin_vggish

    from instag.features import tfconversion
    from instag.features.vggish import load_vggish

    hub = load_vggish(str(build_standin_vggish(tmp_path / "small", "small")))
    spec = [tf.TensorSpec([None], tf.float32, name=vggish_onnx.INPUT)]
    wrapped = tf.function(lambda waveform: hub(waveform), input_signature=spec)
    before, _ = tf2onnx.convert.from_function(wrapped, input_signature=spec, opset=17)
    largest = []
    optimise = tf2onnx.tf_loader.tf_optimize
    monkeypatch.setattr(tf2onnx.tf_loader, "tf_optimize", lambda i, o, graph: largest.append(
        max(len(n.attr["value"].tensor.tensor_content) for n in graph.node if n.op == "Const"))
        or optimise(i, o, graph))
    after = tfconversion.to_onnx(wrapped, spec, opset=17)
    assert largest and largest[0] < tfconversion.HOLLOW_BYTES  # the dense layer's 1.5 MB waited

    def operators(model):  # in any order: tf2onnx's sort breaks ties by its made-up names
        return sorted(repr((n.op_type, [onnx.helper.get_attribute_value(a) for a in n.attribute]))
                      for n in model.graph.node)

    def weights(model):
        return sorted((tuple(t.dims), numpy_helper.to_array(t).tobytes())
                      for t in model.graph.initializer)

    assert operators(after) == operators(before) and weights(after) == weights(before)
    wave = vggish_onnx.probe_audio()
    outputs = [ort.InferenceSession(m.SerializeToString()).run(None, {"waveform": wave})[0]
               for m in (before, after)]
    np.testing.assert_array_equal(*outputs)


def test_short_chunks_of_many_files_fill_one_network_call_with_no_window_wasted(
        fresh_hub, tmp_path, standin_pca):
    """The graph is cut where the network starts: each chunk's log-mel patches come from the
    front end, then one network call takes them all - no window straddling two chunks."""
    from standins import build_standin_vggish

    from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
    from instag.features.pca import load_pca
    from instag.features.vggish import load_vggish

    vggish = build_standin_vggish(tmp_path / "small", "small")
    path, _ = vggish_onnx.convert(str(vggish), *load_pca(standin_pca))
    model = vggish_onnx.OnnxVggish(path, "cpu")
    assert model.front is not None  # the cut parts this graph in two
    calls = []
    network = model.session

    class Counting:
        def run(self, names, feeds):
            calls.append(next(iter(feeds.values())).shape[0])
            return network.run(names, feeds)

        def get_inputs(self):
            return network.get_inputs()

    model.session = Counting()
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-.3, .3, n * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES).astype(np.float32)
              for n in (1, 1, 3, 1)]
    raws = model.many(chunks)
    assert calls == [6]  # 6 windows, one call; end to end it would compute 9
    hub = load_vggish(str(vggish))
    for chunk, raw in zip(chunks, raws, strict=True):
        np.testing.assert_allclose(raw, np.asarray(hub(chunk)), atol=1e-4)


def tag_song_in_a_fresh_process(standin_vggish, standin_pca, scoring_model, tmp_path,
                                prelude: str, report: str) -> str:
    """Convert VGGish here, then tag a 4 s song in a new process that first runs `prelude`;
    what it prints of the result (`r`) with `report`."""
    Embedder(str(standin_vggish), standin_pca).model  # noqa: B018 - converts it
    sf.write(tmp_path / "song.wav", np.random.default_rng(0).uniform(-.3, .3, 44100 * 4), 44100)
    code = (prelude + "import sys, instag; from pathlib import Path; "
            f"opts = instag.TagOptions(model=Path({str(scoring_model)!r}), "
            f"vggish={str(standin_vggish)!r}, pca=Path({str(standin_pca)!r}), "
            f"cache=Path({str(tmp_path / 'c.sqlite')!r}), jobs=1); "
            f"(r,) = instag.tag([Path({str(tmp_path / 'song.wav')!r})], opts); "
            f"print({report})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_tagging_with_a_converted_vggish_never_imports_tensorflow(
        fresh_hub, standin_vggish, standin_pca, scoring_model, tmp_path):
    assert tag_song_in_a_fresh_process(standin_vggish, standin_pca, scoring_model, tmp_path,
                                       "", "r.status, 'tensorflow' in sys.modules") == "ok False"


def test_a_lean_install_without_tensorflow_tags_with_the_converted_vggish(
        fresh_hub, standin_vggish, standin_pca, scoring_model, tmp_path):
    lean = "import sys; sys.modules.update(tensorflow=None, tensorflow_hub=None, tf2onnx=None); "
    assert tag_song_in_a_fresh_process(standin_vggish, standin_pca, scoring_model, tmp_path,
                                       lean, "r.status, len(r.features.values)") == "ok 4"


def test_without_tensorflow_an_unconverted_vggish_is_refused_before_the_run(
        fresh_hub, standin_vggish, standin_pca, scoring_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from instag.cli import app

    for name in ("tensorflow", "tensorflow_hub", "tf2onnx"):
        monkeypatch.setitem(sys.modules, name, None)
    sf.write(tmp_path / "song.wav", np.zeros(44100 * 2), 44100)
    result = CliRunner().invoke(app, [
        "tag", str(tmp_path / "song.wav"), "--model", str(scoring_model), "--vggish",
        str(standin_vggish), "--pca", str(standin_pca), "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 2, result.output
    assert "not been converted to ONNX" in result.output
    assert "pip install 'instag[setup]'" in result.output
    assert not (tmp_path / "t.csv").exists()


def test_doctor_says_tagging_needs_the_setup_extra_when_nothing_can_run_vggish(
        fresh_hub, standin_vggish, monkeypatch):
    from instag.provision.doctor import diagnose

    for name in ("tensorflow", "tensorflow_hub", "tf2onnx"):
        monkeypatch.setitem(sys.modules, name, None)
    (row,) = [c for c in diagnose(vggish=str(standin_vggish)) if c.item == "VGGish runtime"]
    assert row.blocks_tagging and "pip install 'instag[setup]'" in row.value


@pytest.mark.tensorflow
def test_the_setup_extra_pins_the_converter_pair_these_tests_convert_with():
    from importlib import metadata

    import tomllib

    from instag.features.vggish_onnx import TESTED_CONVERTERS

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    setup = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["setup"]
    pins = dict(req.split("==") for req in setup if "==" in req)
    assert pins == TESTED_CONVERTERS
    assert {name: metadata.version(name) for name in pins} == TESTED_CONVERTERS


@pytest.mark.parametrize("tf2onnx, said", [("1.17.0", "the tested pair"),
                                           ("1.16.1", "not the tested pair")])
def test_doctor_says_whether_the_converter_pair_is_the_tested_one(monkeypatch, tf2onnx, said):
    from instag.provision import doctor

    versions = {"tensorflow": "2.21.0", "tf2onnx": tf2onnx}
    monkeypatch.setattr(doctor, "_version", versions.get)
    check = doctor._converters()
    assert said in check.value and check.ok is (said == "the tested pair")


def test_sessions_do_not_spin_between_calls(scoring_model):
    """onnxruntime's threads busy-wait between calls by default, taking the cores the decode
    workers need (bench/short_files.py: 63 -> 76 files/s without it)."""
    from instag.common.onnxsession import open_session

    session = open_session(scoring_model, ["CPUExecutionProvider"])
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_vggish_runs_in_its_weights_and_a_small_working_set(fresh_hub, tmp_path, standin_pca):
    """VGGish's memory is its weights, once, and one call's working set (bench/memory.py: a
    run's peak 1140 -> under 600 MB at the same speed): each part of the graph keeps its
    weights in a file beside it, which onnxruntime maps instead of copying, with no pre-packed
    copy and no memory pattern; the conv layers (most of the activations) take
    CONV_BATCH_WINDOWS windows a call, the dense layers (most of the weights) the whole call."""
    import onnx
    from standins import build_standin_vggish

    from instag.features.instances import INSTANCE_SAMPLES, LOOKAHEAD_SAMPLES
    from instag.features.pca import load_pca

    path, _ = vggish_onnx.convert(str(build_standin_vggish(tmp_path / "small", "small")),
                                  *load_pca(standin_pca))
    model = vggish_onnx.OnnxVggish(path, "cpu")
    for session in (model.front, model.convs, model.session):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.disable_prepacking") == "1"
        assert not options.enable_mem_pattern
    parts = vggish_onnx.parts_beside(path)
    assert [p.name.split(".")[-2] for p in parts] == ["front", "convs", "dense"]
    dense = onnx.load(str(parts[2]), load_external_data=False).graph.initializer
    weights = {t.data_location for t in dense if np.prod(t.dims) > 100_000}
    assert weights == {onnx.TensorProto.EXTERNAL}
    calls = {"convs": [], "dense": []}
    for name, attr in (("convs", "convs"), ("dense", "session")):
        real = getattr(model, attr)
        setattr(model, attr, _Counting(real, calls[name]))
    wave = np.random.default_rng(0).uniform(-.3, .3, 20 * INSTANCE_SAMPLES + LOOKAHEAD_SAMPLES)
    assert vggish_onnx.CONV_BATCH_WINDOWS == 4
    raw = model.many([wave.astype(np.float32)])[0]
    assert calls == {"convs": [4] * 5, "dense": [20]} and raw.shape == (20, 128)


class _Counting:
    """A session that notes the rows of each call."""

    def __init__(self, session, calls: list[int]) -> None:
        self.session, self.calls = session, calls

    def run(self, names, feeds):
        self.calls.append(next(iter(feeds.values())).shape[0])
        return self.session.run(names, feeds)

    def get_inputs(self):
        return self.session.get_inputs()


def test_a_base_install_without_onnx_runs_the_converted_vggish(standin_vggish, standin_pca,
                                                                 monkeypatch):
    """onnx (the `train` extra) only cuts the graph in two; without it the whole graph serves."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    embedder = Embedder(str(standin_vggish), standin_pca)
    features = embedder.embed_blocks([np.zeros(16000 * 2, np.float32)])
    assert embedder.runtime.startswith("onnxruntime") and len(features.values) == 2
