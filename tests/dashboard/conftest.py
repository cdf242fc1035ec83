"""Fixtures: a seeded lab on a real SQLite file, the dashboard over real HTTP on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_seed import Seeded, Served, seed_lab, serve_dashboard

from bot.store import Store


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    path = tmp_path / "kohai.db"
    store = Store(path)
    ids = seed_lab(store, time.time() - 3 * 3600)
    store.close()
    yield Seeded(path, ids)


@pytest.fixture
def served(seeded: Seeded) -> Iterator[Served]:
    running, stop = serve_dashboard(
        seeded.path, extra_state={"github_html_url": "https://github.example.com"}
    )
    try:
        yield running
    finally:
        stop()
