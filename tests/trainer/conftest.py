"""Fixtures for the trainer's tests (helpers live in trainer_helpers.py)."""

from __future__ import annotations

import pytest
from trainer_helpers import FakeBot


@pytest.fixture
def fake_bot():
    bot = FakeBot()
    yield bot
    bot.stop()


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOHAI_WANDB", "disabled")
