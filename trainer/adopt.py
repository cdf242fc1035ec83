"""`kohai init PATH`: adopt an existing repository as a kohai problem.

Finds the training script (or takes `--train`), guesses the metric from the
names the script uses, and writes `kohai.toml` and `program.md` only where
they are absent: a file the user wrote is never touched. The guesses are
marked in the files and listed on the terminal as what the user must check:
the metric, the editable files, and the evaluator contract (without an
`[eval]` command the result is the script's own last line, "unsealed").
Reading the repository and deciding are pure (`plan_adoption`); writing is
`write_adoption`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.problem import CONFIG_FILE, PROGRAM_FILE, ProblemError, loads_problem

# Where training scripts usually live, most likely first; each rank is searched in order
# and the first rank with exactly one match wins (two matches in one rank: ambiguous).
SCRIPT_RANKS: tuple[tuple[str, ...], ...] = (
    ("train.py",),
    ("train_*.py", "*_train.py", "training.py"),
    ("*/train.py", "*/*/train.py"),
    ("train.sh", "scripts/train.sh"),
)
SKIP_DIRS = {".git", ".venv", "venv", "env", "node_modules", "__pycache__", ".tox", "site-packages"}

# Metric names in the order they are preferred, and which way is better.
KNOWN_METRICS: tuple[tuple[str, str], ...] = (
    ("val_bpb", "minimize"),
    ("val_loss", "minimize"),
    ("eval_loss", "minimize"),
    ("val_ppl", "minimize"),
    ("perplexity", "minimize"),
    ("val_acc", "maximize"),
    ("val_accuracy", "maximize"),
    ("accuracy", "maximize"),
    ("test_loss", "minimize"),
    ("loss", "minimize"),
)
DEFAULT_METRIC = ("val_loss", "minimize")


class AdoptError(Exception):
    """The repository cannot be adopted as it is; the message says what to give."""


@dataclass
class Adoption:
    """What `kohai init` decided for one repository."""

    root: Path
    script: str  # relative to root, POSIX
    command: str
    metric: str
    direction: str
    metric_found: bool  # the name appears in the script; else a placeholder to fill in
    reads_budget: bool  # the script reads KOHAI_BUDGET_S
    writes: dict[str, str] = field(default_factory=dict)  # file -> text, only absent ones
    kept: list[str] = field(default_factory=list)  # files that exist and stay as they are


def find_script(root: Path) -> str:
    """The one training script of `root`, relative; AdoptError when none or several."""
    for rank in SCRIPT_RANKS:
        found = sorted(
            {
                p.relative_to(root).as_posix()
                for pattern in rank
                for p in root.glob(pattern)
                if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])
            }
        )
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise AdoptError(
                f"several training scripts in {root}: {', '.join(found)}; name one with --train"
            )
    raise AdoptError(
        f"no training script found in {root} (looked for train.py, train_*.py, */train.py, "
        "train.sh): name it with --train FILE"
    )


def resolve_script(root: Path, train: str) -> str:
    """`--train FILE` as a path inside the repository, relative to it."""
    candidate = Path(train)
    path = candidate if candidate.is_absolute() else root / candidate
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise AdoptError(f"--train {train}: not inside {root}") from None
    if not path.is_file():
        raise AdoptError(f"--train {train}: no such file in {root}")
    return relative.as_posix()


def guess_metric(source: str) -> tuple[str, str, bool]:
    """(metric, direction, found): the first known metric name the script mentions."""
    for name, direction in KNOWN_METRICS:
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", source):
            return name, direction, True
    return DEFAULT_METRIC[0], DEFAULT_METRIC[1], False


def command_for(script: str) -> str:
    """How the harness runs the script from the repository root."""
    if script.endswith(".sh"):
        return f"bash {script}"
    return f"python {script}"


def render_toml(adoption: Adoption) -> str:
    """kohai.toml for the adopted script: valid as written, every guess marked to check."""
    metric_note = (
        f"found in {adoption.script}; check it is the number to improve"
        if adoption.metric_found
        else f"a placeholder: {adoption.script} names no metric kohai knows; put yours here"
    )
    return f"""\
# kohai.toml: written by `kohai init` from {adoption.script}. Check every line marked CHECK.
[metric]
name = "{adoption.metric}"  # CHECK: {metric_note}
direction = "{adoption.direction}"  # CHECK: "minimize" or "maximize"

[train]
command = "{adoption.command}"  # run from the repository root
budget = "5m"                  # training time; the script sees it as KOHAI_BUDGET_S and stops itself
grace = "60s"                  # after the budget: SIGTERM, then SIGKILL after this grace
seeds = 1                      # seeds per ordinary run
confirm_seeds = 3              # seeds a candidate must have before a merge
baseline_seeds = 3             # seeds for the baseline after each merge

[files]
editable = ["{adoption.script}"]  # CHECK: the only files a student may change
frozen = []                    # CHECK: files hashed and refused if an experiment changes them

# Without [eval] the result is the script's own last line, `{adoption.metric}: <number>`,
# and every result says "unsealed". The sealed evaluator is a frozen command, run from
# the base commit after training, that reads the weights in KOHAI_ARTIFACT_DIR and writes
# {{"{adoption.metric}": <number>}} to KOHAI_EVAL_FILE (docs/trainer.md, "Metrics protocol"):
# [eval]
# command = "python evaluate.py"
# budget = "2m"
"""


def render_program(adoption: Adoption) -> str:
    """program.md: the agents' research context, with the parts only the user can write."""
    better = "Lower" if adoption.direction == "minimize" else "Higher"
    return f"""\
# {adoption.root.name}

## Goal

{"Minimise" if adoption.direction == "minimize" else "Maximise"} `{adoption.metric}`. \
{better} is better. Each run trains `{adoption.script}` for a fixed
wall-clock budget (`KOHAI_BUDGET_S`), so an idea wins only if it does better
in the same time.

## The problem

TODO: what the model learns, from which data, and what a good result looks like.

## What may change

Only the files listed in `files.editable` of `kohai.toml`. TODO: which
ideas are in scope (architecture, optimiser, schedule, data order) and which
are not.
"""


def plan_adoption(root: Path, train: str | None = None) -> Adoption:
    """Decide what `kohai init` writes in `root`; reads files, writes nothing."""
    if not root.is_dir():
        raise AdoptError(f"{root} is not a directory")
    script = resolve_script(root, train) if train else find_script(root)
    source = (root / script).read_text(encoding="utf-8", errors="replace")
    metric, direction, found = guess_metric(source)
    adoption = Adoption(
        root=root,
        script=script,
        command=command_for(script),
        metric=metric,
        direction=direction,
        metric_found=found,
        reads_budget="KOHAI_BUDGET_S" in source,
    )
    for name, render in ((CONFIG_FILE, render_toml), (PROGRAM_FILE, render_program)):
        if (root / name).exists():
            adoption.kept.append(name)
        else:
            adoption.writes[name] = render(adoption)
    if CONFIG_FILE in adoption.writes:
        try:  # what we write must load as it is
            loads_problem(adoption.writes[CONFIG_FILE])
        except ProblemError as exc:
            raise AdoptError(f"cannot write a valid {CONFIG_FILE} for {script}: {exc}") from exc
    return adoption


def write_adoption(adoption: Adoption) -> list[Path]:
    """Write the absent files, refusing (never overwriting) one that appeared meanwhile."""
    written = []
    for name, text in adoption.writes.items():
        path = adoption.root / name
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            adoption.kept.append(name)
            continue
        written.append(path)
    return written


def to_fill_in(adoption: Adoption) -> list[str]:
    """What the user must check or write before the first experiment (nothing in kept files)."""
    todo = []
    if CONFIG_FILE not in adoption.writes:
        if PROGRAM_FILE in adoption.writes:
            todo.append(f"the research context: the TODOs in {PROGRAM_FILE}")
        return todo
    if adoption.metric_found:
        todo.append(
            f"the metric: `{adoption.metric}` ({adoption.direction}) was found in "
            f"{adoption.script}; check [metric] in {CONFIG_FILE}"
        )
    else:
        todo.append(
            f"the metric: {adoption.script} names none kohai knows; set [metric] name and "
            f"direction in {CONFIG_FILE}"
        )
    todo.append(
        f"the editable files: [files] editable lists only {adoption.script}; add what "
        "students may change, and list what they must not in frozen"
    )
    todo.append(
        f"the evaluator contract: the script must print `{adoption.metric}: <number>` as its "
        "last line (unsealed), or add an [eval] command that scores the saved weights (sealed)"
    )
    if not adoption.reads_budget:
        todo.append(
            f"the budget: {adoption.script} does not read KOHAI_BUDGET_S; it is stopped with "
            "SIGTERM at the budget, so it should save and report before then"
        )
    if PROGRAM_FILE in adoption.writes:
        todo.append(f"the research context: the TODOs in {PROGRAM_FILE}")
    return todo
