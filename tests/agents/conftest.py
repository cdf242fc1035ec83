"""A real SQLite store with a lab notebook in it, and the reference problem."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.problem import Problem, loads_problem
from bot.store import Store, now

REPO_ROOT = Path(__file__).resolve().parents[2]
CHARLM = REPO_ROOT / "trainer" / "examples" / "charlm"

PROBLEM_TOML = """
[metric]
name = "val_bpb"
direction = "minimize"

[files]
editable = ["train.py"]
frozen = ["prepare.py"]

[search]
LEARNING_RATE = { min = 3e-4, max = 3e-2, log = true }
N_LAYER = { choices = [1, 2, 3] }
WARMUP_STEPS = { min = 0, max = 100 }
"""


@pytest.fixture
def problem_toml() -> str:
    return PROBLEM_TOML


@pytest.fixture
def problem(problem_toml: str) -> Problem:
    return loads_problem(problem_toml)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "k.db")
    yield store
    store.close()


@pytest.fixture
def repo_id(store: Store) -> int:
    return store.insert(
        "repos", {"full_name": "lab/charlm", "base_sha": "base1", "created_at": now()}
    )


AddExperiment = Callable[..., int]


@pytest.fixture
def add_experiment(store: Store, repo_id: int) -> AddExperiment:
    """Insert an experiment with one candidate run per metric value (None: a crashed seed)."""

    def add(
        knobs: dict[str, Any],
        metrics: Sequence[float | None] = (),
        *,
        state: str = "closed",
        title: str | None = None,
        verdict: str | None = None,
        source: str = "advisor",
        pr_number: int | None = None,
        base_sha: str = "base1",
    ) -> int:
        t = now()
        experiment_id = store.insert(
            "experiments",
            {
                "repo_id": repo_id,
                "state": state,
                "source": source,
                "title": title or f"try {knobs}",
                "hypothesis": f"hypothesis for {knobs}",
                "student": "fern",
                "pr_number": pr_number,
                "knobs": json.dumps(knobs),
                "base_sha": base_sha,
                "created_at": t,
                "updated_at": t,
            },
        )
        for seed, metric in enumerate(metrics):
            store.insert(
                "runs",
                {
                    "repo_id": repo_id,
                    "experiment_id": experiment_id,
                    "kind": "candidate",
                    "student": "fern",
                    "seed": seed,
                    "base_sha": base_sha,
                    "status": "ok" if metric is not None else "crash",
                    "metric": metric,
                    "reason": "" if metric is not None else "exit code 1",
                    "log_tail": "" if metric is not None else "RuntimeError: CUDA out of memory",
                    "created_at": t,
                },
            )
        if verdict:
            store.insert(
                "decisions",
                {
                    "experiment_id": experiment_id,
                    "verdict": verdict,
                    "actor": "gate",
                    "rationale": "test",
                    "created_at": t,
                },
            )
        return experiment_id

    return add


@pytest.fixture
def add_baseline(store: Store, repo_id: int) -> Callable[..., None]:
    def add(metrics: Sequence[float], base_sha: str = "base1") -> None:
        for seed, metric in enumerate(metrics):
            store.insert(
                "runs",
                {
                    "repo_id": repo_id,
                    "kind": "baseline",
                    "seed": seed,
                    "base_sha": base_sha,
                    "status": "ok",
                    "metric": metric,
                    "created_at": now(),
                },
            )

    return add


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture
def charlm_dir() -> Path:
    """The reference problem's directory (it may not exist in a partial checkout)."""
    return CHARLM


@pytest.fixture
def git_repo() -> Callable[[Path, dict[str, str]], Path]:
    return make_git_repo


def make_git_repo(path: Path, files: dict[str, str]) -> Path:
    """A real git repository with `files` committed on main."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path
