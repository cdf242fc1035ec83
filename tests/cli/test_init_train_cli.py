"""`kohai init` adopts a repository that already has its training script; `kohai train` says
what it is doing while the budget runs.

The commands run in child processes on real directories and git repositories.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.problem import load_problem
from tests.support.kohai_cli import kohai, one_line
from trainer.adopt import AdoptError, find_script, guess_metric

# A user's own training script: it reports progress through the metrics protocol,
# runs for about two seconds, and prints its result as its last line.
TRAIN_PY = """\
import json, os, time
path = os.environ.get("KOHAI_METRICS_FILE")
budget = float(os.environ.get("KOHAI_BUDGET_S", "60"))
for step in range(1, 5):
    time.sleep(0.5)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": step, "val_loss": 3.0 / step}) + "\\n")
print(f"val_loss: {3.0 / 4:.4f}")
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _user_repo(root: Path) -> Path:
    """An existing repository: a README, its own train.py and a helper module, committed."""
    root.mkdir()
    (root / "README.md").write_text("# my model\n")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "model.py").write_text("WIDTH = 64\n")
    _git(root, "init", "--quiet", "--initial-branch=main")
    _git(root, "add", "--all")
    _git(root, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "--quiet", "-m", "mine")
    return root


def test_init_adopts_an_existing_repository(tmp_path: Path) -> None:
    # `kohai init path/to/your-repo` used to fail: "... exists and is not empty".
    repo = _user_repo(tmp_path / "mine")
    before = {p.name: p.read_bytes() for p in repo.iterdir() if p.is_file()}
    done = kohai("init", str(repo), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training script: train.py" in done.stdout
    assert "wrote kohai.toml" in done.stdout and "wrote program.md" in done.stdout
    for what in ("the metric", "the editable files", "the evaluator contract"):
        assert f"- {what}:" in done.stdout, done.stdout
    assert "- the budget:" not in done.stdout  # this script reads KOHAI_BUDGET_S itself
    for name, data in before.items():
        assert (repo / name).read_bytes() == data, f"{name} was changed"
    problem = load_problem(repo)
    assert (problem.metric, problem.direction) == ("val_loss", "minimize")
    assert problem.command == "python train.py" and problem.editable == ("train.py",)
    assert not problem.sealed
    assert "# CHECK" in (repo / "kohai.toml").read_text()
    assert "val_loss" in (repo / "program.md").read_text()
    # Nothing is committed for the user: the two new files are untracked, the rest clean.
    assert _git(repo, "status", "--porcelain").splitlines() == [
        "?? kohai.toml",
        "?? program.md",
    ]


def test_init_never_overwrites(tmp_path: Path) -> None:
    repo = _user_repo(tmp_path / "mine")
    mine = (
        '[metric]\nname = "acc"\ndirection = "maximize"\n\n[train]\ncommand = "python train.py"\n'
    )
    (repo / "kohai.toml").write_text(mine)
    done = kohai("init", str(repo), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "kept kohai.toml" in done.stdout and "wrote program.md" in done.stdout
    assert (repo / "kohai.toml").read_text() == mine
    again = kohai("init", str(repo), cwd=tmp_path)
    assert again.returncode == 0
    assert "wrote" not in again.stdout and "kept program.md" in again.stdout


def test_init_takes_train_and_says_when_the_script_is_unclear(tmp_path: Path) -> None:
    repo = tmp_path / "two"
    (repo / "experiments").mkdir(parents=True)
    (repo / "train_small.py").write_text("print('accuracy: 0.5')\n")
    (repo / "train_big.py").write_text("print('accuracy: 0.6')\n")
    (repo / "experiments" / "run.py").write_text("print('accuracy: 0.7')\n")

    unclear = kohai("init", str(repo), cwd=tmp_path)
    assert unclear.returncode == 2
    line = one_line(unclear.stderr)
    assert "train_big.py, train_small.py" in line and "--train" in line

    # Hostile input: a --train outside the repository is refused, nothing is written.
    outside = tmp_path / "elsewhere.py"
    outside.write_text("print('loss: 1')\n")
    refused = kohai("init", str(repo), "--train", "../elsewhere.py", cwd=tmp_path)
    assert refused.returncode == 2 and "not inside" in one_line(refused.stderr)
    assert not (repo / "kohai.toml").exists()

    chosen = kohai("init", str(repo), "--train", "experiments/run.py", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    problem = load_problem(repo)
    assert problem.command == "python experiments/run.py"
    assert (problem.metric, problem.direction) == ("accuracy", "maximize")


def test_init_without_a_script_names_train(tmp_path: Path) -> None:
    repo = tmp_path / "notes"
    repo.mkdir()
    (repo / "keep.txt").write_text("mine")
    done = kohai("init", str(repo), cwd=tmp_path)
    assert done.returncode == 2
    assert "no training script found" in one_line(done.stderr) and "--train" in done.stderr
    assert [p.name for p in repo.iterdir()] == ["keep.txt"]


def test_example_charlm_scaffolds_only_into_an_empty_directory(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    done = kohai("init", "--example", "charlm", str(taken), cwd=tmp_path)
    assert done.returncode == 2 and "not empty" in one_line(done.stderr)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"train.py": "", "src/train.py": ""}, "train.py"),
        ({"src/train.py": "", "README.md": ""}, "src/train.py"),
        ({"train_gpt.py": ""}, "train_gpt.py"),
        ({".venv/lib/train.py": "", "scripts/train.sh": ""}, "scripts/train.sh"),
    ],
)
def test_the_training_script_is_found_where_people_put_it(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert find_script(tmp_path) == expected


def test_no_script_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AdoptError, match="--train"):
        find_script(tmp_path)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("print(f'val_bpb: {x}')", ("val_bpb", "minimize", True)),
        ("log({'val_accuracy': acc, 'loss': l})", ("val_accuracy", "maximize", True)),
        ("my_val_loss_ema = 0", ("val_loss", "minimize", False)),  # no whole-word match
        ("print(score)", ("val_loss", "minimize", False)),
    ],
)
def test_the_metric_is_guessed_from_the_script(
    source: str, expected: tuple[str, str, bool]
) -> None:
    assert guess_metric(source) == expected


def test_train_shows_phase_seed_elapsed_and_the_last_metric(tmp_path: Path) -> None:
    # `kohai train` used to print nothing of its own until the budget was over.
    repo = _user_repo(tmp_path / "mine")
    assert kohai("init", str(repo), cwd=tmp_path).returncode == 0
    done = kohai("train", str(repo), "--budget", "20s", "--unsandboxed", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    progress = [line for line in done.stdout.splitlines() if line.startswith("kohai train: ")]
    assert any(
        line.startswith("kohai train: training · seed 0 (1/1) · ") and "/ 20s" in line
        for line in progress
    ), done.stdout
    assert any(" · val_loss " in line for line in progress), done.stdout
    assert "status: ok" in done.stdout.splitlines()
    assert "val_loss: 0.75" in done.stdout.splitlines()


def test_the_live_line_on_a_terminal_shows_the_same_words() -> None:
    """On a terminal the progress is one redrawn line: a bar and the same status words."""
    from io import StringIO

    from rich.console import Console

    from trainer.progress import TrainProgress

    now = [100.0]
    screen = Console(file=StringIO(), width=120, force_terminal=True, record=True)
    progress = TrainProgress(screen, seed=2, budget_s=20, metric="val_bpb", clock=lambda: now[0])
    progress.phase("training")
    now[0] += 5
    progress.record({"step": 10, "val_bpb": 1.5, "train_loss": 2.0})
    screen.print(progress)
    drawn = screen.export_text()
    assert "training · seed 2 (1/1) · 5s / 20s · val_bpb 1.5" in drawn
    assert "━" in drawn  # the bar
