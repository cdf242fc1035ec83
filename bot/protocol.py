"""The job protocol between the bot and GPU hosts, as plain JSON-able dataclasses.

Shared by both sides and kept to the standard library: hosts do not install
the server's dependencies. The bot leases a `Job`; the host streams
`JobEvent`s and finishes with one `JobResult` (posting it twice is harmless).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

JobKind = Literal["experiment", "baseline"]
# ok: the sealed evaluator (or, unsealed, the script) gave the metric; invalid: a
# check failed (the evaluator's, a frozen file, a stray file); crash, timeout;
# refused: the diff check before training; stopped-early: trailing the
# baseline's curve; cancelled: stopped by a human or the bot, never a failure.
RunStatus = Literal["ok", "invalid", "crash", "timeout", "refused", "stopped-early", "cancelled"]
RUN_STATUSES: frozenset[str] = frozenset(
    {"ok", "invalid", "crash", "timeout", "refused", "stopped-early", "cancelled"}
)
# Run statuses that count against a candidate in the gate.
FAILED_RUN_STATUSES: frozenset[str] = frozenset({"invalid", "crash", "timeout"})
# What a whole job came to: every seed ran ("ok", even if some crashed), the
# run was refused before training (diff check), the student could not
# implement, or the job was cancelled.
JobStatus = Literal["ok", "crash", "timeout", "refused", "implement_failed", "cancelled"]
JOB_STATUSES: frozenset[str] = frozenset(
    {"ok", "crash", "timeout", "refused", "implement_failed", "cancelled"}
)
T = TypeVar("T")
EventKind = Literal["heartbeat", "phase", "progress", "log"]

LEASE_SECONDS = 60.0
MAX_ATTEMPTS = 3


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, ignoring unknown keys (newer peers may send more)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Implement:
    """What the student must do to the PR's branch before training, if anything."""

    hypothesis: str
    title: str = ""
    knobs: dict[str, Any] = field(default_factory=dict)  # offline: knob values to set
    mode: Literal["offline", "claude"] = "offline"
    feedback: str = ""  # reviewer's change request or a crash's log tail
    # The branch conflicts with a new base: bring the hypothesis onto it (the
    # base's side wins the conflicting hunks, then the student re-applies).
    onto_base: bool = False


@dataclass
class Job:
    id: int
    kind: JobKind
    student: str
    repo: str  # owner/name
    clone_url: str  # smart-HTTP URL; authenticate as x-access-token:<token>
    token: str  # installation token narrowed to this repo, contents read (hosts never push)
    token_expires_at: str
    base_ref: str
    base_sha: str
    seeds: list[int]
    attempt: int = 1
    experiment_id: int | None = None
    pr_number: int | None = None
    head_ref: str | None = None  # None for a baseline
    head_sha: str | None = None
    implement: Implement | None = None
    wandb_group: str = ""
    gpus: list[int] = field(default_factory=list)
    # This lease's identity: events, `complete` and `release` name it; the bot
    # answers 409 to any lease of the job that is no longer the current one.
    lease_id: str = ""
    # The base's ok baseline curves ([step, train_loss] points, one list per seed),
    # sent with experiment jobs when the problem declares [train] early_stop.
    baseline_curves: list[list[list[float]]] = field(default_factory=list)
    # The seed of each of `baseline_curves`, position by position (None: unknown).
    # A separate list, so hosts that predate it read the curves as before; a bot
    # that predates it sends none, and every curve is then unmatched.
    baseline_curve_seeds: list[int | None] = field(default_factory=list)
    # The lab's pooled correlation of matched seeds (None: too few comparisons),
    # for the band of paired early stopping.
    seed_correlation: float | None = None

    def matched_curve(self, seed: int) -> list[list[float]] | None:
        """The baseline curve of this seed (the first one sent), None without one.

        Hostile or malformed entries (a seed that is not an integer, more seeds
        than curves) match nothing.
        """
        for curve, curve_seed in zip(self.baseline_curves, self.baseline_curve_seeds, strict=False):
            if type(curve_seed) is int and curve_seed == seed and isinstance(curve, list):
                return curve
        return None

    def lab_seed_correlation(self) -> float | None:
        """`seed_correlation` if it is a finite number in [-1, 1], else None (unknown)."""
        rho = self.seed_correlation
        if isinstance(rho, bool) or not isinstance(rho, int | float):
            return None
        return float(rho) if -1.0 <= rho <= 1.0 else None  # NaN fails the bounds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        job = _from_dict(cls, data)
        if isinstance(job.implement, dict):
            job.implement = _from_dict(Implement, job.implement)
        return job


@dataclass
class JobEvent:
    """Progress from a host; every event also extends the lease."""

    kind: EventKind
    phase: str | None = None  # implementing | training
    seed: int | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    head_sha: str | None = None
    lease_id: str = ""  # the lease this event belongs to

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobEvent:
        return _from_dict(cls, data)


@dataclass
class RunResult:
    """One seed's run, as measured by the harness (never by an agent)."""

    seed: int
    status: RunStatus
    metric: float | None = None  # the primary metric named in kohai.toml
    metrics: dict[str, float] = field(default_factory=dict)  # the final line, all of it
    curve: list[list[float]] = field(default_factory=list)  # [step, train_loss] points
    duration_s: float = 0.0
    peak_mem_mb: float = 0.0
    gpu_hours: float = 0.0
    exit_code: int | None = None
    reason: str = ""
    log_tail: str = ""
    wandb_url: str = ""
    # Trust: the metric came from the frozen [eval] command (False: the script's
    # own claim, shown as "unsealed"); the run was inside the job sandbox.
    sealed: bool = False
    sandboxed: bool = False
    train_s: float = 0.0  # how long training really ran
    eval_s: float = 0.0  # how long the sealed evaluation ran
    host: str = ""  # the student/host that ran it
    gpu_kind: str = ""  # hardware class, e.g. "cpu" or "NVIDIA H100 80GB HBM3"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return _from_dict(cls, data)


# Ends a `JobResult.diff` that was cut short or could not be made: the audit fails it.
DIFF_INCOMPLETE = "[kohai: diff incomplete]"
MAX_DIFF_CHARS = 200_000


@dataclass
class JobResult:
    status: JobStatus
    runs: list[RunResult] = field(default_factory=list)
    head_sha: str | None = None  # the commit that was trained
    reason: str = ""
    changed_files: list[str] = field(default_factory=list)
    reverted_files: list[str] = field(default_factory=list)
    cost_usd: float = 0.0  # LLM cost of implementing
    notes: str = ""
    lease_id: str = ""  # the lease this result belongs to
    smoke_s: float = 0.0  # seconds the coding agent spent smoke-running the training command
    # The PR's diff (base...head), for the hypothesis-vs-diff audit (bot/core/audit.py).
    diff: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        result = _from_dict(cls, data)
        result.runs = [
            r if isinstance(r, RunResult) else RunResult.from_dict(r) for r in result.runs
        ]
        return result
