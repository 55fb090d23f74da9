"""Group a file's instances into bags, each knowing its time span in the file.

``full``: the whole file is one bag of any length (Eq. 3 normalises the attention weights over the
bag, so the score does not depend on its length). ``N``: consecutive bags of N instances (N = 10
matches OpenMIC's 10 s clips), every ``hop`` instances (default N: no overlap); the last, shorter
bag is kept so that the end of the file is scored too.
"""

from __future__ import annotations

from dataclasses import dataclass

from instag.common.errors import InstagError, UsageError
from instag.common.spelling import option, said
from instag.features.instances import INSTANCE_SECONDS


@dataclass(frozen=True)
class Bag:
    first: int  # index of the first instance
    stop: int  # one past the last instance

    @property
    def length(self) -> int:
        return self.stop - self.first

    @property
    def start_s(self) -> float:
        return round(self.first * INSTANCE_SECONDS, 6)

    @property
    def end_s(self) -> float:
        return round(self.stop * INSTANCE_SECONDS, 6)


def parse_bag_mode(text: str) -> int | None:
    """'full' -> None (one bag per file); 'N' -> N instances per bag."""
    if text == "full":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InstagError(f"--bag {text!r}: expected 'full' or a positive number of instances",
                          "e.g. --bag 10 for OpenMIC-sized 9.6 s bags")
    return n


def check_bag_setting(size: int | None, hop: int | None) -> None:
    """A hop needs a bag size, and may not skip instances: every instance is in some bag."""
    if hop is not None and size is None:
        raise UsageError(f"{said('hop', hop)} without {option('bag')} N",
                         f"give the bag size too, e.g. {said('bag', 10)}")
    if hop is not None and size is not None and hop > size:
        raise UsageError(f"{said('hop', hop)} is larger than {said('bag', size)}: the "
                         "instances between bags would never be scored",
                         f"use {said('hop', size)} or less")


def make_bags(n_instances: int, size: int | None = None, hop: int | None = None,
              exact: bool = False) -> list[Bag]:
    """Bags over n_instances: one bag when size is None, else windows of `size` every `hop`.

    `exact` (models that take exactly `size` instances): the last window is aligned to the end
    of the file, overlapping the one before, instead of being shorter; a file of fewer than
    `size` instances has no bag.
    """
    if n_instances <= 0:
        return []
    if size is None:
        return [Bag(0, n_instances)]
    hop = hop or size
    if size < 1 or hop < 1:
        raise InstagError(f"bag size {size} and hop {hop} must be positive")
    if exact and n_instances < size:
        return []
    bags = []
    for first in range(0, n_instances, hop):
        if exact and first + size > n_instances:
            first = n_instances - size
        bags.append(Bag(first, min(first + size, n_instances)))
        if first + size >= n_instances:
            break
    return bags
