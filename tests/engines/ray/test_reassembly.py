"""The Ray driver puts each file's rows back together, checked: a file with rows missing is
incomplete (reported `crashed`), never glued onto another file, never missing."""

import numpy as np
import pytest

from instag.engines.ray.reassembly import files


def rows_of(idx: int, n: int) -> list[dict]:
    """The rows a decode task sends for file `idx`: n rows, the last with the count."""
    return [{"idx": idx, "block": b, "last": b == n - 1, "rows": n if b == n - 1 else -1,
             "feats": np.full((2, 128), 10 * idx + b, np.uint8), "finite": True}
            for b in range(n)]


def outcome(stream: list[dict], order=(0, 1, 2)) -> list[tuple[int, str, list[int]]]:
    return [(f.idx, "whole" if not f.incomplete else "incomplete",
             [int(p[0, 0]) for p in f.parts]) for f in files(stream, order)]


def test_whole_files_come_out_in_order_with_their_own_rows():
    stream = rows_of(0, 2) + rows_of(1, 3) + rows_of(2, 1)
    assert outcome(stream) == [(0, "whole", [0, 1]), (1, "whole", [10, 11, 12]),
                               (2, "whole", [20])]


@pytest.mark.parametrize("lost", [0, 1, 2], ids=["first", "middle", "last"])
def test_a_file_with_a_row_lost_is_incomplete_and_its_neighbours_are_whole(lost):
    middle = rows_of(1, 3)
    del middle[lost]
    got = outcome(rows_of(0, 2) + middle + rows_of(2, 1))
    assert [(i, state) for i, state, _ in got] == [(0, "whole"), (1, "incomplete"),
                                                  (2, "whole")]
    assert got[0][2] == [0, 1] and got[2][2] == [20]  # nothing glued onto them


def test_a_file_with_no_rows_at_all_is_incomplete_in_its_place():
    got = outcome(rows_of(0, 1) + rows_of(2, 2))
    assert [(i, state) for i, state, _ in got] == [(0, "whole"), (1, "incomplete"),
                                                  (2, "whole")]


def test_files_whose_rows_stop_at_the_end_are_incomplete():
    got = outcome(rows_of(0, 1) + rows_of(1, 3)[:2])
    assert [(i, state) for i, state, _ in got] == [(0, "whole"), (1, "incomplete"),
                                                  (2, "incomplete")]
