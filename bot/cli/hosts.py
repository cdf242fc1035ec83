"""`kohai hosts add|rotate|list`: register students (GPU hosts) in the bot's database.

A token is shown once, when it is made. Registering a name twice would
silently re-key the host already running under it, so `add` refuses an
existing name and `rotate` is the explicit way to a new token (the old one
stops working at once). The database must be the bot's: `KOHAI_DB` must name
an existing file unless `--create` is given.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys

from bot.cli.common import CliError, console, db_path, open_store
from bot.gpus import GpuSpecError, format_gpus, parse_gpus

NAME_RULE = (
    "lowercase letters, digits and '-', starting with a letter, at most 32 ('any' is reserved)"
)


def valid_name(name: str) -> bool:
    """A student name: it becomes a label (`student:<name>`) and a path segment on the host."""
    return bool(re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name)) and name != "any"


def bot_url() -> str:
    """The URL hosts are told to reach the bot at: what `kohai serve` calls its public URL."""
    return os.environ.get("KOHAI_PUBLIC_URL", "").strip().rstrip("/") or "http://127.0.0.1:8000"


def host_command(name: str, gpus: list[int]) -> str:
    """The command that starts this student's host, its token in a file only its owner reads."""
    command = (
        f"kohai host run --name {name} --token-file {name}.token (mode 0600) --bot-url {bot_url()}"
    )
    return command + (f" --gpus {format_gpus(gpus)}" if gpus else "")


def _show_token(verb: str, name: str, token: str, gpus: list[int] | None) -> None:
    """The token alone on stdout (`TOKEN=$(kohai hosts add fern)`), what to do with it on stderr."""
    say = functools.partial(print, file=sys.stderr, flush=True)
    say(f"{verb}; its host token, shown once, is printed on stdout.")
    say(f"start its host (the bot at {bot_url()}, from KOHAI_PUBLIC_URL) with:")
    say(f"  {host_command(name, gpus or [])}")
    print(token, flush=True)


def add(args: argparse.Namespace) -> int:
    from bot.engine.jobs import register_student
    from bot.engine.labs import LabListError, parse_lab_list

    if not valid_name(args.name):
        raise CliError(f"invalid student name {args.name!r}: {NAME_RULE}", code=2)
    try:
        gpus = parse_gpus(args.gpus)
        allowed = parse_lab_list(getattr(args, "labs", None))
    except (GpuSpecError, LabListError) as exc:
        raise CliError(str(exc), code=2) from exc
    store = open_store(create=bool(getattr(args, "create", False)), can_create=True)
    if store.one("SELECT name FROM students WHERE name = ?", (args.name,)):
        raise CliError(
            f"student {args.name} is already registered in {db_path()}: its running host keeps "
            f"its token; `kohai hosts rotate {args.name}` issues a new one (the old one then "
            "stops working)"
        )
    token = register_student(store, args.name, len(gpus))
    with store.transaction():
        store.update("students", args.name, {"labs": ",".join(allowed) if allowed else None})
    serves = ", ".join(allowed) if allowed else "every lab"
    _show_token(
        f"registered student {args.name} in {db_path()} (GPUs {format_gpus(gpus)}; serves {serves})",
        args.name,
        token,
        gpus,
    )
    return 0


def rotate(args: argparse.Namespace) -> int:
    from bot.engine.jobs import rotate_student_token

    store = open_store()
    token = rotate_student_token(store, args.name)
    if token is None:
        raise CliError(
            f"no student {args.name} in {db_path()}: `kohai hosts list` shows the registered ones"
        )
    print(
        f"the old token of {args.name} stops working now: restart its host with the new one",
        file=sys.stderr,
    )
    _show_token(f"new token for student {args.name}", args.name, token, None)
    return 0


def list_hosts(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    rows = open_store().query("SELECT name, gpus, state, labs FROM students ORDER BY name")
    if not rows:
        print("no students registered; add one with `kohai hosts add <name>`")
        return 0
    table = Table("student", "gpus", "state", "labs", box=None, pad_edge=False)
    table.columns[1].justify = "right"
    for row in rows:
        cells = (row["name"], str(row["gpus"]), row["state"], row["labs"] or "all")
        table.add_row(*map(Text, cells))  # Text, never rich markup
    console().print(table)
    return 0
