"""The schema's versioned steps: a database from any earlier version comes up to date with its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from bot import store as store_module
from bot.store import MIGRATIONS, SCHEMA_VERSION, Store, _split_sql


def _database_at(path: Path, version: int) -> None:
    """A file holding the schema as it was at `version`, made by the SQL steps alone."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:version]:
        assert isinstance(step, str), "the early steps are SQL"
        for statement in _split_sql(step):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()


def test_a_fresh_store_is_at_the_current_version_with_tracks(tmp_path: Path) -> None:
    store = Store(tmp_path / "kohai.db")
    assert store.version == SCHEMA_VERSION == len(MIGRATIONS)
    columns = {c.name: c for c in store.db.table("tracks").columns}
    assert set(columns) >= {"repo_id", "name", "base_branch", "base_sha", "created_at"}
    assert store.db.table("tracks").pks == ["repo_id", "name"]
    for table in ("experiments", "jobs", "runs"):
        track = {c.name: c for c in store.db.table(table).columns}["track"]
        assert track.notnull and track.default_value == "'default'"


def test_rows_from_version_5_gain_the_default_track(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _database_at(path, 5)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO repos (full_name, installation_id, default_branch, created_at) "
        "VALUES ('lab/old', 1, 'main', 0)"
    )
    conn.close()
    store = Store(path)
    assert store.version == SCHEMA_VERSION
    repo = store.one("SELECT id FROM repos WHERE full_name = 'lab/old'")
    assert repo is not None
    exp_id = store.insert(
        "experiments",
        {
            "repo_id": repo["id"],
            "title": "t",
            "state": "proposed",
            "source": "human",
            "created_at": 0,
            "updated_at": 0,
        },
    )
    assert store.one("SELECT track FROM experiments WHERE id = ?", (exp_id,)) == {
        "track": "default"
    }


def test_a_step_that_fails_leaves_the_version_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "half.db"
    _database_at(path, 5)

    def broken(db: sqlite_utils.Database) -> None:
        db.table("half").create({"x": int})  # done, then the step fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS[:5], broken])
    with pytest.raises(RuntimeError, match="disk full"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    assert not {"half", "tracks"} & {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this kohai"):
        Store(path)


def test_update_of_a_row_that_is_gone_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "kohai.db")
    store.update("students", "nobody", {"state": "idle"})
    assert store.query("SELECT * FROM students") == []
