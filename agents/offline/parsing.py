"""Python parsing for the offline agents, one thread at a time.

CPython before 3.11.8 and 3.12.1 keeps the depth counter of its AST
constructor in shared state (gh-106905): two threads parsing at once can
fail with `SystemError: AST constructor recursion depth mismatch`. The
offline advisor and simulated hosts parse knobs from threads of one
process (the bot's worker threads, the benchmarks' simulated hosts), so
every parse of theirs goes through this lock. Parsing a knob file takes
microseconds; the lock costs nothing measurable.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    with _LOCK:
        return ast.parse(source)


def literal(text: str) -> Any:
    """`ast.literal_eval` of source text (it parses, so it takes the lock too)."""
    with _LOCK:
        return ast.literal_eval(text)
