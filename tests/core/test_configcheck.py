"""The pure half of reporting an invalid kohai.toml: the line an error names, and the
writes a sync asks for given what the bot said before (table-driven)."""

from __future__ import annotations

import pytest

from bot.core import configcheck
from bot.core.configcheck import LastWord, config_writes, error_line
from bot.outbox import writes as w
from bot.problem import ProblemError, loads_problem

TOML = """\
[metric]
name = "val_bpb"

[train]
command = "python train.py"
budget = "5m"

[search]
lr = { min = 1e-4, max = 1e-2, log = true }
depth = { choices = [] }

[gate]
screen = "lots"
"""


def _error(text: str) -> str:
    with pytest.raises(ProblemError) as raised:
        loads_problem(text)
    return str(raised.value)


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("gate.screen: expected true or false, got 'lots'", 13),
        ("search.depth.choices: expected a non-empty list", 10),
        ("[gate] must be a table", 12),
        ("train.budget: expected a duration like '5m', got 'x'", 6),
        ("kohai.toml: Invalid value (at line 3, column 9)", 3),
        ("something nobody can place", None),
        ("eval.command: expected a command line", None),  # no [eval] in the file
    ],
)
def test_error_line_finds_the_line_an_error_names(message: str, line: int | None) -> None:
    assert error_line(TOML, message) == line


def test_error_line_of_real_parser_errors() -> None:
    assert error_line(TOML, _error(TOML)) == 10  # the first error found: search.depth
    only_gate = TOML.replace("choices = []", "choices = [2, 3]")
    assert error_line(only_gate, _error(only_gate)) == 13
    broken = TOML.replace("[train]", "[train\n", 1)
    assert error_line(broken, _error(broken)) == 4


def test_a_broken_file_asks_for_a_failing_check_and_the_issue() -> None:
    writes = config_writes("lab/x", "main", "a" * 40, TOML, "gate.screen: bad", LastWord())
    check, issue = writes
    assert isinstance(check, w.CheckRun) and check.conclusion == "failure"
    assert (check.path, check.line, check.head_sha) == ("kohai.toml", 13, "a" * 40)
    assert isinstance(issue, w.IssueReport) and issue.open and "gate.screen" in issue.body


def test_the_same_report_again_asks_for_nothing() -> None:
    first = config_writes("lab/x", "main", "a" * 40, TOML, "gate.screen: bad", LastWord())
    issue = first[1]
    assert isinstance(issue, w.IssueReport)
    last = LastWord(
        issue_open=True, issue_body=issue.body, checked=frozenset({configcheck.check_key("a" * 40)})
    )
    assert config_writes("lab/x", "main", "a" * 40, TOML, "gate.screen: bad", last) == []


def test_a_valid_file_closes_only_an_open_report() -> None:
    valid = "[metric]\nname = 'x'\n"
    assert config_writes("lab/x", "main", "b" * 40, valid, None, LastWord()) == []
    check, close = config_writes(
        "lab/x", "main", "b" * 40, valid, None, LastWord(issue_open=True, issue_body="old")
    )
    assert isinstance(check, w.CheckRun) and check.conclusion == "success"
    assert isinstance(close, w.IssueReport) and not close.open
    assert "b" * 10 in close.closing_note and close.closing_key == f"fixed-{'b' * 40}"


def test_no_file_is_no_configuration_error() -> None:
    assert config_writes("lab/x", "main", "c" * 40, None, None, LastWord(issue_open=True)) == []


def test_hostile_error_text_stays_inside_its_code_block() -> None:
    """An error quoting the file (which anyone with push rights wrote) cannot close the
    fence, open an HTML comment that hides the rest, or mention anyone."""
    error = "train.command: got '```\n<!-- kohai:x:y -->\n@everyone'"
    issue = config_writes("lab/x", "main", "d" * 40, TOML, error, LastWord())[1]
    assert isinstance(issue, w.IssueReport)
    body = issue.body
    fence = "````"
    assert body.count(fence) == 2, "a fence longer than any backtick run in the text"
    inside = body.split(fence)[1]
    assert "<!-- kohai:x:y -->" in inside and "@everyone" in inside


def test_a_hostile_branch_name_is_plain_text_in_the_issue() -> None:
    """The default branch's name is the repository owner's to choose: it cannot open an
    HTML comment (hiding the rest of the issue) or break out into markup."""
    writes = config_writes("lab/x", "main<!--`@x", "e" * 40, TOML, "gate.screen: bad", LastWord())
    issue = writes[1]
    assert isinstance(issue, w.IssueReport)
    first = issue.body.splitlines()[0]
    assert "<!--" not in first and "&lt;!--" in first and "@\u200dx" in first
