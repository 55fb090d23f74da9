"""Each file's rows back together at the driver, checked: a file is whole only if its rows came
in sequence (0, 1, ...) up to its last row, whose row count matches. A file whose rows are not
all there (a task lost with its errored block, a row dropped) is `incomplete`, for the driver to
report `crashed` (retried next run): never glued onto another file, never missing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Assembled:
    idx: int  # the file, as numbered in the run
    parts: list[np.ndarray] = field(default_factory=list)  # its rows' features, in order
    last: dict | None = None  # its last row (status, reason, samples, size, mtime)
    finite: bool = True  # every row's embeddings were finite
    incomplete: str = ""  # why its rows are not all there ("" when whole)


def files(rows: Iterable[dict], order: Iterable[int],
          on_row: Callable[[dict], None] = lambda row: None) -> Iterator[Assembled]:
    """One `Assembled` per file of `order`, in that order, from `rows` in that order (each
    with `idx`, `block` (its sequence number), `last`, `rows` (the count, on the last row),
    `feats` and `finite`)."""
    pending = iter(order)
    cur: Assembled | None = None
    for row in rows:
        on_row(row)
        idx = int(row["idx"])
        if cur is not None and idx != cur.idx:
            cur.incomplete = cur.incomplete or f"its rows stopped after {len(cur.parts)}"
            yield cur
            cur = None
        if cur is None:
            for waiting in pending:
                if waiting == idx:
                    cur = Assembled(idx)
                    break
                yield Assembled(waiting, incomplete="none of its rows came")
            else:
                return  # a row of no file still expected: nothing after it can be placed
        if int(row["block"]) != len(cur.parts):
            cur.incomplete = cur.incomplete or (f"row {int(row['block'])} came where row "
                                                f"{len(cur.parts)} was due")
        cur.parts.append(row["feats"])
        cur.finite = cur.finite and bool(row["finite"])
        if row["last"]:
            if not cur.incomplete and int(row["rows"]) != len(cur.parts):
                cur.incomplete = f"{len(cur.parts)} of its {int(row['rows'])} rows came"
            cur.last = row
            yield cur
            cur = None
    if cur is not None:
        cur.incomplete = cur.incomplete or f"its rows stopped after {len(cur.parts)}"
        yield cur
    for waiting in pending:
        yield Assembled(waiting, incomplete="none of its rows came")
