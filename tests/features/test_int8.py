"""The INT8 VGGish: made and judged by `instag setup`, kept only where the tags a user sees are
FP32's (decisions and bag probabilities; the features are reported, not judged), a layer that
breaks them back to FP32 (named in words), none left: refused, naming the rule that failed,
remembered with its figures; opt-in by `--precision int8`, its features never mixed with FP32's
in the cache and never used to train or verify; and the FP16 conversion for CUDA, which keeps
the graph's input and output types."""

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


@pytest.fixture(scope="module")
def listening_model(trained_run, standins, standin_pca, tmp_path_factory):
    """A scoring model made to listen: a network drawn from a fixed seed (not the training
    run's, whose weights change with the recipe: only its card is kept), its input normalised
    to the stand-ins' features as the graph sees them (uint8 / 255) and its instance head 30x
    louder, so that a change in the features moves its probabilities."""
    import torch

    from instag.learning import runs
    from instag.learning.export import export_run
    from instag.learning.models import build_model
    from instag.provision.int8 import clips

    run = tmp_path_factory.mktemp("listening") / "run"
    shutil.copytree(trained_run, run)
    embedder = Embedder(str(standins["small"]), standin_pca)
    embedder.model  # noqa: B018 - converted to ONNX, as setup does
    _, held, _ = clips(None, embedder.resampler, 50)
    feats = np.concatenate(at_precision.features_of(
        vggish_onnx.find(str(standins["small"])), held, embedder.eigen_vectors,
        embedder.means)).astype(np.float32) * runs.INPUT_SCALE
    blob = torch.load(run / "model.pt", weights_only=True)
    meta = blob["meta"]
    torch.manual_seed(1)
    state = build_model(meta["model"], len(meta["classes"]), meta["in_dim"]).state_dict()
    state["bn0.running_mean"] = torch.from_numpy(feats.mean(0))
    state["bn0.running_var"] = torch.from_numpy(feats.var(0) + 1e-3)
    state["instance_head.weight"] *= 30
    blob["state_dict"] = state
    torch.save(blob, run / "model.pt")
    return export_run(run, run.parent / "att.onnx")


@pytest.fixture
def installed(tmp_path, monkeypatch, scoring_model, standin_pca):
    """A machine `instag setup` has set up: the scoring model and its card installed, VGGish
    and the PCA file remembered; `vggish(arch, model)` picks the stand-in (converted) and the
    scoring model (default: the briefly trained one)."""
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))

    def vggish(path, scoring=scoring_model):
        model = locations.installed_model()
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scoring, model)
        shutil.copy(scoring.with_suffix(".json"), model.with_suffix(".json"))
        monkeypatch.setenv("INSTAG_VGGISH", str(path))
        Embedder(str(path), standin_pca).model  # noqa: B018 - converted to ONNX, as setup does
        fp32 = vggish_onnx.find(str(path))
        at_precision.refused_marker(fp32, Precision.INT8).unlink(missing_ok=True)
        at_precision.model_path(fp32, Precision.INT8).unlink(missing_ok=True)
        return model
    return vggish


def setup_int8(*extra):
    return CliRunner().invoke(app, ["setup", "--only-int8", *extra])


def test_int8_is_kept_where_it_gives_fp32s_tags(installed, standins, listening_model):
    model = installed(standins["small"], listening_model)
    out = setup_int8()
    assert out.exit_code == 0, out.output
    assert "INT8 VGGish kept (3 layers INT8, 0 FP32)" in out.output
    doc = at_precision.figures(str(standins["small"]), Precision.INT8)
    assert doc["kept"] and doc["clips"] == 200 and doc["rule"] == at_precision.RULE
    assert doc["tags_agree"] >= 0.995 and doc["present_agree"] >= 0.99
    assert doc["probabilities_close"] >= 0.99 and doc["probability_max_diff"] <= 0.02
    assert doc["present_pairs"] > 0  # agreement on absent pairs alone would prove little
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["int8"]["kept"] and "## INT8 VGGish" in model.with_suffix(".md").read_text()


def test_features_are_reported_not_judged_a_model_whose_tags_are_fp32s_is_kept(installed,
                                                                               standins):
    """The fragile stand-in's INT8 features are within one step on far fewer than 99 % of
    values (the old rule refused it), but the tags a user sees are FP32's: kept, whole."""
    installed(standins["fragile"])
    out = setup_int8()
    assert out.exit_code == 0, out.output
    doc = at_precision.figures(str(standins["fragile"]), Precision.INT8)
    assert doc["kept"] and doc["features_within_one"] < 0.99
    assert len(doc["layers_int8"]) == 3 and "(reported, not judged)" in out.output
    assert "ranking" not in out.output  # judged once: no layer fallback


def test_the_layers_that_break_the_tags_go_back_to_fp32_named_in_words(installed, standins,
                                                                      listening_model):
    installed(standins["fragile"], listening_model)
    out = setup_int8()
    assert out.exit_code == 0, out.output
    doc = at_precision.figures(str(standins["fragile"]), Precision.INT8)
    assert doc["kept"] and doc["probabilities_close"] >= 0.99
    # the first conv (its input is the log-mel) stays INT8; the layers touching the constant
    # channel go back to FP32, found by one ranking run, not by judging each layer alone
    assert doc["layers_int8"] == ["conv layer 1"]
    assert sorted(doc["layers_fp32"]) == ["conv layer 2", "fully connected layer 1"]
    assert "ranking the layers" in out.output and out.output.count("back to FP32:") == 2
    assert "conv layer 2 back to FP32" in out.output
    assert "StatefulPartitionedCall" not in out.output and "/" not in " ".join(doc["layers_fp32"])


def test_a_model_whose_scores_differ_is_refused_naming_the_rule_and_remembered(
        installed, standins, listening_model, tmp_path, run_tag):
    installed(standins["brittle"], listening_model)
    out = setup_int8()
    assert out.exit_code == 0, out.output  # a decision, not a failure of setup
    said = " ".join(out.output.split())
    assert "INT8 VGGish refused (VGGish stays FP32): its probabilities are within 0.02 of " \
        "FP32's on" in said and "below the 99% the rule asks" in said
    assert at_precision.find(str(standins["brittle"]), Precision.INT8) is None
    doc = at_precision.refused(str(standins["brittle"]), Precision.INT8)
    assert not doc["kept"] and doc["probabilities_close"] < 0.99 and doc["failed"]
    again = setup_int8()  # not judged on every run
    assert "decided before, skipped" in again.output and "calibrating" not in again.output
    sf.write(tmp_path / "a.wav", music(2, 0), SR)
    tag = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--precision", "int8",
                  "--vggish", standins["brittle"])
    assert tag.exit_code == 2
    assert "setup refused the INT8 VGGish here (its probabilities are within 0.02" in \
        " ".join(tag.output.split())
    assert not (tmp_path / "t.csv").exists()


def test_a_kept_model_is_not_judged_again_and_setup_says_so(installed, standins):
    installed(standins["small"])
    assert setup_int8().exit_code == 0
    kept = at_precision.find(str(standins["small"]), Precision.INT8)
    before = kept.stat().st_mtime_ns
    again = CliRunner().invoke(app, ["setup", "--int8"])  # the old spelling still works
    assert again.exit_code == 0, again.output
    assert "--int8 is now --only-int8" in again.output
    assert "INT8 VGGish kept" in again.output and "decided before, skipped" in again.output
    assert "calibrating" not in again.output and kept.stat().st_mtime_ns == before


def test_a_decision_made_under_the_feature_rule_is_made_again(installed, standins):
    installed(standins["fragile"])
    fp32 = vggish_onnx.find(str(standins["fragile"]))
    old = {"kept": False, "features_within_one": 0.55, "tags_agree": 1.0, "clips": 200,
           "rule": {"features_within_one": 0.99, "tags_agree": 0.995, "present_agree": 0.99}}
    at_precision.refuse(fp32, Precision.INT8, old)
    assert "under an earlier rule" in CliRunner().invoke(app, ["doctor"]).output
    out = setup_int8()
    assert out.exit_code == 0, out.output
    assert "decided under an earlier rule" in out.output and "INT8 VGGish kept" in out.output


def test_precision_int8_without_an_int8_model_is_one_line(run_tag, tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 0), SR)
    out = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--precision", "int8")
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "--precision int8: no INT8 VGGish on this machine" in out.output
    assert "instag setup --only-int8" in out.output


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
    assert at_precision.within_one(a, b) >= 0.99


# -- INT8 features never train a model or verify OpenMIC's ----------------------------------
@pytest.fixture
def int8_by_default(monkeypatch, standin_vggish, standin_pca):
    """A machine whose tagging defaults to INT8 (settings.json), with no INT8 model to run:
    whatever reaches for INT8 here fails, so what succeeds ran FP32."""
    locations.remember(precision="int8")
    monkeypatch.setenv("INSTAG_VGGISH", str(standin_vggish))
    monkeypatch.setenv("INSTAG_PCA", str(standin_pca))
    assert instag.TagOptions().vggish_precision() is Precision.INT8


def test_embed_makes_fp32_features_whatever_tagging_defaults_to(int8_by_default, tmp_path,
                                                                 standin_vggish, standin_pca):
    sf.write(tmp_path / "a.wav", music(3, 0), SR)
    out = CliRunner().invoke(app, ["embed", str(tmp_path / "a.wav"), "--out",
                                   str(tmp_path / "f.npz"), "--cache", str(tmp_path / "c.db")])
    assert out.exit_code == 0, out.output
    (result,) = list(instag.embed([tmp_path / "a.wav"], instag.TagOptions(jobs=1)))
    assert result.ok and result.features is not None
    asked = CliRunner().invoke(app, ["embed", str(tmp_path / "a.wav"), "--out",
                                     str(tmp_path / "g.npz"), "--precision", "int8"])
    assert asked.exit_code == 2 and "no INT8 VGGish on this machine" in asked.output


def test_training_on_labels_embeds_in_fp32_and_refuses_int8(int8_by_default, tmp_path):
    from builders import labelled_songs

    from instag.learning.labels import read_labels_csv
    from instag.provision.teach import embed_labelled

    csv, _ = labelled_songs(tmp_path / "songs", 2, seed=3)
    labels = read_labels_csv(csv)
    kept, bags, failed = embed_labelled(labels, instag.TagOptions(jobs=1,
                                                                   cache=tmp_path / "c.db"))
    assert not failed and len(bags) == len(kept.files) == 2
    with pytest.raises(instag.InstagError, match="trained on FP32 features only"):
        embed_labelled(labels, instag.TagOptions(precision="int8"))


def test_doctor_verify_compares_fp32_features_with_openmics(int8_by_default, monkeypatch,
                                                            tmp_path):
    from instag.provision import verify

    seen = []
    monkeypatch.setattr(verify, "check_features",
                        lambda root, clips, embedder: seen.append(embedder.precision))
    locations.remember(openmic=str(tmp_path))
    verify.verify_installed()
    assert seen == [Precision.FP32]
