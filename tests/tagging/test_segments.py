from pathlib import Path

import numpy as np

from instag.tagging.segments import attention_segments, format_segments, merge_segments


def test_instances_above_the_uniform_weight_form_the_segment():
    w = np.array([0.05, 0.05, 0.4, 0.4, 0.05, 0.05])  # uniform would be 1/6
    assert attention_segments(w) == [(1.92, 3.84)]


def test_separate_runs_give_separate_segments():
    w = np.array([0.3, 0.05, 0.05, 0.3, 0.3])
    assert attention_segments(w) == [(0.0, 0.96), (2.88, 4.8)]


def test_uniform_attention_points_at_the_whole_bag():
    assert attention_segments(np.full(10, 0.1)) == [(0.0, 9.6)]


def test_attention_that_ripples_around_uniform_points_at_the_whole_bag():
    # a steady sine: 0.989-1.011 of uniform, which the plain rule cut into 8 fragments
    w = 0.1 * (1 + 0.011 * np.sin(np.arange(30) * 2.1))
    assert attention_segments(w / w.sum()) == [(0.0, 28.8)]


def test_attention_within_half_again_of_uniform_either_way_is_evenly_spread():
    fair = 0.1
    assert attention_segments(np.array([fair * 1.45] * 2 + [fair * 0.8875] * 8)) == [(0.0, 9.6)]
    # one instance at 1.6 x its fair share is a place attention points to
    assert attention_segments(np.array([fair * 1.6] + [fair * 0.9333] * 9)) == [(0.0, 0.96)]
    # ... and so is one the attention leaves out (a fifth of its share)
    w = np.array([fair * 0.2] + [fair * 1.0889] * 9)
    assert attention_segments(w) == [(0.96, 9.6)]


def test_a_one_instance_bag_is_its_own_segment():
    assert attention_segments(np.array([1.0])) == [(0.0, 0.96)]


def test_segments_are_in_seconds_from_the_start_of_the_file():
    w = np.array([0.0, 0.0, 1.0] + [0.0] * 7)
    assert attention_segments(w, first_instance=20) == [(21.12, 22.08)]


def test_overlapping_and_touching_segments_merge():
    assert merge_segments([(5.0, 6.0), (0.0, 1.0), (0.96, 2.0), (5.5, 7.0)]) == \
        [(0.0, 2.0), (5.0, 7.0)]


def test_segments_format_as_start_end_pairs():
    assert format_segments([(0.0, 0.96), (2.88, 4.8)]) == "0.00-0.96;2.88-4.80"


def test_presence_is_decided_on_the_unrounded_probability():
    from instag.outputs.forms import file_document
    from instag.tagging.bags import Bag
    from instag.tagging.results import FileResult, bag_result

    bag = bag_result(Bag(0, 1), ("piano",), np.array([0.49996]), np.ones((1, 1)),
                     np.ones((1, 1)), {"piano": 0.5})
    assert bag.present == []
    doc = file_document(FileResult(Path("a.wav"), "ok", duration=1.0, bags=[bag]))
    assert doc["bags"][0]["probabilities"] == {"piano": 0.5}  # rounded only when written
