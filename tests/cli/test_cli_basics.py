"""The command line a user meets first: --version, --help that explains, one-line errors.

Each test runs the real `kohai` in a child process, as a user would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot import __version__
from bot.cli import HANDLERS, build_parser
from tests.support.kohai_cli import kohai, one_line


def test_version_prints_the_version(tmp_path: Path) -> None:
    # On the old CLI `--version` was an argparse error (exit 2).
    done = kohai("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kohai {__version__}"


@pytest.mark.parametrize("command", sorted(HANDLERS))
def test_every_command_and_option_is_described_with_its_environment(command: str) -> None:
    """`-h` of every command: a description, a help line for each option, the variables read."""
    parser = build_parser()
    leaf = parser
    for word in command.split():
        (sub,) = [a for a in leaf._actions if a.__class__.__name__ == "_SubParsersAction"]
        leaf = sub.choices[word]  # type: ignore[attr-defined]
    assert leaf.description and leaf.description.strip(), command
    assert leaf.epilog and leaf.epilog.startswith("environment:"), command
    for action in leaf._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help.strip(), (
            f"{command}: {action.option_strings or action.dest}"
        )


def test_serve_help_lists_the_settings_it_reads(tmp_path: Path) -> None:
    done = kohai("serve", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for variable in (
        "KOHAI_GITHUB_APP_ID",
        "KOHAI_GITHUB_PRIVATE_KEY_PATH",
        "KOHAI_WEBHOOK_SECRET",
    ):
        assert re.search(rf"^\s+{variable}\s+\S", done.stdout, re.M), done.stdout
    assert "--wait-for-github" in done.stdout


def test_a_missing_database_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    # `KOHAI_DB=/nonexistent/x.db kohai hosts list` was a raw sqlite traceback.
    env = {"KOHAI_DB": str(tmp_path / "nonexistent" / "x.db")}
    done = kohai("hosts", "list", cwd=tmp_path, env=env)
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("kohai hosts list: no kohai database at ") and "KOHAI_DB" in line
    assert not (tmp_path / "nonexistent").exists()

    debug = kohai("--debug", "hosts", "list", cwd=tmp_path, env=env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "CliError" in debug.stderr


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    """Hostile input: KOHAI_DB names a text file; the user hears which setting, not sqlite."""
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not sqlite\n" * 100)
    done = kohai("hosts", "list", cwd=tmp_path, env={"KOHAI_DB": str(not_a_db)})
    assert done.returncode == 1
    assert f"KOHAI_DB={not_a_db}" in one_line(done.stderr)
    assert not_a_db.read_text() == "not sqlite\n" * 100


def test_a_garbage_key_file_names_the_variable_that_was_set(tmp_path: Path) -> None:
    # It used to name KOHAI_GITHUB_PRIVATE_KEY, a variable the user did not set.
    key = tmp_path / "app.pem"
    key.write_text("this is not a key\n")
    env = {
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY_PATH": str(key),
        "KOHAI_WEBHOOK_SECRET": "s",
        "KOHAI_DB": str(tmp_path / "k.db"),
    }
    done = kohai("serve", cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"kohai serve: KOHAI_GITHUB_PRIVATE_KEY_PATH={key} is not a PEM")
    assert "KOHAI_GITHUB_PRIVATE_KEY " not in line


def test_tables_show_text_as_written() -> None:
    """Hostile input: an agent-written title with rich markup is printed, not interpreted."""
    from bot.cli.history import format_table

    table = format_table(["id", "title"], [[1, "[bold red]win[/] [/]"], [22, None]]).splitlines()
    assert table[0].split() == ["id", "title"]
    assert set(table[1]) == {"─"}
    assert table[2].split(maxsplit=1) == ["1", "[bold red]win[/] [/]"]
    assert table[3].split() == ["22", "-"]


def test_a_broken_key_in_the_app_file_names_the_file(tmp_path: Path) -> None:
    """The key's messages name where it came from: the App file `kohai setup` wrote."""
    from bot.config import Settings
    from bot.github.preflight import check_private_key

    app_file = tmp_path / "app.toml"
    broken = "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
    app_file.write_text(f'app_id = 7\nwebhook_secret = "s"\nprivate_key = """{broken}"""\n')
    settings = Settings.from_env({"KOHAI_APP_FILE": str(app_file)})
    assert settings.private_key_source == f"{app_file}: private_key"
    check = check_private_key(settings.private_key, settings.private_key_source)
    assert not check.ok and check.message.startswith(f"{app_file}: private_key is not a PEM")
    given = Settings.from_env({"KOHAI_APP_FILE": str(app_file), "KOHAI_GITHUB_PRIVATE_KEY": broken})
    assert given.private_key_source == "KOHAI_GITHUB_PRIVATE_KEY"  # the environment wins
