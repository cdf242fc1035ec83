"""The demo gives each student's host its own cores, so contention never passes for an effect."""

from __future__ import annotations

import pytest

from bot.cli.demo import cpu_shares


@pytest.mark.parametrize(
    ("students", "cpus", "expected"),
    [
        (2, {0, 1}, [{0}, {1}]),
        (2, {0, 1, 2, 3}, [{0, 2}, {1, 3}]),
        (3, {0, 1, 2, 3, 4, 5, 6}, [{0, 3, 6}, {1, 4}, {2, 5}]),
        (1, {0, 1}, [{0, 1}]),
        (3, {0, 1}, [{0, 1}, {0, 1}, {0, 1}]),  # fewer cores than students: all share
    ],
)
def test_cpu_shares(students: int, cpus: set[int], expected: list[set[int]]) -> None:
    shares = cpu_shares(students, cpus)
    assert shares == expected
    if len(cpus) >= students:
        assert all(not (a & b) for i, a in enumerate(shares) for b in shares[i + 1 :])


def test_the_default_is_this_process_s_cores() -> None:
    import os

    assert set().union(*cpu_shares(2)) == os.sched_getaffinity(0)
