"""The gate's veto over the advisor's review: code decides, the model explains.

A review may close or send back what the gate would merge, never merge what
the gate did not. When the model says "merge" against the gate, the verdict
becomes "changes" if the experiment failed to run (a fix may rescue the
hypothesis) and "close" otherwise (the measurement simply did not clear the
bar, and no change request would alter that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents.context import ExperimentRecord
from bot.core.gate import GateDecision

Verdict = Literal["merge", "close", "changes"]


@dataclass(frozen=True)
class Reconciled:
    verdict: Verdict
    overruled: bool  # the model's verdict was replaced
    note: str  # why, for the rationale; "" when not overruled


def reconcile(
    model_verdict: Verdict, gate: GateDecision, experiment: ExperimentRecord
) -> Reconciled:
    if model_verdict != "merge" or gate.verdict == "merge":
        return Reconciled(model_verdict, overruled=False, note="")
    crashed = experiment.n_failed > 0 or bool(experiment.failure)
    verdict: Verdict = "changes" if crashed else "close"
    why = "some seeds failed to run" if crashed else "the improvement is not significant"
    note = (
        f"The advisor suggested merging, but the gate's verdict is {gate.verdict!r} ({why}); "
        f"only the gate can merge, so this is recorded as {verdict!r}."
    )
    return Reconciled(verdict, overruled=True, note=note)


def feedback_with_failure(feedback: str, experiment: ExperimentRecord) -> str:
    """The reviewer's feedback, followed by the failure's log tail when the run crashed.

    The student's debug prompt is chosen from this text, so a crash's log must
    travel with the change request rather than depend on the model quoting it.
    """
    if not experiment.failure or experiment.failure in feedback:
        return feedback
    log = f"Last failure reported by the harness:\n{experiment.failure}"
    return f"{feedback.strip()}\n\n{log}".strip()
