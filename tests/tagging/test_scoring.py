"""The scoring model: a hostile or malformed model is refused at load in one line, before any
scoring; a non-finite score is that file's error, never a NaN in an output."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music

from instag.common.errors import InstagError

PREVIOUS_JSON = '{"instag_version": "previous", "files": [\n]}\n'  # an earlier output


# -- 6, 7. hostile models --------------------------------------------------------------------------
def hostile(scoring_model: Path, out: Path, kind: str) -> Path:
    """The test model with its bag output rewired: NaN everywhere, or a shape that grows with
    the bag's length (right for one instance, wrong for more)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(scoring_model)
    g = m.graph
    for node in g.node:
        node.output[:] = ["orig_bag" if o == "bag_probs" else o for o in node.output]
    if kind == "nan":
        g.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
        g.node.append(helper.make_node("Mul", ["orig_bag", "nan_c"], ["bag_probs"]))
    else:
        g.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "one"),
                              numpy_helper.from_array(np.array(1, np.int64), "axis1")])
        g.node.extend([
            helper.make_node("Shape", ["features"], ["fshape"]),
            helper.make_node("Gather", ["fshape", "axis1"], ["t"]),
            helper.make_node("Unsqueeze", ["t", "zero_axes"], ["t1"]),
            helper.make_node("Concat", ["one", "t1"], ["reps"], axis=0),
            helper.make_node("Tile", ["orig_bag", "reps"], ["bag_probs"])])
        g.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axes"))
    g.output[0].type.tensor_type.ClearField("shape")
    onnx.save(m, out)
    return out


@pytest.mark.parametrize("kind, says", [("nan", "not finite"),
                                        ("shape", "for 2 bags of 3 instances")])
@pytest.mark.torch
def test_a_hostile_model_is_refused_at_load_with_one_line(run_tag, scoring_model, tmp_path,
                                                          kind, says):
    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    (tmp_path / "t.json").write_text(PREVIOUS_JSON)
    model = hostile(scoring_model, tmp_path / f"{kind}.onnx", kind)
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.json", "--model", model)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert says in error
    assert (tmp_path / "t.json").read_text() == PREVIOUS_JSON


def test_a_non_finite_score_in_a_run_is_that_files_error_and_json_holds_no_nan(
        run_tag, tmp_path, monkeypatch):
    from instag.tagging.scoring import ScoringModel

    sf.write(tmp_path / "good.wav", music(3, 1), SR)
    sf.write(tmp_path / "bad.wav", music(8, 2), SR)  # 8 instances: the longer bag
    run = ScoringModel.run

    def nan_for_long_bags(self, features, mask):
        bag, inst, att = run(self, features, mask)
        bag = bag.copy()
        bag[mask.sum(axis=1) >= 8] = np.nan
        return bag, inst, att

    monkeypatch.setattr(ScoringModel, "run", nan_for_long_bags)
    result = run_tag(tmp_path, "--out", tmp_path / "t.json", "--jobs", "1")
    assert result.exit_code == 1
    text = (tmp_path / "t.json").read_text()

    def no_bare_nan(token):
        raise AssertionError(f"{token} in the JSON")

    docs = {Path(d["path"]).name: d
            for d in json.loads(text, parse_constant=no_bare_nan)["files"]}
    assert (docs["good.wav"]["status"], docs["bad.wav"]["status"]) == ("ok", "error")
    assert "non-finite scores" in docs["bad.wav"]["reason"]


@pytest.mark.torch
def test_a_model_with_more_outputs_than_named_instruments_is_refused_before_scoring(
        run_tag, library, tmp_path, old_output):
    import torch

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    torch.manual_seed(0)
    wrong = export_model(build_model("att", 4).eval(), {"model": "att", "in_dim": 128,
                         "classes": ["a", "b", "c"]}, tmp_path / "wrong.onnx")
    result = run_tag(library / "other", "--out", old_output, "--model", wrong)
    assert result.exit_code == 2, result.output
    assert "outputs shapes (2, 4)" in result.output
    assert "metadata names 3 instruments" in result.output
    assert old_output.read_text() == "path,status,instrument\nprevious,ok,\n"


@pytest.mark.parametrize("key, value, message", [
    ("instag.in_dim", "12x", "not a positive integer"),
    ("instag.classes", '["a", "a", "b"]', "not a list of distinct names"),
    ("instag.classes", "piano", "malformed"),
])
@pytest.mark.torch
def test_malformed_model_metadata_is_a_clear_error(scoring_model, tmp_path, key, value, message):
    import onnx

    from instag.tagging.scoring import ScoringModel

    proto = onnx.load(str(scoring_model))
    next(p for p in proto.metadata_props if p.key == key).value = value
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(InstagError, match=message):
        ScoringModel(tmp_path / "bad.onnx", "cpu")
