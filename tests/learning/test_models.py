import pytest

pytest.importorskip("torch")

import torch

from instag.learning.models import build_model

pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    "name, expected", [("att", 55_336), ("fc_t", 52_116), ("fc", 986_772), ("rnn", 226_068)]
)
def test_parameter_counts_are_the_papers(name, expected):
    model = build_model(name, n_classes=20, in_dim=128)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("cnn")


def _att():
    torch.manual_seed(0)
    return build_model("att").eval()


def test_att_is_invariant_to_instance_order():
    model, x = _att(), torch.rand(3, 10, 128)
    perm = torch.randperm(10)
    bag, inst, att = model(x)
    bag_p, inst_p, att_p = model(x[:, perm])
    torch.testing.assert_close(bag, bag_p)
    torch.testing.assert_close(att[:, perm], att_p)


@pytest.mark.parametrize("length", [1, 600])
def test_att_takes_bags_of_any_length(length):
    bag, inst, att = _att()(torch.rand(2, length, 128))
    assert bag.shape == (2, 20) and inst.shape == att.shape == (2, length, 20)
    assert bool(((bag >= 0) & (bag <= 1)).all())


def test_attention_weights_sum_to_one_over_the_bag():
    _, _, att = _att()(torch.rand(4, 37, 128))
    torch.testing.assert_close(att.sum(dim=1), torch.ones(4, 20))


def test_bag_probability_is_attention_weighted_instance_probability():
    bag, inst, att = _att()(torch.rand(2, 10, 128))
    torch.testing.assert_close(bag, (att * inst).sum(dim=1))


@pytest.mark.parametrize("name", ["att", "fc_t"])
def test_padded_instances_change_nothing(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(1, 57, 128)
    padded = torch.cat([x[:, :3], torch.rand(1, 54, 128)], dim=1)
    mask = torch.zeros(1, 57, dtype=torch.bool)
    mask[:, :3] = True
    alone, padded_out = model(x[:, :3]), model(padded, mask)
    torch.testing.assert_close(padded_out[0], alone[0])
    assert float(padded_out[2][:, 3:].abs().max()) == 0.0


def test_fc_needs_ten_instances():
    with pytest.raises(ValueError, match="10"):
        build_model("fc").eval()(torch.rand(1, 9, 128))


def test_the_networks_are_importable_classes_that_build_model_makes():
    """The paper's networks live at module level (documented, imported, subclassed), and
    `build_model` makes exactly those."""
    from instag.learning import networks

    assert isinstance(build_model("att"), networks.Attention)
    assert isinstance(build_model("fc_t"), networks.FCT)
    assert build_model("att_uniform").uniform


def test_the_networks_dropout_is_torchs_in_training_and_nothing_in_evaluation():
    from instag.learning.networks import Dropout

    torch.manual_seed(0)
    x = torch.ones(2000, 128)
    drop = Dropout(0.6)
    out = drop.train()(x)
    assert abs(float((out == 0).float().mean()) - 0.6) < 0.01  # each unit dropped with p
    assert set(out.unique().tolist()) == {0.0, 2.5}  # the rest scaled by 1 / (1 - p)
    assert torch.equal(drop.eval()(x), x)
