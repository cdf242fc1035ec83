"""The engine's list of students is read again only when a student comes or goes."""

from __future__ import annotations

from pathlib import Path

from bot.engine.engine import Engine
from bot.engine.jobs import register_student
from bot.store import Store


def test_students_follow_registrations_and_removals_from_any_connection(tmp_path: Path) -> None:
    store = Store(tmp_path / "kohai.db")
    engine = Engine(store)
    assert engine.students() == frozenset()
    register_student(store, "fern")
    assert engine.students() == {"fern"}
    other = Store(tmp_path / "kohai.db")  # `kohai hosts add` runs in another process
    register_student(other, "frieren")
    assert engine.students() == {"fern", "frieren"}
    with other.transaction():
        other.execute("DELETE FROM students WHERE name = 'fern'")
    register_student(other, "himmel")  # as many students as before, a newer one
    assert engine.students() == {"frieren", "himmel"}
    other.close()
    store.close()
