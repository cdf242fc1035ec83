"""`kohai check` and `kohai schema` on real problem repositories (git, the harness, the sandbox).

The reference problem passes every step with a short smoke run; a broken repository
fails at the step that is broken, later steps are not attempted, and the exit status
says so. The pure parts (`script_paths`, `file_verdicts`, `run_verdicts`) are
table-driven below.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest

from bot.cli import main
from bot.cli.check import file_verdicts, run_verdicts, script_paths
from bot.problem import loads_problem
from bot.protocol import RunResult
from trainer.cli import REFERENCE_PROBLEM

UNSEALED = '[metric]\nname = "val_bpb"\n[train]\ncommand = "python train.py"\nbudget = "5s"\n'


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOHAI_WANDB", "disabled")


def git_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    """A committed problem repository: the reference problem's files, or `files`."""
    if files is None:
        shutil.copytree(
            REFERENCE_PROBLEM, root, ignore=shutil.ignore_patterns("__pycache__", "runs")
        )
    else:
        root.mkdir(parents=True)
        for name, text in files.items():
            (root / name).write_text(text)
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "--all"],
        ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "--quiet", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def verdicts(out: str) -> dict[str, list[tuple[str, str]]]:
    """The printed verdicts by step: [(mark, detail)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for line in out.splitlines():
        match = re.match(r"^ (✓|!|✗|-) (schema|files|sandbox|smoke run|metric)\s+(.*)$", line)
        if match:
            found.setdefault(match.group(2), []).append((match.group(1), match.group(3)))
    return found


@pytest.mark.slow
def test_the_reference_problem_passes_every_step(tmp_path: Path, capsys) -> None:
    repo = git_repo(tmp_path / "charlm")
    assert main(["check", str(repo), "--budget", "3s"]) == 0
    out = capsys.readouterr().out
    steps = verdicts(out)
    marks = {step: [mark for mark, _ in found] for step, found in steps.items()}
    sandbox = marks.pop("sandbox")  # a warning where bubblewrap cannot start (then unsandboxed)
    assert marks == {s: ["✓"] for s in ("schema", "files", "smoke run", "metric")}, out
    assert sandbox in (["✓"], ["!"])
    assert "sealed by [eval]" in steps["schema"][0][1]
    metric = steps["metric"][0][1]
    assert metric.startswith("val_bpb = ") and "sealed" in metric
    assert math.isfinite(float(metric.split()[2].rstrip(",")))
    assert out.rstrip().endswith("ready")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True)
    assert status.stdout == b"", "a check leaves the repository as it found it"


def test_a_typo_fails_at_the_schema_and_runs_nothing(tmp_path: Path, capsys) -> None:
    repo = git_repo(
        tmp_path / "p",
        {
            "kohai.toml": UNSEALED.replace('name = "val_bpb"', 'name = "val_bpb"\nseed = 1')
            + "[train.early_stop]\nbnd = 2\n",
            "train.py": "open('ran', 'w').write('x')\n",
            "program.md": "# p\n",
        },
    )
    assert main(["check", str(repo)]) == 1
    out = capsys.readouterr().out
    steps = verdicts(out)
    assert list(steps) == ["schema"], "no later step runs on a file that does not validate"
    lines = [detail for _, detail in steps["schema"]]
    assert "metric.seed: unknown key; expected one of name, direction" in lines
    assert "train.early_stop.bnd: unknown key; did you mean `band`?" in lines
    assert not (repo / "ran").exists()
    assert "not ready" in out


def test_a_missing_metric_fails_at_the_schema(tmp_path: Path, capsys) -> None:
    repo = git_repo(
        tmp_path / "p", {"kohai.toml": '[train]\ncommand = "python train.py"\n', "train.py": ""}
    )
    assert main(["check", str(repo), "--no-run"]) == 1
    (mark, detail), *_ = verdicts(capsys.readouterr().out)["schema"]
    assert mark == "✗" and detail.startswith("[metric] is missing")


def test_no_kohai_toml_fails_naming_kohai_init(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path), "--no-run"]) == 1
    (mark, detail), *_ = verdicts(capsys.readouterr().out)["schema"]
    assert mark == "✗" and "kohai init" in detail


def test_missing_files_fail_at_the_files_step_before_any_run(tmp_path: Path, capsys) -> None:
    repo = git_repo(tmp_path / "charlm")
    (repo / "prepare.py").unlink()  # frozen, and the data and eval commands' script
    assert main(["check", str(repo)]) == 1
    steps = verdicts(capsys.readouterr().out)
    assert steps["schema"][0][0] == "✓"
    failed = [detail for mark, detail in steps["files"] if mark == "✗"]
    assert "files.frozen: 'prepare.py' is not in the tree" in failed
    assert "eval.command: prepare.py is not in the tree" in failed
    assert steps["smoke run"] == [("-", "fix the files first")]


def test_a_crashing_script_fails_at_the_smoke_run(tmp_path: Path, capsys) -> None:
    repo = git_repo(
        tmp_path / "p",
        {
            "kohai.toml": UNSEALED,
            "train.py": "raise SystemExit('no data here')\n",
            "program.md": "# p\n",
        },
    )
    assert main(["check", str(repo)]) == 1
    steps = verdicts(capsys.readouterr().out)
    assert [s for s, v in steps.items() if v[0][0] in "✓!"] == ["schema", "files", "sandbox"]
    (mark, detail), *_ = steps["smoke run"]
    assert mark == "✗" and detail.startswith("crash") and "no data here" in detail
    log = Path(detail.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file(), "a failed run keeps its log"
    assert steps["metric"] == [("-", "no result without a finished run")]
    shutil.rmtree(log.parent.parent)


def test_an_unsealed_problem_passes_with_a_warning(tmp_path: Path, capsys) -> None:
    repo = git_repo(
        tmp_path / "p",
        {"kohai.toml": UNSEALED, "train.py": "print('val_bpb: 1.25')\n", "program.md": "# p\n"},
    )
    assert main(["check", str(repo)]) == 0
    out = capsys.readouterr().out
    (mark, detail), *_ = verdicts(out)["metric"]
    assert mark == "!" and detail.startswith("val_bpb = 1.25, unsealed")
    assert "ready, 1 warning(s)" in out


def test_without_a_sandbox_the_smoke_run_goes_unsandboxed_with_a_warning(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import sandbox

    monkeypatch.setattr(sandbox, "probe", lambda: "bubblewrap (bwrap) is not installed")
    repo = git_repo(
        tmp_path / "p",
        {"kohai.toml": UNSEALED, "train.py": "print('val_bpb: 2')\n", "program.md": "# p\n"},
    )
    assert main(["check", str(repo)]) == 0
    steps = verdicts(capsys.readouterr().out)
    (mark, detail), *_ = steps["sandbox"]
    assert mark == "!" and "bwrap" in detail and "--unsandboxed" in detail
    assert steps["smoke run"][0][0] == "✓"


def test_no_run_checks_the_schema_and_files_only(tmp_path: Path, capsys) -> None:
    repo = git_repo(
        tmp_path / "p",
        {"kohai.toml": UNSEALED, "train.py": "open('ran', 'w')\n", "program.md": "# p\n"},
    )
    assert main(["check", str(repo), "--no-run"]) == 0
    steps = verdicts(capsys.readouterr().out)
    assert steps["smoke run"] == [("-", "--no-run")] and "metric" not in steps
    assert not (repo / "ran").exists()


def test_a_bad_budget_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path), "--budget", "soon"]) == 2
    assert capsys.readouterr().err.strip().startswith("kohai check: --budget: expected a duration")


def test_schema_prints_a_json_schema_that_accepts_the_reference_problem(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    reference = tomllib.loads((REFERENCE_PROBLEM / "kohai.toml").read_text())
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(reference))
    typo = {**reference, "train": {**reference["train"], "seed": 1}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(typo))


# ------------------------------------------------------------------ the pure parts


@pytest.mark.parametrize(
    ("command", "scripts"),
    [
        ("python train.py", ["train.py"]),
        ("python3 -u src/train.py --lr 3e-4", ["src/train.py"]),
        ("torchrun --nproc_per_node=8 train.py", ["train.py"]),
        ("bash run.sh", ["run.sh"]),
        ("python -m pkg.train", []),
        ("python prepare.py evaluate", ["prepare.py"]),
        ("python 'unbalanced.py", []),  # the shell says so at run time
        ("python train.py --config=cfg.py", ["train.py"]),
    ],
)
def test_script_paths(command: str, scripts: list[str]) -> None:
    assert script_paths(command) == scripts


def test_file_verdicts_name_each_missing_or_uncommitted_path() -> None:
    problem = loads_problem(
        '[metric]\nname = "x"\n[train]\ncommand = "python src/train.py"\n'
        '[files]\neditable = ["src/train.py", "configs/*.yaml"]\nfrozen = ["data/", "prep.py"]\n'
        '[eval]\ncommand = "python prep.py evaluate"\n[tracks.wide]\nprogram = "wide.md"\n'
    )
    files = ["kohai.toml", "src/train.py", "data/a.bin", "prep.py"]
    found = file_verdicts(problem, files, committed=["kohai.toml", "src/train.py", "data/a.bin"])
    assert [(v.status, v.detail.split(":")[0]) for v in found] == [
        ("warn", "program.md is missing"),
        ("warn", "files.editable"),  # configs/*.yaml matches nothing yet
        ("warn", "tracks.wide.program"),
        ("fail", "not committed"),
    ]
    assert "prep.py" in found[-1].detail
    ok = file_verdicts(problem, [*files, "program.md", "wide.md", "configs/a.yaml"], None)
    assert [v.status for v in ok] == ["pass"]


@pytest.mark.parametrize(
    ("result", "sealed", "expected"),
    [
        (RunResult(seed=0, status="ok", metric=1.5, sealed=True), True, ["pass", "pass"]),
        (RunResult(seed=0, status="ok", metric=1.5), False, ["pass", "warn"]),
        (RunResult(seed=0, status="ok", metric=float("nan"), sealed=True), True, ["pass", "fail"]),
        (RunResult(seed=0, status="timeout", reason="killed at 40s"), True, ["fail", "skip"]),
        (RunResult(seed=0, status="invalid", reason="a file appeared"), True, ["fail", "skip"]),
    ],
)
def test_run_verdicts(result: RunResult, sealed: bool, expected: list[str]) -> None:
    toml = '[metric]\nname = "loss"\n' + ('[eval]\ncommand = "x"\n' if sealed else "")
    found = run_verdicts(result, loads_problem(toml))
    assert [v.status for v in found] == expected
    assert [v.step for v in found] == ["smoke run", "metric"]
