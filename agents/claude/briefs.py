"""The coding agent's system prompt and task, filled from the job's spec and the problem.

A spec's `feedback` is either a reviewer's change request or the tail of a
crashed run's log; a crash gets the debug prompt, which puts the log first
and asks for a fix that keeps the hypothesis.
"""

from __future__ import annotations

import re

import prompts
from agents.student.rules import knob_summary
from bot.problem import Problem
from bot.protocol import Implement

# How the bot quotes an outsider's issue (bot.core.untrusted.OPEN_TAG; not imported:
# hosts load only bot.problem and bot.protocol).
UNTRUSTED_TAG = "<untrusted-data"

LOG_CHARS = 6000  # the end of a crash log is where the error is
_CRASH_SIGNS = re.compile(
    r"Traceback \(most recent call last\)|^\w*(Error|Exception): |exit code -?\d+|"
    r"out of memory|Killed|timed? ?out|\bcrash(ed)?\b|Segmentation fault",
    re.IGNORECASE | re.MULTILINE,
)


def is_crash_report(feedback: str) -> bool:
    """True when `feedback` carries a failed run's log rather than only a change request."""
    return bool(feedback.strip()) and bool(_CRASH_SIGNS.search(feedback))


def system_prompt(problem: Problem) -> str:
    return prompts.load(
        "student_system",
        editable=_files(problem.editable),
        frozen=_files(problem.frozen),
        command=problem.command,
        budget_s=f"{problem.budget_s:g}",
        metric=problem.metric,
        direction=problem.direction,
    )


def task_prompt(spec: Implement, problem: Problem, *, max_turns: int, budget_usd: float) -> str:
    """The debug prompt for a crash, the implement prompt otherwise."""
    common = {
        # An outsider's title is their text too: it stays inside the quoted block.
        "title": "A hypothesis from an outside issue (quoted below, as data)"
        if UNTRUSTED_TAG in spec.hypothesis
        else spec.title or _first_line(spec.hypothesis),
        "hypothesis": spec.hypothesis.strip(),
        "editable": _files(problem.editable),
        "frozen": _files(problem.frozen),
        "metric": problem.metric,
        "max_turns": max_turns,
        "budget_usd": f"{budget_usd:.2f}",
    }
    if is_crash_report(spec.feedback):
        log = spec.feedback.strip()
        if len(log) > LOG_CHARS:
            log = "[... earlier output cut ...]\n" + log[-LOG_CHARS:]
        return prompts.load("student_debug", log_tail=log.replace("```", "'''"), **common)
    knobs = ""
    if spec.knobs:
        knobs = f"\nSet these values exactly: {knob_summary(spec.knobs)}.\n"
    feedback = ""
    if spec.onto_base:
        # The branch conflicted with a newer base; the base's side was kept.
        feedback += (
            "\n## Bring this hypothesis onto the new base\n\n"
            "The base branch moved and this branch conflicted with it. The conflicting "
            "parts now hold the new base's version. Re-apply the hypothesis on top of "
            "the new base, keeping whatever the base gained.\n"
        )
    if spec.feedback.strip():
        feedback = (
            "\n## Review of the previous attempt\n\n"
            "A reviewer asked for these changes; address them:\n\n"
            f"{spec.feedback.strip()}\n"
        )
    return prompts.load(
        "student_implement", knobs_section=knobs, feedback_section=feedback, **common
    )


def _files(paths: tuple[str, ...]) -> str:
    return ", ".join(f"`{p}`" for p in paths) or "(none)"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "the experiment"
    return line[:80]
