import json
import math

import pytest
import torch
from builders import localized_instruments, random_openmic
from typer.testing import CliRunner

from instag.cli import app
from instag.learning import runs, train
from instag.learning.data import load_openmic
from instag.learning.train import Recipe, partial_bce, train_run


def test_partial_bce_equals_a_hand_computation_with_missing_labels():
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.3, 0.5, 0.8]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    sample0 = -(math.log(0.9) + math.log(0.8)) / 2  # two observed labels
    sample1 = -math.log(0.7) / 1  # one observed label
    assert float(partial_bce(probs, labels, mask)) == pytest.approx((sample0 + sample1) / 2)


def test_a_sample_without_observed_labels_adds_no_loss():
    probs = torch.tensor([[0.9], [0.01]])
    labels = torch.tensor([[1.0], [1.0]])
    mask = torch.tensor([[True], [False]])
    assert float(partial_bce(probs, labels, mask)) == pytest.approx(-math.log(0.9) / 2)


def _recipe(model="att", epochs=3, seed=0):
    return Recipe(model=model, epochs=epochs, batch_size=16, seed=seed, device="cpu")


def test_training_writes_checkpoint_metrics_and_history(tmp_path):
    data = load_openmic(random_openmic(tmp_path / "data"))
    train_run(data, _recipe(), tmp_path / "run", progress=False)
    model, meta = runs.load_torch(tmp_path / "run")
    assert meta["model"] == "att" and meta["classes"] == ["c0", "c1", "c2"]
    assert meta["input_scale"] == pytest.approx(1 / 255) and meta["data_sha256"] == data.checksum
    assert "overall" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 4


def test_training_is_deterministic_on_cpu_for_a_seed(tmp_path):
    data = load_openmic(random_openmic(tmp_path / "data"))
    a = train_run(data, _recipe(seed=7), tmp_path / "a", progress=False)
    b = train_run(data, _recipe(seed=7), tmp_path / "b", progress=False)
    assert a["overall"] == b["overall"]
    sa, sb = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"]
              for d in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ctrl_c_keeps_the_best_checkpoint_so_far(tmp_path, monkeypatch):
    data = load_openmic(random_openmic(tmp_path / "data"))
    calls = {"n": 0}
    real = train._loss_on

    def interrupt_in_third_epoch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "_loss_on", interrupt_in_third_epoch)
    metrics = train_run(data, _recipe(epochs=50), tmp_path / "run", progress=False)
    assert metrics["interrupted"] is True and metrics["best_epoch"] in (1, 2)
    runs.load_torch(tmp_path / "run")  # still a valid model


@pytest.mark.parametrize("model", ["fc_t", "fc", "rnn", "rf"])
def test_every_baseline_trains_and_evaluates(tmp_path, model):
    data = load_openmic(random_openmic(tmp_path / "data"))
    metrics = train_run(data, _recipe(model=model, epochs=2), tmp_path / "run", progress=False)
    assert metrics["model"] == model and 0 <= metrics["overall"]["f1"] <= 1


def test_attention_beats_mean_pooling_when_instruments_are_localised(tmp_path):
    """The paper's central claim, on data where each instrument sounds in 1-2 of 10 instances."""
    data = load_openmic(localized_instruments(tmp_path / "data"))
    att = train_run(data, _recipe("att", epochs=40), tmp_path / "att", progress=False)
    fc_t = train_run(data, _recipe("fc_t", epochs=40), tmp_path / "fc_t", progress=False)
    assert att["overall"]["f1"] > 0.85
    assert att["overall"]["f1"] > fc_t["overall"]["f1"] + 0.1


def test_train_evaluate_report_on_real_vggish_features(tmp_path, audioset_mini):
    cli = CliRunner()
    run = tmp_path / "runs"
    result = cli.invoke(app, ["train", "--openmic", str(audioset_mini), "--out", str(run),
                              "--epochs", "60", "--seeds", "0,1", "--quiet"])
    assert result.exit_code == 0, result.output
    result = cli.invoke(app, ["evaluate", str(run / "seed-0")])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "seed-0" / "evaluation.json").read_text())
    prevalence = 454 + 464 + 62 + 28 + 27 + 65 + 24  # positives per class, 968 clips
    assert doc["overall"]["map"] > 2 * prevalence / (7 * 968)  # well above chance
    assert doc["overall"]["f1"] > 0.55
    result = cli.invoke(app, ["report", str(run), "--png", str(tmp_path / "f1.png")])
    assert result.exit_code == 0, result.output
    assert "att" in result.output and (tmp_path / "f1.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_data_directory_is_a_clear_error_not_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["train", "--openmic", str(tmp_path), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "openmic-2018.npz: missing" in result.output and "Traceback" not in result.output


def test_training_leaves_torch_deterministic_mode_as_it_found_it(tmp_path):
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    train_run(load_openmic(random_openmic(tmp_path / "data")),
              Recipe(epochs=1, batch_size=16, device="cpu"), tmp_path / "run", False)
    assert torch.are_deterministic_algorithms_enabled() == before
