"""The job protocol between the bot and GPU hosts, as plain JSON-able dataclasses.

Shared by both sides and kept to the standard library: hosts do not install
the server's dependencies. The bot leases a `Job`; the host streams
`JobEvent`s and finishes with one `JobResult` (posting it twice is harmless).
"""

from __future__ import annotations

import math
import re
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

# What a host reports is a claim: the bot checks its shape before it stores or
# shows any of it (`JobEvent.check`, `JobResult.check`; the host API answers 400).
SHA = re.compile(r"[0-9a-f]{40}")
PHASE = re.compile(r"[a-z][a-z_-]{0,39}")
# The phase event a host sends when one seed of a running job has finished (its metric in
# `metrics`, none when it failed): not a phase of the job, a result shown sooner.
MEASURED_PHASE = "measured"
EVENT_KINDS: frozenset[str] = frozenset({"heartbeat", "phase", "progress", "log"})
MAX_METRICS = 256  # names in one progress event or one run's final line
MAX_NAME_CHARS = 200  # a metric's name
MAX_LINES = 1000  # log lines in one event
MAX_LINE_CHARS = 10_000
MAX_TEXT_CHARS = 100_000  # a reason, the notes, a log tail: clipped to this (the store keeps less)
MAX_CURVE_POINTS = 100_000
URL_DROPPED = (
    "W&B URL of seed {seed} dropped: a link must be https:// without spaces, brackets, "
    "quotes or angle brackets"
)


MAX_URL_CHARS = 2000
# A URL a host reports is shown as a link only when it is https:// and holds
# nothing that can end the markdown link or the HTML attribute it is put in.
_URL = re.compile(r"https://[^\s\[\]()<>\"'`\\{}|^]+")


def https_url(value: object) -> str | None:
    """`value` when it is an https:// URL safe to link to, else None (it is dropped).

    Safe: https only (no `javascript:`, `data:` or plain http), at most
    MAX_URL_CHARS, and no spaces, brackets, quotes, angle brackets or
    backslashes that could end the markdown link or HTML attribute around it.
    """
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        return None
    return value if _URL.fullmatch(value) and len(value) > len("https://") else None


class ProtocolError(ValueError):
    """A host's message that does not fit the protocol; the host API answers 400 with it."""


def is_sha(value: object) -> bool:
    """A full commit sha: 40 lowercase hex characters, nothing else."""
    return isinstance(value, str) and SHA.fullmatch(value) is not None


def _optional_sha(value: object, where: str) -> None:
    if value is not None and not is_sha(value):
        raise ProtocolError(f"{where} must be a commit sha of 40 hex characters")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional_int(value: object, where: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ProtocolError(f"{where} must be an integer")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a string")
    return value


_LABEL_BAD = re.compile(r"[^A-Za-z0-9 ._:()+/-]")


def _label(value: str) -> str:
    """A host's name or GPU kind as a plain label ("NVIDIA H100 80GB HBM3", "cpu"):
    other characters become "?", so it reads the same in a code span, a cell or a log.
    """
    return _LABEL_BAD.sub("?", " ".join(value.split()))[:MAX_NAME_CHARS]


def _metrics(value: object, where: str) -> None:
    """Names (bounded strings) to finite numbers: names reach the dashboard and the store."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must map names to numbers")
    if len(value) > MAX_METRICS:
        raise ProtocolError(f"{where} has more than {MAX_METRICS} names")
    for name, number in value.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
            raise ProtocolError(f"{where}: a name must be 1 to {MAX_NAME_CHARS} characters")
        if not _number(number):
            raise ProtocolError(f"{where} must map names to numbers: {name[:40]!r} is not finite")


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

    def check(self) -> None:
        """Raise ProtocolError unless every field has the protocol's shape and bounds.

        A phase is a short lowercase word (it is stored and shown), a sha is
        40 hex characters, metrics map bounded names to finite numbers; log
        lines are clipped (the last MAX_LINES, each MAX_LINE_CHARS at most).
        """
        if self.kind not in EVENT_KINDS:
            raise ProtocolError(f"kind must be one of {sorted(EVENT_KINDS)}")
        if self.phase is not None and (
            not isinstance(self.phase, str) or not PHASE.fullmatch(self.phase)
        ):
            raise ProtocolError("phase must be a lowercase word (at most 40 characters)")
        _optional_int(self.seed, "seed")
        _optional_int(self.step, "step")
        _metrics(self.metrics, "metrics")
        if not isinstance(self.lines, list):
            raise ProtocolError("lines must be a list of strings")
        lines = self.lines[-MAX_LINES:]  # a flood keeps its end
        self.lines = [_text(line, "a log line")[:MAX_LINE_CHARS] for line in lines]
        _optional_sha(self.head_sha, "head_sha")
        if not isinstance(self.lease_id, str):
            raise ProtocolError("lease_id must be a string")


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

    def check(self) -> str | None:
        """Raise ProtocolError for a run that does not fit the protocol; drop a W&B URL
        that is not a safe https:// link, returning the note that says so."""
        where = f"run of seed {self.seed}"
        _optional_int(self.seed, "seed")
        _metrics(self.metrics, f"{where}: metrics")
        if not isinstance(self.curve, list) or len(self.curve) > MAX_CURVE_POINTS:
            raise ProtocolError(f"{where}: curve must be a list of [step, value] points")
        if not all(isinstance(p, list) and all(_number(v) for v in p) for p in self.curve):
            raise ProtocolError(f"{where}: a curve point must be a list of finite numbers")
        for name in ("reason", "log_tail", "wandb_url", "host", "gpu_kind"):
            _text(getattr(self, name), f"{where}: {name}")
        # Texts are clipped, not refused: a long log must not cost the measurement.
        self.reason = self.reason[:MAX_TEXT_CHARS]
        self.log_tail = self.log_tail[-MAX_TEXT_CHARS:]
        self.host, self.gpu_kind = _label(self.host), _label(self.gpu_kind)
        if self.wandb_url and https_url(self.wandb_url) is None:
            self.wandb_url = ""
            return URL_DROPPED.format(seed=self.seed)
        return None


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

    def check(self) -> None:
        """Raise ProtocolError unless the result has the protocol's shape and bounds.

        The head sha is 40 hex characters; texts are strings of bounded size;
        a W&B URL that is not a safe https:// link is dropped and `notes`
        says so. Whether the result fits its job (seeds, statuses, the lease)
        is the job book's decision (`bot.engine.jobs.validate_result`).
        """
        _optional_sha(self.head_sha, "head_sha")
        for name in ("reason", "notes", "lease_id", "diff"):
            _text(getattr(self, name), name)
        self.reason, self.notes = self.reason[:MAX_TEXT_CHARS], self.notes[:MAX_TEXT_CHARS]
        for name in ("changed_files", "reverted_files"):
            paths = getattr(self, name)
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ProtocolError(f"{name} must be a list of paths")
        dropped = [note for run in self.runs if (note := run.check())]
        if dropped:
            self.notes = "\n".join(n for n in [self.notes, *dropped] if n)
