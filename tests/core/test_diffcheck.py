"""What a host's change may touch (bot/core/diffcheck.py): table-driven, pure."""

from __future__ import annotations

import pytest

from bot.core.diffcheck import (
    GITLINK,
    SYMLINK,
    Change,
    command_paths,
    file_findings,
    findings,
    link_escapes,
    parse_raw,
    summary,
)
from bot.problem import loads_problem

PROBLEM = loads_problem(
    """
[metric]
name = "loss"
[files]
editable = ["train.py", "model/*.py"]
frozen = ["prepare.py"]
[data]
command = "python -m tools.fetch --out data"
[eval]
command = "python score.py evaluate"
"""
)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (Change("train.py"), None),
        (Change("model/mlp.py", "A"), None),
        (Change("prepare.py"), "a frozen file"),
        (Change("kohai.toml"), "kohai.toml holds the budget"),
        (Change(".github/workflows/ci.yml", "A"), "GitHub workflows"),
        (Change("score.py"), "the [eval] or [data] command runs"),
        (Change("tools/fetch.py", "A"), "the [eval] or [data] command runs"),
        (Change("pwn.py", "A"), "outside files.editable"),
        (Change("train.py", "D", "000000"), None),  # deleting an editable file is a change like any
        (Change("model/vendor.py", "A", GITLINK), "a submodule"),
        (Change("model/x.py", "A", SYMLINK, link="/proc/self/environ"), "outside the checkout"),
        (Change("model/x.py", "A", SYMLINK, link="../../etc/passwd"), "outside the checkout"),
        (Change("model/x.py", "A", SYMLINK, link="mlp.py"), None),
    ],
)
def test_each_change_is_allowed_or_named_with_its_reason(change: Change, why: str | None) -> None:
    found = findings([change], PROBLEM)
    if why is None:
        assert found == []
    else:
        [line] = found
        assert line.startswith(f"{change.path}: ") and why in line


def test_the_rogue_hosts_push_is_named_path_by_path() -> None:
    """The reported attack: the evaluator, kohai.toml and a new script, beside an honest edit."""
    pushed = [Change("kohai.toml"), Change("prepare.py"), Change("pwn.py", "A"), Change("train.py")]
    found = findings(
        pushed, loads_problem('[metric]\nname = "loss"\n[files]\neditable = ["train.py"]\n')
    )
    assert [line.split(":")[0] for line in found] == ["kohai.toml", "prepare.py", "pwn.py"]
    text = summary(found)
    assert text.startswith("changes the lab does not allow: kohai.toml")
    assert "train.py:" not in text


def test_a_summary_is_bounded() -> None:
    text = summary([f"f{i}.py: outside" for i in range(50)])
    assert text.endswith("(and 30 more)") and "f19.py" in text and "f20.py" not in text


def test_git_raw_output_is_parsed_with_modes_and_blobs() -> None:
    raw = (
        f":100644 100644 {'a' * 40} {'b' * 40} M\0train.py\0"
        f":000000 120000 {'0' * 40} {'c' * 40} A\0link\0"
        f":000000 160000 {'0' * 40} {'d' * 40} A\0sub\0"
    )
    assert parse_raw(raw) == [
        Change("train.py", "M", "100644", "b" * 40),
        Change("link", "A", SYMLINK, "c" * 40),
        Change("sub", "A", GITLINK, "d" * 40),
    ]
    assert parse_raw("") == []


@pytest.mark.parametrize(
    ("path", "target", "escapes"),
    [
        ("a.py", "b.py", False),
        ("d/a.py", "../b.py", False),
        ("d/a.py", "../../b.py", True),
        ("a.py", "/etc/passwd", True),
        ("a.py", "", True),
        ("a.py", "..", True),
    ],
)
def test_symlink_targets(path: str, target: str, escapes: bool) -> None:
    assert link_escapes(path, target) is escapes


def test_command_paths_cover_arguments_and_modules() -> None:
    assert {"score.py", "evaluate"} <= command_paths("python score.py evaluate")
    assert {"pkg/run.py", "pkg/run/__init__.py", "pkg/run/__main__.py"} <= command_paths(
        "python -m pkg.run"
    )
    assert command_paths(None) == set()
    assert "'x.py" in command_paths("python 'x.py")  # unbalanced quotes: split on spaces


def test_file_findings_read_githubs_list_the_same_way() -> None:
    found = file_findings(["train.py", "prepare.py"], ["*.py"], ["prepare.py"], set())
    assert found == ["prepare.py: a frozen file (files.frozen)"]
