"""The advisor's requests, as plain data: a stable, cached prefix and a volatile question.

Order matters for prompt caching. The tools and the system blocks (the rules,
then program.md and kohai.toml, which change only when a human edits them)
form a prefix that is the same for every call on a repository, so it carries
the cache breakpoint and is billed at the cache-read price after the first
call. Everything that changes between calls (baseline, history, plateau, the
experiment under review) goes in the user message after it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import prompts
from agents.context import AdvisorContext, ExperimentRecord
from bot.core.audit import audit_diff
from bot.core.gate import GateDecision
from bot.render import numbers

CACHE = {"type": "ephemeral"}
PROGRAM_CHARS = 24000  # program.md beyond this is clipped in the stable block
CONTEXT_CHARS = 12000  # the rendered research state in each question
_ELSEWHERE = "@@in-the-system-prompt@@"
_MOVED_SECTIONS = (
    f"\n## program.md\n{_ELSEWHERE}\n",
    f"\n## kohai.toml\n```toml\n{_ELSEWHERE}\n```\n",
)


def system_blocks(ctx: AdvisorContext) -> list[dict[str, Any]]:
    """The system prompt: the rules, then the repository's research brief, cache-marked."""
    program = ctx.program_md.strip() or "(this repository has no program.md)"
    if len(program) > PROGRAM_CHARS:
        program = program[:PROGRAM_CHARS] + "\n[... program.md truncated ...]"
    brief = (
        f"# The research program (program.md)\n\n{program}\n\n"
        f"# The problem contract (kohai.toml)\n\n```toml\n{ctx.config_toml.strip()}\n```\n"
    )
    return [
        {"type": "text", "text": prompts.load("advisor_system")},
        {"type": "text", "text": brief, "cache_control": CACHE},
    ]


def research_state(ctx: AdvisorContext) -> str:
    """The volatile part of the context; program.md and kohai.toml are in the system blocks."""
    rendered = replace(ctx, program_md=_ELSEWHERE, config_toml=_ELSEWHERE).render(
        max_chars=CONTEXT_CHARS
    )
    for section in _MOVED_SECTIONS:
        rendered = rendered.replace(section, "")
    rendered = re.sub(r"\n{3,}", "\n\n", rendered)
    return rendered.replace(_ELSEWHERE, "(given in the system prompt)")


def propose_question(ctx: AdvisorContext, student: str) -> str:
    plateau = ""
    if ctx.plateau:
        plateau = prompts.load(
            "advisor_plateau", experiments_since_improvement=ctx.experiments_since_improvement
        )
    if ctx.sent_back:  # novelty: the last proposal repeated an earlier experiment
        plateau += f"\n**Sent back**: {ctx.sent_back}\n"
    return prompts.load(
        "advisor_propose",
        context=research_state(ctx),
        student=student,
        plateau_note=plateau,
        metric=ctx.problem.metric,
        direction=ctx.problem.direction,
    )


def review_question(ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision) -> str:
    if gate.verdict == "merge":
        rule = "You may agree, close it, or ask for changes."
    else:
        rule = (
            "Only the gate can merge: you may close this experiment or ask for changes, "
            "and a `merge` from you will be recorded as one of those."
        )
    failure = f"\nLast failure:\n```\n{experiment.failure}\n```\n" if experiment.failure else ""
    if experiment.diff:
        findings = audit_diff(experiment.diff, experiment.hypothesis).summary()
        fence = "````" if "```" in experiment.diff else "```"
        diff = f"{fence}diff\n{experiment.diff.rstrip()}\n{fence}\n\nStatic check: {findings}"
    else:
        diff = "(no diff was reported for this result)"
    return prompts.load(
        "advisor_review",
        context=research_state(ctx),
        label=experiment.label,
        title=experiment.title,
        student=experiment.student or "unassigned",
        hypothesis=experiment.hypothesis or experiment.title,
        diff_summary=experiment.diff_summary or "(no summary)",
        measured=_measured(experiment),
        failure=failure,
        diff=diff,
        gate=gate_summary(gate),
        gate_verdict=gate.verdict,
        gate_rule=rule,
    )


def gate_summary(gate: GateDecision) -> str:
    rows = [
        ("verdict", gate.verdict),
        ("candidate", _mean(gate.candidate_mean, gate.candidate_std, gate.n_candidate)),
        ("baseline", _mean(gate.baseline_mean, gate.baseline_std, gate.n_baseline)),
        (
            "delta",
            numbers.number(gate.delta, ".4g", missing="n/a")
            + (
                f" ± {numbers.number(gate.delta_se, '.4g', missing='n/a')}" if gate.delta_se else ""
            ),
        ),
        (
            "p-value (one-sided paired t-test)"
            if gate.method == "paired"
            else "p-value (one-sided Welch)",
            numbers.number(gate.p_value, ".4g", missing="n/a"),
        ),
        ("failed seeds", str(gate.n_failed)),
    ]
    table = "\n".join(f"- {name}: {value}" for name, value in rows)
    return f"{table}\n\n{gate.rationale}"


def _measured(r: ExperimentRecord) -> str:
    text = _mean(r.metric_mean, r.metric_std, r.n_seeds)
    return f"{text}, {r.n_failed} failed seed(s)" if r.n_failed else text


def _mean(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return f"not measured (n={n})"
    return f"{numbers.number(mean, '.4g', missing='n/a')} ± {numbers.number(std or 0.0, '.4g', missing='n/a')} (n={n})"
