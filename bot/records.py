"""Typed rows: what the store hands the engine, the job book, the reviewer, the readers
and the workers that drain the inbox and the outbox.

A record is one table's row with its JSON columns decoded and its 0/1 flags as
booleans, so no caller parses `knobs`, `seeds`, `payload` or `curve` itself and
a misspelt column is a type error rather than a `KeyError` at run time.
Changes go through `Store.update` (or `Store.insert`) with column values, never
through a record. Records are snapshots and frozen, except `Experiment`: the
engine's moves (`Engine.move`, `Engine.reassign`) change the row and the record
they were handed together, so a caller holding it sees the state it just caused.

Extra columns in a row (a join's `lab_name`, say) are ignored; a column a
narrow SELECT left out takes the field's default, so `Run` also serves the
light reads that skip curves and log tails.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from bot.core.lifecycle import FINAL_STATES
from bot.problem import DEFAULT_TRACK
from bot.protocol import JobKind

R = TypeVar("R", bound="Record")


def _json(value: Any, kind: type, nullable: bool, verbatim: bool = False) -> Any:
    """A JSON column's value as `kind`: NULL is None (nullable) or empty; broken text is
    empty, or (`verbatim`) the text as stored, for a reader that must refuse it itself."""
    if value is None:
        return None if nullable else kind()
    decoded = value
    if isinstance(value, str):
        try:
            decoded = json.loads(value) if value or verbatim else kind()
        except ValueError:
            decoded = None
    if isinstance(decoded, kind):
        return decoded
    return value if verbatim and isinstance(value, str) else kind()


class Record:
    """What every record shares: its table and how a row becomes one."""

    table: ClassVar[str]
    key: ClassVar[tuple[str, ...]] = ("id",)
    # Columns stored as JSON text, with the type they decode to.
    json_columns: ClassVar[Mapping[str, type]] = {}
    # JSON columns whose NULL means "not yet" and reads as None.
    nullable: ClassVar[tuple[str, ...]] = ()
    # JSON columns whose text, when it is not JSON of the column's type, stays the
    # text as stored (rather than reading as empty), so its reader can refuse it.
    verbatim: ClassVar[tuple[str, ...]] = ()
    # Columns stored as 0/1 that read as booleans.
    flags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """The record of one row given as a mapping (a dict, a join's row)."""
        return cls.reader(tuple(row))(tuple(row.values()))

    @classmethod
    def reader(cls: type[R], columns: Sequence[str]) -> Callable[[Sequence[Any]], R]:
        """What turns rows with these columns, in this order, into records.

        Worked out once per record type and column list: the lease path reads
        every queued job, the outbox worker every pending write.
        """
        key = (cls, tuple(columns))
        read = _READERS.get(key)
        if read is None:
            read = _READERS[key] = _make_reader(cls, key[1])
        return read


_READERS: dict[tuple[type, tuple[str, ...]], Callable[[Sequence[Any]], Any]] = {}


def _make_reader(kind: type[R], columns: tuple[str, ...]) -> Callable[[Sequence[Any]], R]:
    """A reader of rows with `columns`: each field from its column, decoded; a field
    without a column (a narrow SELECT) keeps its default; extra columns are ignored."""
    position = {name: i for i, name in enumerate(columns)}
    steps: list[tuple[str, int, Callable[[Any], Any] | None, Any]] = []
    for f in dataclasses.fields(kind):  # type: ignore[arg-type]
        if f.name not in position:
            continue
        decode: Callable[[Any], Any] | None = None
        if f.name in kind.json_columns:
            decode = functools.partial(
                _json,
                kind=kind.json_columns[f.name],
                nullable=f.name in kind.nullable,
                verbatim=f.name in kind.verbatim,
            )
        elif f.name in kind.flags:
            decode = bool
        fallback = None if f.default is dataclasses.MISSING else f.default
        steps.append((f.name, position[f.name], decode, fallback))

    def read(row: Sequence[Any]) -> R:
        values: dict[str, Any] = {}
        for name, i, decode, fallback in steps:
            value = row[i]
            if decode is not None:
                value = decode(value)
            elif value is None and fallback is not None:
                value = fallback  # a NULL in a column whose reader expects a value
            values[name] = value
        return kind(**values)

    return read


@dataclass(frozen=True, slots=True)
class Repository(Record):
    """An installed repository and what the last sync read on its default branch."""

    table: ClassVar[str] = "repos"
    json_columns: ClassVar[Mapping[str, type]] = {"base_files": dict}
    flags: ClassVar[tuple[str, ...]] = ("active",)

    id: int
    full_name: str
    installation_id: int | None = None
    default_branch: str = "main"
    active: bool = True
    base_sha: str | None = None  # head of the default branch the baseline was measured on
    problem_toml: str | None = None  # kohai.toml at base_sha
    program_md: str | None = None  # program.md at base_sha
    base_files: dict[str, Any] = field(default_factory=dict)  # {path: text} at base_sha
    baseline_problem: str | None = None  # why the baseline cannot be measured, if so
    synced_at: float | None = None  # None: the next sync reads it again
    created_at: float = 0.0


@dataclass(slots=True)
class Experiment(Record):
    """One hypothesis and its PR, through the lifecycle in `bot.core.lifecycle`."""

    table: ClassVar[str] = "experiments"
    json_columns: ClassVar[Mapping[str, type]] = {"knobs": dict}
    flags: ClassVar[tuple[str, ...]] = ("hold", "implemented", "review_requested")

    id: int
    repo_id: int
    state: str
    source: str = "advisor"
    title: str = ""
    hypothesis: str = ""
    student: str | None = None
    issue_number: int | None = None
    pr_number: int | None = None
    branch: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)
    base_sha: str | None = None  # the base the current results were measured on
    head_sha: str | None = None
    hold: bool = False
    seeds_wanted: int = 1
    implemented: bool = False
    review_requested: bool = False
    debug_attempts: int = 0
    feedback: str = ""
    outcome: str | None = None
    cost_usd: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    advisor_failures: int = 0
    advisor_retry_at: float = 0.0
    track: str = DEFAULT_TRACK

    @property
    def final(self) -> bool:
        """Merged or closed: nothing about it changes any more."""
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Job(Record):
    """Work for a host: measure a baseline, or implement and train an experiment."""

    table: ClassVar[str] = "jobs"
    json_columns: ClassVar[Mapping[str, type]] = {
        "seeds": list,
        "payload": dict,
        "result": dict,
        "measured": dict,
    }
    nullable: ClassVar[tuple[str, ...]] = ("result",)
    flags: ClassVar[tuple[str, ...]] = ("cancel",)

    id: int
    kind: JobKind
    repo_id: int
    state: str  # queued | leased | done | failed | cancelled
    experiment_id: int | None = None
    student: str | None = None  # None: any student may take it
    priority: int = 0
    seeds: list[int] = field(default_factory=list)
    base_sha: str | None = None
    attempts: int = 0
    cancel: bool = False
    payload: dict[str, Any] = field(default_factory=dict)  # implement spec, wandb group, ...
    leased_by: str | None = None
    lease_id: str | None = None
    lease_expires: float | None = None
    phase: str | None = None
    last_event_at: float | None = None
    result: dict[str, Any] | None = None  # what the host reported, once finished
    created_at: float = 0.0
    updated_at: float = 0.0
    track: str = DEFAULT_TRACK
    tip_sha: str | None = None  # the commit this job must train: the bot's fact, never the host's
    tip_diff: str | None = None  # the bot's own diff of an accepted push against the job's base
    # Seeds the host said it finished while the job goes on ({"seed": metric or None}): shown
    # in the PR's results as they come, as the host's report; the completion is what counts.
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def implement(self) -> dict[str, Any]:
        """The implement spec; empty for a job that only trains."""
        spec = self.payload.get("implement")
        return spec if isinstance(spec, dict) else {}


@dataclass(frozen=True, slots=True)
class Run(Record):
    """One seed's measurement, as a host reported it."""

    table: ClassVar[str] = "runs"
    json_columns: ClassVar[Mapping[str, type]] = {"metrics": dict, "curve": list}
    flags: ClassVar[tuple[str, ...]] = ("sealed", "sandboxed")

    id: int
    repo_id: int
    kind: str  # candidate | baseline
    seed: int
    status: str  # ok | crash | timeout | refused | cancelled
    experiment_id: int | None = None
    job_id: int | None = None
    student: str | None = None
    commit_sha: str | None = None
    base_sha: str | None = None
    metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    duration_s: float | None = None
    peak_mem_mb: float | None = None
    gpu_hours: float | None = None
    cost_usd: float = 0.0
    reason: str = ""
    log_tail: str = ""
    wandb_url: str = ""
    created_at: float = 0.0
    host: str = ""
    gpu_kind: str = ""
    sealed: bool = True  # the metric came from the problem's [eval], not the script
    sandboxed: bool = True
    train_s: float | None = None
    eval_s: float | None = None
    track: str = DEFAULT_TRACK

    @property
    def ok(self) -> bool:
        """A measurement that counts: status ok with a metric."""
        return self.status == "ok" and self.metric is not None


@dataclass(frozen=True, slots=True)
class Decision(Record):
    """A verdict on an experiment, by whom, why, and the gate's figures."""

    table: ClassVar[str] = "decisions"
    json_columns: ClassVar[Mapping[str, type]] = {"stats": dict}

    id: int
    experiment_id: int
    verdict: str
    actor: str
    rationale: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Student(Record):
    """A registered host identity and what it is doing."""

    table: ClassVar[str] = "students"
    key: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    token_hash: str | None = None
    gpus: int = 0
    state: str = "idle"
    last_seen: float | None = None
    created_at: float = 0.0
    labs: str | None = None  # `owner/repo[:track]`, comma-separated; None: every lab


@dataclass(frozen=True, slots=True)
class Track(Record):
    """A declared research track's own base branch, base and baseline state."""

    table: ClassVar[str] = "tracks"
    key: ClassVar[tuple[str, ...]] = ("repo_id", "name")
    json_columns: ClassVar[Mapping[str, type]] = {"base_files": dict}

    repo_id: int
    name: str
    base_branch: str = ""
    base_sha: str | None = None
    program_md: str | None = None
    base_files: dict[str, Any] = field(default_factory=dict)
    baseline_problem: str | None = None
    synced_at: float | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OutboxEntry(Record):
    """One GitHub write the engine asked for, and how performing it went.

    `args` is the write's arguments as `bot.outbox.writes.decode` reads them.
    A row whose stored text is not a JSON object (a damaged or hostile row)
    keeps that text, so the worker fails it as a malformed row, with the
    reason, instead of performing a write with no arguments.
    """

    table: ClassVar[str] = "outbox"
    json_columns: ClassVar[Mapping[str, type]] = {"args": dict, "result": dict}
    nullable: ClassVar[tuple[str, ...]] = ("result",)
    verbatim: ClassVar[tuple[str, ...]] = ("args",)

    id: int
    repo: str  # owner/name
    op: str  # a write's `op` (`bot.outbox.writes.WRITES`)
    installation_id: int | None = None  # None: looked up when performed
    args: dict[str, Any] | str = field(default_factory=dict)
    marker: str | None = None  # <!-- kohai:<kind>:<key> --> of a comment write
    state: str = "pending"  # pending | done | failed | superseded
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    result: dict[str, Any] | None = None  # what GitHub answered, once done
    created_at: float = 0.0
    done_at: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery(Record):
    """One webhook delivery, stored before it was acknowledged, and how routing it went.

    `payload` stays the body as GitHub sent it: `bot.core.events.parse_event`
    reads it and tells a body that is not a JSON object (a failed delivery)
    from an event, which a decoded-or-empty column could not.
    """

    table: ClassVar[str] = "inbox"

    id: int
    delivery_id: str  # GitHub's X-GitHub-Delivery
    event: str  # X-GitHub-Event
    action: str | None = None
    payload: str = ""
    received_at: float = 0.0
    status: str = "pending"  # pending | routed | ignored | failed
    note: str | None = None  # what routing did, or why it failed; a line per failed try
    processed_at: float | None = None
