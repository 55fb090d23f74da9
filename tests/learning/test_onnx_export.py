import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

import onnx
import torch

from instag.common.errors import InstagError
from instag.learning import runs
from instag.learning.export import export_model, export_run
from instag.learning.models import build_model
from instag.tagging.scoring import ScoringModel, choose_providers

pytestmark = pytest.mark.torch


def meta_for(name, classes=("a", "b", "c")):
    return {"model": name, "classes": list(classes), "in_dim": 128, "n_instances": 10,
            "seed": 0, "data_dir": "/data/openmic-2018", "data_sha256": "ab" * 32,
            "input_scale": 1 / 255}


def trained_like(name, n_classes=3, seed=0):
    """A model with non-trivial weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(name, n_classes)
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 10, 128))  # moves batch-norm running statistics
    return model.eval()


@pytest.fixture(scope="module")
def att_onnx(tmp_path_factory):
    model = trained_like("att")
    path = export_model(model, meta_for("att"), tmp_path_factory.mktemp("x") / "att.onnx")
    return model, path


def torch_outputs(model, feats, mask):
    with torch.no_grad():
        return [o.numpy() for o in model(torch.from_numpy(feats).float() / 255,
                                         torch.from_numpy(mask))]


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("length", [1, 2, 10, 37, 600])
def test_onnxruntime_on_cpu_matches_torch(att_onnx, batch, length):
    model, path = att_onnx
    feats = np.random.default_rng(length).integers(0, 256, (batch, length, 128), dtype=np.uint8)
    mask = np.ones((batch, length), bool)
    got = ScoringModel(path, device="cpu").run(feats, mask)
    for g, want in zip(got, torch_outputs(model, feats, mask), strict=True):
        assert np.abs(g - want).max() <= 1e-5


def test_a_padded_batch_scores_like_each_bag_alone(att_onnx):
    _, path = att_onnx
    scorer = ScoringModel(path, device="cpu")
    rng = np.random.default_rng(0)
    bags = [rng.integers(0, 256, (n, 128), dtype=np.uint8) for n in (3, 10, 57)]
    together = scorer.score(bags)
    for bag, scored in zip(bags, together, strict=True):
        bag_p, inst, att = scorer.run(bag[None], np.ones((1, len(bag)), bool))
        np.testing.assert_allclose(scored.bag, bag_p[0], atol=1e-6)
        np.testing.assert_allclose(scored.attention, att[0], atol=1e-6)
        assert scored.instance.shape == (len(bag), 3)
        assert scored.attention.sum(axis=0) == pytest.approx(np.ones(3), abs=1e-5)


def test_the_graph_passes_the_checker_and_carries_its_metadata(att_onnx):
    _, path = att_onnx
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["instag.classes"]) == ["a", "b", "c"]
    assert props["instag.model"] == "att" and "VGGish" in props["instag.feature_spec"]
    assert props["instag.training_data_sha256"] == "ab" * 32
    assert len(props["instag.weights_sha256"]) == 64 and props["instag.version"]
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["classes"] == ["a", "b", "c"] and card["onnx_sha256"]


@pytest.mark.parametrize("name", ["fc_t", "rnn", "fc"])
def test_baselines_export_and_match_torch(tmp_path, name):
    model = trained_like(name)
    path = export_model(model, meta_for(name), tmp_path / f"{name}.onnx")
    feats = np.random.default_rng(0).integers(0, 256, (4, 10, 128), dtype=np.uint8)
    mask = np.ones((4, 10), bool)
    got = ScoringModel(path, device="cpu").run(feats, mask)
    for g, want in zip(got, torch_outputs(model, feats, mask), strict=True):
        assert np.abs(g - want).max() <= 1e-5


def test_rnn_bags_of_different_lengths_are_scored_unpadded(tmp_path):
    model = trained_like("rnn")
    scorer = ScoringModel(export_model(model, meta_for("rnn"), tmp_path / "rnn.onnx"), device="cpu")
    rng = np.random.default_rng(0)
    bags = [rng.integers(0, 256, (n, 128), dtype=np.uint8) for n in (4, 9)]
    for bag, scored in zip(bags, scorer.score(bags), strict=True):
        alone = torch_outputs(model, bag[None], np.ones((1, len(bag)), bool))[0][0]
        np.testing.assert_allclose(scored.bag, alone, atol=1e-5)


def test_export_run_writes_beside_a_model_card_with_metrics(tmp_path):
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    data = load_openmic(random_openmic(tmp_path / "data"))
    train_run(data, Recipe(epochs=1, batch_size=16, device="cpu"), tmp_path / "run", False)
    path = export_run(tmp_path / "run", tmp_path / "out" / "m.onnx")
    card = json.loads(path.with_suffix(".json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert card["metrics"] == metrics and card["training_data_sha256"] == data.checksum
    scorer = ScoringModel(path, "cpu")
    assert scorer.classes == ("c0", "c1", "c2")
    assert scorer.meta.thresholds == metrics["thresholds"]  # tuned at training, for tagging


def test_the_model_card_reads_as_markdown_with_every_instruments_figures(tmp_path):
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    data = load_openmic(random_openmic(tmp_path / "data", n=60))
    train_run(data, Recipe(epochs=1, batch_size=16, device="cpu"), tmp_path / "run", False)
    path = export_run(tmp_path / "run", tmp_path / "out" / "m.onnx")
    card = json.loads(path.with_suffix(".json").read_text())
    text = path.with_suffix(".md").read_text()
    assert text.startswith("# instag att: musical instrument recognition")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| c")}
    assert sorted(rows) == ["c0", "c1", "c2"]
    for name, row in rows.items():
        figures = card["metrics"]["per_class"][name]
        assert int(row[1]) == figures["n_positive"]  # the test positives each figure rests on
        assert row[2] == f"{figures['f1']:.3f}"
        assert row[4] == f"{card['metrics']['thresholds'][name]:.2f}"
    assert "## Feature check" in text and "Not run yet" in text
    assert "## Known limits" in text and data.checksum[:16] in text


def test_export_goes_into_the_run_directory_by_default_named_once(tmp_path):
    model = trained_like("att")
    runs.save_torch(tmp_path / "att", model, meta_for("att"))
    assert export_run(tmp_path / "att") == tmp_path / "att" / "att.onnx"
    assert (tmp_path / "att" / "att.json").is_file()


def test_a_random_forest_run_cannot_be_exported(tmp_path):
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    data = load_openmic(random_openmic(tmp_path / "data"))
    train_run(data, Recipe(model="rf"), tmp_path / "run", False)
    with pytest.raises(InstagError, match="no ONNX form"):
        export_run(tmp_path / "run")


def test_cpu_is_chosen_by_auto_without_cuda(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(InstagError, match="--device cuda"):
        choose_providers("cuda")


def test_a_corrupt_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model at all")
    with pytest.raises(InstagError, match="bad.onnx: not a loadable ONNX model"):
        ScoringModel(tmp_path / "bad.onnx", "cpu")


def test_an_onnx_file_without_instag_metadata_is_refused(tmp_path):
    model = torch.nn.Linear(128, 3)
    torch.onnx.export(model, (torch.rand(1, 128),), str(tmp_path / "plain.onnx"), dynamo=False)
    with pytest.raises(InstagError, match="not an instag model"):
        ScoringModel(tmp_path / "plain.onnx", "cpu")


def test_a_model_with_other_classes_is_refused(att_onnx):
    with pytest.raises(InstagError, match="differ from the expected"):
        ScoringModel(att_onnx[1], "cpu", expected_classes=["piano", "voice", "drums"])


def test_missing_model_file_names_the_fix(tmp_path):
    with pytest.raises(InstagError, match="instag export-onnx"):
        ScoringModel(tmp_path / "none.onnx", "cpu")


def test_run_dir_meta_reaches_the_onnx_file(tmp_path):
    model = trained_like("att")
    runs.save_torch(tmp_path / "run", model, meta_for("att"))
    path = export_run(tmp_path / "run", tmp_path / "att.onnx")
    assert ScoringModel(path, "cpu").model_name == "att"


def test_a_cuda_provider_that_does_not_load_is_tried_once_per_process(monkeypatch):
    """Each try dlopens and dlcloses the provider's library; many sessions (an import through
    beets, the tests) then raced glibc's thread-local storage and ended the process."""
    from pathlib import Path

    from instag.common import onnxsession

    monkeypatch.setattr(onnxsession, "_cuda_loads", [])
    golden = Path(__file__).parents[1] / "golden" / "att.onnx"
    session = onnxsession.open_session(golden, choose_providers("auto"))
    if "CUDAExecutionProvider" in session.get_providers():
        pytest.skip("CUDA loads here")
    assert choose_providers("auto") == ["CPUExecutionProvider"]  # not asked again
