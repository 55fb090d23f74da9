import json

import numpy as np
import pytest
import soundfile as sf
from builders import SR, music

from instag.common.errors import InstagError
from instag.features.instances import instance_span
from instag.tagging.bags import Bag, make_bags, parse_bag_mode


@pytest.mark.parametrize("seconds, instances", [(0, 0), (0.5, 0), (0.96, 1), (9.6, 10),
                                                (10, 10), (601, 626)])
def test_instances_are_the_whole_0_96_s_windows(embedder, seconds, instances):
    feats = embedder.embed_blocks([np.zeros(round(seconds * 16000), np.float32)])
    assert len(feats.values) == instances
    if instances:
        assert instance_span(instances - 1)[1] <= seconds + 1e-9


def test_instance_i_covers_0_96_i_to_0_96_i_plus_1():
    assert instance_span(0) == (0.0, 0.96) and instance_span(625) == (600.0, 600.96)


def test_full_bag_is_the_whole_file():
    (bag,) = make_bags(626, None)
    assert (bag.start_s, bag.end_s, bag.length) == (0.0, 600.96, 626)


def test_ten_instance_bags_keep_the_last_shorter_bag():
    bags = make_bags(626, 10)
    assert len(bags) == 63 and bags[-1] == Bag(620, 626)
    assert (bags[1].start_s, bags[1].end_s) == (9.6, 19.2)


def test_hop_gives_overlapping_bags():
    assert make_bags(25, 10, hop=5) == [Bag(0, 10), Bag(5, 15), Bag(10, 20), Bag(15, 25)]


@pytest.mark.parametrize("n", [0, 10])
def test_short_files(n):
    assert make_bags(n, 10) == ([] if n == 0 else [Bag(0, 10)])


def test_bag_mode_parsing():
    assert parse_bag_mode("full") is None and parse_bag_mode("10") == 10
    with pytest.raises(InstagError, match="--bag"):
        parse_bag_mode("ten")


def test_exact_bags_align_the_last_window_to_the_end_of_the_file():
    assert make_bags(25, 10, exact=True) == [Bag(0, 10), Bag(10, 20), Bag(15, 25)]
    assert make_bags(20, 10, exact=True) == [Bag(0, 10), Bag(10, 20)]


def test_a_file_shorter_than_an_exact_bag_has_none():
    assert make_bags(9, 10, exact=True) == []


# -- 6e. models that take a fixed number of instances --------------------------------------------
@pytest.fixture
def fc_model(tmp_path):
    import torch

    from instag.learning.export import export_model
    from instag.learning.models import build_model

    torch.manual_seed(0)
    return export_model(build_model("fc", 3).eval(), {"model": "fc", "in_dim": 128,
                        "classes": ["c0", "c1", "c2"]}, tmp_path / "fc.onnx")


def test_a_fixed_size_model_scores_the_end_of_a_file_with_an_aligned_last_bag(
        run_tag, fc_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", music(12, 1), SR)  # 12 instances
    sf.write(lib / "b.wav", music(5, 2), SR)  # 5 instances: fewer than the model's 10
    result = run_tag(lib, "--out", tmp_path / "t.json", "--model", fc_model, "--bag", "10")
    assert result.exit_code == 1, result.output
    a, b = json.loads((tmp_path / "t.json").read_text())["files"]
    assert [(g["start_s"], g["end_s"]) for g in a["bags"]] == [(0.0, 9.6), (1.92, 11.52)]
    assert b["status"] == "too_short" and "exactly 10 instances" in b["reason"]


def test_a_fixed_size_model_without_its_bag_size_is_a_usage_error(run_tag, fc_model, library,
                                                                  tmp_path):
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--model", fc_model)
    assert result.exit_code == 2 and "use --bag 10" in result.output
