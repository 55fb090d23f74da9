from pathlib import Path

import numpy as np
import pytest

from instag.common.errors import UsageError
from instag.tagging.segments import (
    MERGE_GAP,
    MIN_SEGMENT,
    SegmentRule,
    attention_segments,
    format_segments,
    merge_segments,
)


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


# -- a file's segments: its bags' under the segment rule ------------------------------------------
@pytest.mark.parametrize("rule, bags, file", [
    pytest.param(SegmentRule(min_segment=2.0, merge_gap=0.0), [(0.0, 3.84), (7.68, 8.64)],
                 [(0.0, 3.84)], id="a fragment shorter than min_segment is dropped"),
    pytest.param(SegmentRule(min_segment=1.92, merge_gap=0.0), [(0.0, 1.92), (7.68, 8.64)],
                 [(0.0, 1.92)], id="one exactly min_segment long is kept"),
    pytest.param(SegmentRule(min_segment=0.0, merge_gap=1.0), [(0.0, 1.92), (2.88, 4.8)],
                 [(0.0, 4.8)], id="a gap of at most merge_gap is closed"),
    pytest.param(SegmentRule(min_segment=0.0, merge_gap=1.0), [(0.0, 1.92), (3.84, 4.8)],
                 [(0.0, 1.92), (3.84, 4.8)], id="a wider gap stays"),
    pytest.param(SegmentRule(min_segment=2.0, merge_gap=1.0),
                 [(0.0, 0.96), (1.92, 2.88), (3.84, 4.8)], [(0.0, 4.8)],
                 id="gaps are closed before short runs are dropped"),
    pytest.param(SegmentRule(min_segment=3.0, merge_gap=0.0), [(0.0, 0.96), (4.8, 6.72)],
                 [(4.8, 6.72)], id="an instrument whose runs are all short keeps its longest"),
    pytest.param(SegmentRule(min_segment=0.0, merge_gap=0.0),
                 [(5.0, 6.0), (0.0, 1.0), (0.96, 2.0)], [(0.0, 2.0), (5.0, 6.0)],
                 id="at zero: the union of the bags' segments"),
    pytest.param(SegmentRule(min_segment=2.0, merge_gap=2.0), [(9.6, 10.56), (0.0, 9.6)],
                 [(0.0, 10.56)], id="runs of two bags that follow on are one"),
    pytest.param(SegmentRule(), [], [], id="no segments, none"),
])
def test_the_segment_rule_makes_a_files_segments_from_its_bags(rule, bags, file):
    assert rule.apply(bags) == file


def test_the_default_rule_is_the_one_measured_on_planted_data():
    # bench/segment_rule.py rule; the table is in docs/explanation/segments.md
    assert (MIN_SEGMENT, MERGE_GAP) == (0.0, 2.0)
    assert SegmentRule() == SegmentRule(MIN_SEGMENT, MERGE_GAP)
    from instag.tagging.options import TagOptions
    assert TagOptions().segment_rule() == SegmentRule()


@pytest.mark.parametrize("keyword, value", [("min_segment", -1.0), ("merge_gap", float("nan")),
                                            ("merge_gap", float("inf")), ("min_segment", "2")])
def test_a_rule_that_is_not_seconds_is_refused_naming_the_option(keyword, value):
    from instag.tagging.options import TagOptions

    with pytest.raises(UsageError, match=f"{keyword}=.*seconds, 0 or more"):
        TagOptions(**{keyword: value})


def test_the_cli_refuses_a_negative_gap_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from instag.cli import app

    (tmp_path / "t.csv").write_text("path,status\n")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "t.csv"), "--out",
                                      str(tmp_path / "x"), "--merge-gap", "-1"])
    assert result.exit_code == 2 and "--merge-gap -1.0: needs a number of seconds" in \
        result.output
