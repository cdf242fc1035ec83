"""Chaos, small: the bot SIGKILLed twice, a host killed, GitHub answering 502s and rate limits.

Three labelled issues on a tiny problem with two hosts; two of the three
hypotheses beat the baseline, so the run also goes through serialized merges,
re-measuring on each new base and conflicts handed back to the students.
Afterwards nothing may be lost, doubled or stuck (see `tests/support/chaos.py`).
"""

from __future__ import annotations

from pathlib import Path

from bot.cli.chaos import run_chaos


def test_nothing_lost_doubled_or_stuck_under_kills_and_faults(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, issues=3, bot_kills=2, faults=2, seed=1, settle_s=45.0)
    assert report.kills == {"bot": 2, "host": 1}, report.log
    assert report.experiments == 3
    assert report.runs >= 6  # baselines and candidates were measured, not skipped
    assert report.violations == dict.fromkeys(report.violations, 0), (report.violations, report.log)
