"""The bot's durable state: one SQLite file in WAL mode, with a versioned schema.

Everything the bot knows lives here, so a restart loses nothing: the inbox of
deliveries (stored before they are acknowledged), the experiments and their
runs, the jobs leased to hosts, the decisions, and the outbox of GitHub writes
that are still to be made. Writes that belong together happen in one
`transaction()`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

if TYPE_CHECKING:
    from bot.protocol import RunResult
    from bot.records import R

SCHEMA_VERSION = 11

# Each entry upgrades the schema from version i to i + 1. Never edit a released
# step; append a new one.
# A step is SQL, or a function of the sqlite-utils Database for what it does well
# (creating tables, adding columns and indexes).
MIGRATIONS: list[str | Callable[[sqlite_utils.Database], None]] = [
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        action TEXT,
        payload TEXT NOT NULL,
        received_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',   -- pending | routed | ignored | failed
        note TEXT,
        processed_at REAL
    );
    CREATE INDEX inbox_pending ON inbox(status, id);

    CREATE TABLE repos (
        id INTEGER PRIMARY KEY,
        full_name TEXT NOT NULL UNIQUE,
        installation_id INTEGER,
        default_branch TEXT NOT NULL DEFAULT 'main',
        active INTEGER NOT NULL DEFAULT 1,
        base_sha TEXT,                -- head of the default branch the baseline was measured on
        problem_toml TEXT,            -- kohai.toml at base_sha
        program_md TEXT,              -- program.md at base_sha
        synced_at REAL,
        created_at REAL NOT NULL
    );

    CREATE TABLE students (
        name TEXT PRIMARY KEY,
        token_hash TEXT,
        gpus INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'idle',       -- idle | implementing | training | offline
        last_seen REAL,
        created_at REAL NOT NULL
    );

    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        state TEXT NOT NULL,          -- proposed | queued | implementing | training | review | merged | closed
        source TEXT NOT NULL,         -- human | advisor
        title TEXT NOT NULL,
        hypothesis TEXT NOT NULL DEFAULT '',
        student TEXT,
        issue_number INTEGER,
        pr_number INTEGER,
        branch TEXT,
        knobs TEXT NOT NULL DEFAULT '{}',
        base_sha TEXT,                -- base the current results were measured on
        head_sha TEXT,
        hold INTEGER NOT NULL DEFAULT 0,
        seeds_wanted INTEGER NOT NULL DEFAULT 1,
        implemented INTEGER NOT NULL DEFAULT 0,
        review_requested INTEGER NOT NULL DEFAULT 0,
        debug_attempts INTEGER NOT NULL DEFAULT 0,
        feedback TEXT NOT NULL DEFAULT '',
        outcome TEXT,                 -- merged | closed, and by whom in decisions
        cost_usd REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX experiments_pr ON experiments(repo_id, pr_number) WHERE pr_number IS NOT NULL;
    CREATE INDEX experiments_state ON experiments(state);

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,           -- experiment | baseline
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        experiment_id INTEGER REFERENCES experiments(id),
        student TEXT,                 -- NULL: any student may take it
        state TEXT NOT NULL,          -- queued | leased | done | failed | cancelled
        priority INTEGER NOT NULL DEFAULT 0,
        seeds TEXT NOT NULL DEFAULT '[0]',
        base_sha TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL DEFAULT '{}',       -- implement spec, wandb group, ...
        leased_by TEXT,
        lease_expires REAL,
        phase TEXT,
        last_event_at REAL,
        result TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_queue ON jobs(state, priority DESC, id);

    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL REFERENCES repos(id),
        experiment_id INTEGER REFERENCES experiments(id),
        job_id INTEGER REFERENCES jobs(id),
        kind TEXT NOT NULL,           -- candidate | baseline
        student TEXT,
        seed INTEGER NOT NULL,
        commit_sha TEXT,
        base_sha TEXT,
        status TEXT NOT NULL,         -- ok | crash | timeout | refused
        metric REAL,
        metrics TEXT NOT NULL DEFAULT '{}',
        curve TEXT NOT NULL DEFAULT '[]',
        duration_s REAL,
        peak_mem_mb REAL,
        gpu_hours REAL,
        cost_usd REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        log_tail TEXT NOT NULL DEFAULT '',
        wandb_url TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        UNIQUE(job_id, seed)
    );

    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        verdict TEXT NOT NULL,        -- merge | close | changes | confirm | rerun | wait
        actor TEXT NOT NULL,          -- gate | advisor | human:<login>
        rationale TEXT NOT NULL,
        stats TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,           -- owner/name
        installation_id INTEGER,
        op TEXT NOT NULL,
        args TEXT NOT NULL,
        marker TEXT,                  -- <!-- kohai:<kind>:<key> --> for comment writes
        state TEXT NOT NULL DEFAULT 'pending',    -- pending | done | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        result TEXT,
        created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX outbox_pending ON outbox(state, next_attempt_at, id);

    CREATE TABLE advisor_calls (
        id INTEGER PRIMARY KEY,
        action TEXT NOT NULL,         -- propose | review
        experiment_id INTEGER,
        model TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    """,
    # 2: leases with identity, advisor retries, unmeasurable baselines, downtime.
    """
    ALTER TABLE jobs ADD COLUMN lease_id TEXT;
    ALTER TABLE experiments ADD COLUMN advisor_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE experiments ADD COLUMN advisor_retry_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE advisor_calls ADD COLUMN error TEXT;
    ALTER TABLE repos ADD COLUMN baseline_problem TEXT;
    CREATE TABLE bot_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: where and how each run was measured. The gate compares a candidate only
    # with baseline runs of its hardware class; a result says whether its metric
    # was sealed and whether the run was sandboxed.
    """
    ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN gpu_kind TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN sandboxed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN train_s REAL;
    ALTER TABLE runs ADD COLUMN eval_s REAL;
    """,
    # 4: the base's editable files, so the offline advisor reads the incumbent's knob
    # values (and an advisor the code it proposes changes to) without a checkout.
    """
    ALTER TABLE repos ADD COLUMN base_files TEXT;   -- JSON {path: text} at base_sha
    """,
    # 5: labs. A student may be limited to some labs (`owner/repo[:track]`,
    # comma-separated; NULL: every lab); the scheduler sums recent run time per lab.
    """
    ALTER TABLE students ADD COLUMN labs TEXT;
    CREATE INDEX runs_created ON runs(created_at);
    """,
    # 6: research tracks. A repository's default line stays in `repos`; each
    # `[tracks.<name>]` has its own base branch, base, program and baseline
    # state here. Experiments, jobs and runs name the track they belong to.
    lambda db: _add_tracks(db),
    # 7: what the bot verified of a job. `tip_sha`: the commit the job must train — the
    # experiment's head when leased (the base for a baseline), then the tip the bot accepted
    # from the job's push; a completion naming another commit is refused. `tip_diff`: the
    # diff the bot computed of that accepted tip against the job's base (what the audit reads).
    """
    ALTER TABLE jobs ADD COLUMN tip_sha TEXT;
    ALTER TABLE jobs ADD COLUMN tip_diff TEXT;
    """,
    # 8: commands run once. A slash command (its comment) or a label change (its
    # issue, label, action and time) is recorded with the first delivery that ran
    # it; a replay under another delivery id finds it here and does nothing.
    lambda db: _add_command_runs(db),
    # 9: the outbox recalls what it wrote by marker and by kind (bot/outbox/recall.py).
    """
    -- The outbox recalls what it wrote by marker and by kind (bot/outbox/recall.py).
    CREATE INDEX outbox_marker ON outbox(repo, marker) WHERE marker IS NOT NULL;
    CREATE INDEX outbox_op ON outbox(repo, op, state);
    """,
    # 10: the seeds a host reported finished while its job runs (the PR's results show
    # them as they come; the completion replaces them).
    "ALTER TABLE jobs ADD COLUMN measured TEXT;",
    # 11: every host request names its student by token: found by index, not by a scan
    # of every student (one per request, a thousand hosts each every few seconds).
    """
    CREATE INDEX students_token ON students(token_hash);
    """,
]


def _add_command_runs(db: sqlite_utils.Database) -> None:
    db.table("command_runs").create(
        {"key": str, "delivery_id": str, "created_at": float},
        pk="key",
        not_null={"delivery_id", "created_at"},
    )


def _add_tracks(db: sqlite_utils.Database) -> None:
    db.table("tracks").create(
        {
            "repo_id": int,
            "name": str,
            "base_branch": str,
            "base_sha": str,  # head of the track's base branch at its last sync
            "program_md": str,  # the track's program file at base_sha
            "base_files": str,  # JSON {path: text} at base_sha
            "baseline_problem": str,
            "synced_at": float,
            "created_at": float,
        },
        pk=("repo_id", "name"),
        not_null={"repo_id", "name", "base_branch", "created_at"},
        foreign_keys=[("repo_id", "repos", "id")],
    )
    for table in ("experiments", "jobs", "runs"):
        db.table(table).add_column("track", str, not_null_default="default")
    db.table("experiments").create_index(["repo_id", "track"], index_name="experiments_track")
    db.table("runs").create_index(["repo_id", "track", "kind", "base_sha"], index_name="runs_track")


def run_columns(run: RunResult, student: str | None = None) -> dict[str, Any]:
    """The `runs` columns a host's `RunResult` fills: the measurement, where and how.

    A host that does not report its name is taken to be the student that leased
    the job; an unknown GPU kind stays "" (the gate treats it as unknown).
    """
    return {
        "status": run.status,
        "metric": run.metric,
        "metrics": dumps(run.metrics),
        "curve": dumps(run.curve),
        "duration_s": run.duration_s,
        "peak_mem_mb": run.peak_mem_mb,
        "gpu_hours": run.gpu_hours,
        "reason": run.reason,
        "log_tail": run.log_tail[-8000:],
        "wandb_url": run.wandb_url,
        "host": (run.host or student or "")[:200],
        "gpu_kind": (run.gpu_kind or "")[:200],
        "sealed": int(bool(run.sealed)),
        "sandboxed": int(bool(run.sandboxed)),
        "train_s": run.train_s,
        "eval_s": run.eval_s,
    }


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Store:
    """A connection to the bot's SQLite file with the schema brought up to date."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._depth = 0
        self.migrate()

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {current} is newer than this kohai ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                step = MIGRATIONS[version]
                if callable(step):
                    step(self.db)
                else:
                    for statement in _split_sql(step):
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={version + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; nested use joins the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row else None

    def count(self, sql: str, params: Any = ()) -> int:
        """The one number a `SELECT COUNT(*) ...` (or any one-value query) answers."""
        row = self.conn.execute(sql, params).fetchone()
        return int(row[0] or 0) if row else 0

    def get(self, kind: type[R], *key: Any) -> R | None:
        """The record with this primary key (`store.get(Experiment, 7)`), or None."""
        where = " AND ".join(f"{column} = ?" for column in kind.key)
        return self.first(kind, where, key)

    def rows(
        self,
        kind: type[R],
        where: str | None = None,
        params: Any = (),
        *,
        order_by: str = "rowid",
        limit: int | None = None,
    ) -> list[R]:
        """Every record of `kind` matching `where` (the first `limit`), in `order_by` order.

        The SQL is sqlite-utils' `rows_where`, without its check that the table
        exists (a query of its own on every call; the schema is ours): these
        reads sit on the lease path.
        """
        sql = f"SELECT * FROM [{kind.table}]"
        if where is not None:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self.conn.execute(sql, params or ())
        read = kind.reader([column[0] for column in cursor.description])
        return [read(row) for row in cursor]

    def first(
        self, kind: type[R], where: str | None = None, params: Any = (), *, order_by: str = "rowid"
    ) -> R | None:
        """The first record of `kind` matching `where` in `order_by` order, or None."""
        found = self.rows(kind, where, params, order_by=order_by, limit=1)
        return found[0] if found else None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert one row (inside the caller's transaction: sqlite-utils nests a savepoint)."""
        target = self.db.table(table)
        target.insert(row)
        return int(target.last_rowid or 0)

    def update(self, table: str, row_id: Any, values: dict[str, Any]) -> None:
        """Change one row by its primary key; a row that is gone is left gone, as UPDATE would."""
        try:
            self.db.table(table).update(row_id, values)
        except NotFoundError:
            pass

    def close(self) -> None:
        self.conn.close()


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; `sqlite3.executescript` would commit our transaction."""
    statements, buffer = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped:
            continue
        buffer.append(stripped)
        if stripped.endswith(";"):
            statements.append("\n".join(buffer))
            buffer = []
    if buffer:
        statements.append("\n".join(buffer))
    return statements
