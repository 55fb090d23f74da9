"""A training run on disk: a random forest stored without pickle, a model file of another type
refused, an old pickled run loaded only when the user trusts it."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instag.cli import app


# -- 8. a random forest run that cannot run code -------------------------------------------------
@pytest.fixture
def rf_run(tmp_path):
    pytest.importorskip("skops")
    from builders import random_openmic

    from instag.learning.data import load_openmic
    from instag.learning.train import Recipe, train_run

    data = load_openmic(random_openmic(tmp_path / "data", n=80))
    train_run(data, Recipe(model="rf", device="cpu"), tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_a_random_forest_run_is_stored_without_pickle_and_evaluates(rf_run):
    assert (rf_run / "model.skops").is_file() and not (rf_run / "model.joblib").exists()
    result = CliRunner().invoke(app, ["evaluate", str(rf_run)])
    assert result.exit_code == 0, result.output
    assert json.loads((rf_run / "evaluation.json").read_text())["model"] == "rf"


def test_a_model_file_holding_another_type_is_refused(rf_run, tmp_path):
    import skops.io as sio

    sio.dump({"meta": {}, "params": {}, "forests": [tmp_path]}, rf_run / "model.skops")  # a Path
    result = CliRunner().invoke(app, ["evaluate", str(rf_run)])
    assert result.exit_code == 2 and "holds types instag never writes" in result.output


class Payload:
    """What a hostile pickle does when it is loaded: here, leave a mark."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (Path(self.mark),))


def test_an_old_pickled_run_is_loaded_only_with_trust_pickle(rf_run, tmp_path):
    import joblib

    mark = tmp_path / "code-ran"
    (rf_run / "model.skops").unlink()
    joblib.dump({"meta": {}, "model": Payload(str(mark))}, rf_run / "model.joblib")
    for command in (["evaluate", str(rf_run)], ["export-onnx", str(rf_run)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and not mark.exists(), result.output
    assert "--trust-pickle" in CliRunner().invoke(app, ["evaluate", str(rf_run)]).output
    CliRunner().invoke(app, ["evaluate", str(rf_run), "--trust-pickle"])
    assert mark.exists()  # what trusting a pickle means
