"""A whole lab on loopback: the sandbox GitHub, the bot, and real host daemons."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli.lab import LocalLab
from bot.engine.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
CHARLM = ROOT / "trainer" / "examples" / "charlm"


def problem_files(budget: str = "8s", **train: Any) -> dict[str, str]:
    """The reference problem with a short budget (and other [train] overrides)."""
    files = {p.name: p.read_text() for p in CHARLM.iterdir() if p.is_file()}
    toml = files["kohai.toml"]
    toml = re.sub(r"^budget = .*$", f'budget = "{budget}"', toml, count=1, flags=re.M)
    toml = re.sub(r"^grace = .*$", 'grace = "10s"', toml, count=1, flags=re.M)
    for key, value in train.items():
        toml = re.sub(rf"^{key} = .*$", f"{key} = {value}", toml, flags=re.M)
    files["kohai.toml"] = toml
    return files


class Lab(LocalLab):
    """The shared local lab, with the reference problem's repository the tests work on."""

    repo: str = "lab/charlm"

    def engine(self) -> Engine:
        """An engine on the test's own connection: the bot's belongs to the server's thread,
        which may be inside a transaction when the test acts."""
        return Engine(self.store, max_experiments=self.max_experiments)

    def add_host(self, name: str, **kw: Any) -> subprocess.Popen[bytes]:  # type: ignore[override]
        env = {"WANDB_MODE": "disabled", "KOHAI_WANDB": "disabled", **kw.pop("env", {})}
        return super().add_host(name, env=env, **kw)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    started: list[Lab] = []

    def make(
        *, advisor: bool = False, files: dict[str, str] | None = None, max_experiments: int = 0
    ) -> Lab:
        lab = Lab(tmp_path, advisor=advisor, max_experiments=max_experiments)
        started.append(lab)
        lab.start()
        lab.add_repo(lab.repo, files=files or problem_files())
        return lab

    yield make
    for lab in reversed(started):
        lab.stop()
