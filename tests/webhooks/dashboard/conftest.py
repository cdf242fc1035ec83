"""Fixtures: the dashboard over real HTTP on loopback, on the seeded lab (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dashboard_seed import Seeded, Served, serve_dashboard


@pytest.fixture
def served(seeded: Seeded) -> Iterator[Served]:
    running, stop = serve_dashboard(
        seeded.path, extra_state={"github_html_url": "https://github.example.com"}
    )
    try:
        yield running
    finally:
        stop()
