"""What every `kohai` command shares: the one-line error, the database it opens, its console.

A mistake a user can make (a missing file, a taken name, a malformed URL)
is raised as `CliError` with one line naming what to change; `kohai` prints
it and exits, without a traceback (`kohai --debug` shows them). This module
imports nothing heavy: a GPU host running `kohai host run` imports it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store import Store

DEFAULT_DB = "kohai.db"


class CliError(Exception):
    """A one-line reason to stop, naming what to change; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def db_path(env: dict[str, str] | None = None) -> Path:
    """The bot's database file: `KOHAI_DB`, or `kohai.db` in the current directory."""
    source = os.environ if env is None else env
    return Path(source.get("KOHAI_DB", "") or DEFAULT_DB)


def open_store(*, create: bool = False, can_create: bool = False) -> Store:
    """The bot's database, which must exist unless `create`.

    A command that registers something in a database nobody serves from is a
    silent mistake (a host token that no bot knows), and one that reports on
    it would report nothing; so a missing file is an error naming `KOHAI_DB`.
    `create` makes it (its directory must exist); `can_create` says the
    command has `--create`.
    """
    from bot.store import Store

    path = db_path()
    if path.is_dir():
        raise CliError(f"KOHAI_DB={path} is a directory: name the bot's database file")
    if not path.is_file():
        if not create:
            raise CliError(
                f"no kohai database at {path}: set KOHAI_DB to the bot's database file "
                "(the one `kohai serve` uses)"
                + (", or pass --create to make a new one" if can_create else "")
            )
        if not path.resolve().parent.is_dir():
            raise CliError(f"KOHAI_DB={path}: the directory {path.resolve().parent} does not exist")
    try:
        return Store(path)
    except Exception as exc:  # sqlite3.DatabaseError and friends: not a database we can open
        raise CliError(f"KOHAI_DB={path}: cannot open it as a kohai database ({exc})") from exc


def console(stderr: bool = False) -> Any:
    """A rich console for tables and progress (plain text when the output is not a terminal)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)
