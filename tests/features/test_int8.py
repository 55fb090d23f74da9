"""The INT8 VGGish: made and judged by `instag setup`, kept only where its features and tags
are FP32's (a layer that breaks parity goes back to FP32; none left: refused, remembered with
its figures), opt-in by `--precision int8`, its features never mixed with FP32's in the cache;
and the FP16 conversion for CUDA, which keeps the graph's input and output types."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music
from typer.testing import CliRunner

import instag
from instag.cli import app
from instag.common import locations
from instag.features import precision as at_precision
from instag.features import vggish_onnx
from instag.features.embed import Embedder
from instag.features.precision import Precision

pytestmark = pytest.mark.tensorflow  # setup converts VGGish


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """The small stand-in (INT8 keeps it), the fragile one (one tensor INT8 cannot hold) and
    the brittle one (such a tensor after every layer), each converted to ONNX."""
    from standins import build_standin_vggish

    root = tmp_path_factory.mktemp("int8-standins")
    return {arch: build_standin_vggish(root / arch, arch) for arch in
            ("small", "fragile", "brittle")}


@pytest.fixture
def installed(tmp_path, monkeypatch, scoring_model, standin_pca):
    """A machine `instag setup` has set up: the scoring model and its card installed, VGGish
    and the PCA file remembered; `vggish(arch)` picks the stand-in and converts it."""
    model = locations.installed_model()
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(scoring_model, model)
    shutil.copy(scoring_model.with_suffix(".json"), model.with_suffix(".json"))
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))

    def vggish(path):
        monkeypatch.setenv("INSTAG_VGGISH", str(path))
        Embedder(str(path), standin_pca).model  # noqa: B018 - converted to ONNX, as setup does
        fp32 = vggish_onnx.find(str(path))
        at_precision.refused_marker(fp32, Precision.INT8).unlink(missing_ok=True)
        at_precision.model_path(fp32, Precision.INT8).unlink(missing_ok=True)
        return model
    return vggish


def setup_int8(*extra):
    return CliRunner().invoke(app, ["setup", "--int8", *extra])


def test_int8_is_kept_where_it_gives_fp32s_features_and_tags(installed, standins):
    model = installed(standins["small"])
    out = setup_int8()
    assert out.exit_code == 0, out.output
    assert "INT8 VGGish kept (3 layers INT8, 0 FP32)" in out.output
    doc = at_precision.figures(str(standins["small"]), Precision.INT8)
    assert doc["kept"] and doc["clips"] == 200 and doc["features_within_one"] >= 0.99
    assert doc["tags_agree"] >= 0.995 and doc["present_agree"] >= 0.99
    assert doc["present_pairs"] > 0  # agreement on absent pairs alone would prove little
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["int8"]["kept"] and "## INT8 VGGish" in model.with_suffix(".md").read_text()


def test_a_layer_that_breaks_parity_goes_back_to_fp32_and_the_rest_stays_int8(installed,
                                                                             standins):
    installed(standins["fragile"])
    out = setup_int8()
    assert out.exit_code == 0, out.output
    doc = at_precision.figures(str(standins["fragile"]), Precision.INT8)
    assert doc["kept"] and doc["features_within_one"] >= 0.99
    # the first conv (its input is the log-mel) stays INT8; the layers touching the constant
    # channel went back to FP32
    assert len(doc["layers_int8"]) == 1 and len(doc["layers_fp32"]) == 2
    assert "miss parity" in out.output and "back to FP32" in out.output


def test_without_a_layer_set_at_parity_it_is_refused_and_remembered_with_its_figures(
        installed, standins, tmp_path, run_tag):
    installed(standins["brittle"])
    out = setup_int8()
    assert out.exit_code == 0, out.output  # a decision, not a failure of setup
    assert "INT8 VGGish refused (VGGish stays FP32): features within one step" in out.output
    assert at_precision.find(str(standins["brittle"]), Precision.INT8) is None
    doc = at_precision.refused(str(standins["brittle"]), Precision.INT8)
    assert not doc["kept"] and doc["features_within_one"] < 0.99
    again = setup_int8()  # not judged on every run
    assert "decided before" in again.output and "calibrating" not in again.output
    sf.write(tmp_path / "a.wav", music(2, 0), SR)
    tag = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--precision", "int8",
                  "--vggish", standins["brittle"])
    assert tag.exit_code == 2
    assert "setup refused the INT8 VGGish here (features within one step" in tag.output
    assert not (tmp_path / "t.csv").exists()


def test_precision_int8_without_an_int8_model_is_one_line(run_tag, tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 0), SR)
    out = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--precision", "int8")
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "--precision int8: no INT8 VGGish on this machine" in out.output
    assert "instag setup --int8" in out.output


def test_an_unknown_precision_is_refused_where_the_options_are_made():
    with pytest.raises(instag.InstagError, match="precision='int4': not a precision"):
        instag.TagOptions(precision="int4")


def test_int8_features_are_their_own_in_the_cache(installed, standins, standin_pca,
                                                  scoring_model, tmp_path):
    installed(standins["small"])
    assert setup_int8().exit_code == 0
    sf.write(tmp_path / "a.wav", music(3, 0), SR)
    common = dict(model=scoring_model, vggish=str(standins["small"]), pca=standin_pca,
                  cache=tmp_path / "cache.sqlite", jobs=1)
    runs = {}
    for precision in ("fp32", "int8", "int8"):
        run = instag.tag([tmp_path / "a.wav"], instag.TagOptions(precision=precision, **common))
        (result,) = list(run)
        runs.setdefault(precision, []).append((result, run.counts.from_cache))
    ((fp32, _),), ((first, cached_first), (second, cached_second)) = runs["fp32"], runs["int8"]
    assert cached_first == 0 and cached_second == 1  # INT8 never served FP32's features
    assert fp32.model_id != first.model_id == second.model_id
    ids = {p: Embedder(str(standins["small"]), standin_pca, precision=p).identity
           for p in ("fp32", "int8")}
    assert ids["int8"].startswith(ids["fp32"] + "|int8:")


def test_int8_can_be_made_the_default_in_settings(installed, standins, run_tag, tmp_path):
    installed(standins["small"])
    assert setup_int8().exit_code == 0
    assert "make it the default" in CliRunner().invoke(app, ["doctor"]).output
    locations.remember(precision="int8")
    assert instag.TagOptions().vggish_precision() is Precision.INT8
    assert "INT8 VGGish kept" in CliRunner().invoke(app, ["doctor"]).output


def test_fp16_conversion_keeps_the_graphs_input_and_output_types(installed, standins):
    onnx = pytest.importorskip("onnx")
    installed(standins["small"])
    fp32 = vggish_onnx.find(str(standins["small"]))
    half = onnx.load_from_string(at_precision.fp16(fp32))
    full = onnx.load(str(fp32))
    types = [(v.name, v.type.tensor_type.elem_type) for v in (*full.graph.input,
                                                              *full.graph.output)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in (*half.graph.input,
                                                             *half.graph.output)] == types
    inits = {i.name: i.data_type for i in half.graph.initializer}
    conv_weights = [n.input[1] for n in half.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(inits[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    if vggish_onnx.OnnxVggish(fp32, "auto").provider != "CUDAExecutionProvider":
        pytest.skip("FP16 parity is checked on CUDA only (the CPU provider lacks float16 Conv)")
    waves = [np.asarray(music(5, seed)[:, 0][:15360 * 4 + 240], np.float32) for seed in (1, 2)]
    ev, mn = Embedder(str(standins["small"])).eigen_vectors, Embedder(
        str(standins["small"])).means
    a = at_precision.features_of(fp32, waves, ev, mn, "cuda")
    b = at_precision.features_of(at_precision.fp16(fp32), waves, ev, mn, "cuda")
    assert at_precision.within_one(a, b) >= at_precision.MIN_WITHIN_ONE
