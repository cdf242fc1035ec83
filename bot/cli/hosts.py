"""`kohai hosts add|list`: register students (GPU hosts) in the bot's database."""

from __future__ import annotations

import argparse
import os
import re
import sys

from bot.engine.jobs import register_student
from bot.engine.labs import LabListError, parse_lab_list
from bot.store import Store

NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _store() -> Store:
    return Store(os.environ.get("KOHAI_DB", "kohai.db"))


def add(args: argparse.Namespace) -> int:
    if not NAME.match(args.name) or args.name == "any":
        print(
            f"kohai: invalid student name {args.name!r}: lowercase letters, digits and '-', "
            "starting with a letter ('any' is reserved)",
            file=sys.stderr,
        )
        return 2
    try:
        allowed = parse_lab_list(getattr(args, "labs", None))
    except LabListError as exc:
        print(f"kohai: {exc}", file=sys.stderr)
        return 2
    store = _store()
    token = register_student(store, args.name, args.gpus)
    with store.transaction():
        store.update("students", args.name, {"labs": ",".join(allowed) if allowed else None})
    serves = ", ".join(allowed) if allowed else "every lab"
    print(
        f"registered student {args.name} ({args.gpus} GPU(s), serves {serves}); "
        "its host token, shown once:"
    )
    print(token)
    return 0


def list_hosts(args: argparse.Namespace) -> int:
    rows = _store().query("SELECT name, gpus, state, labs FROM students ORDER BY name")
    if not rows:
        print("no students registered; add one with `kohai hosts add <name>`")
        return 0
    print(f"{'student':<16} {'gpus':>4}  {'state':<12} labs")
    for row in rows:
        print(f"{row['name']:<16} {row['gpus']:>4}  {row['state']:<12} {row['labs'] or 'all'}")
    return 0
