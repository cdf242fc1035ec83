"""Reading what a training script reports, in either of the two protocols.

1. JSON lines appended to `KOHAI_METRICS_FILE`: step points such as
   `{"step": 100, "train_loss": 1.9}` and one line with `"final": true`.
2. Autoresearch-style `name: value` summary lines printed at the end
   (`val_bpb: 0.9979`), for scripts that do not know kohai.

Everything here is a pure function of text, so the harness's decisions about a
run can be tested without running anything.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SUMMARY_LINE = re.compile(
    r"^\s*([A-Za-z_][\w./-]*)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)\s*$"
)


def numeric_values(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record; booleans, strings and NaN/inf are dropped.

    The result travels as JSON to the bot, which must never receive NaN.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out


def parse_json_line(line: str) -> dict[str, Any] | None:
    """One metrics-file line as a dict, or None for a blank, partial or non-object line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def parse_summary_lines(lines: list[str]) -> dict[str, float]:
    """`name: value` lines anywhere in the output; the last value of a name wins.

    Non-finite values are kept here (as floats) so the caller can tell
    "reported NaN" from "reported nothing".
    """
    found: dict[str, float] = {}
    for line in lines:
        match = _SUMMARY_LINE.match(line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


@dataclass
class MetricsReading:
    """What a metrics file said: the final line (if any), the curve and the last step point."""

    final: dict[str, Any] | None = None
    last_step: dict[str, Any] | None = None
    curve: list[list[float]] = field(default_factory=list)


def read_metrics_lines(lines: list[str], curve_key: str = "train_loss") -> MetricsReading:
    reading = MetricsReading()
    for line in lines:
        record = parse_json_line(line)
        if record is None:
            continue
        if record.get("final") is True:
            reading.final = record
            continue
        step = record.get("step")
        if isinstance(step, int | float) and not isinstance(step, bool):
            reading.last_step = record
            value = record.get(curve_key)
            if isinstance(value, int | float) and math.isfinite(value):
                reading.curve.append([float(step), float(value)])
    return reading


def read_metrics_file(path: Path, curve_key: str = "train_loss") -> MetricsReading:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return MetricsReading()
    return read_metrics_lines(text.splitlines(), curve_key)


class MetricsFollower:
    """Yields the complete new lines of a growing metrics file, for live progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""

    def new_records(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("r", encoding="utf-8", errors="replace") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except FileNotFoundError:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an unterminated last line waits for its end
        return [r for r in (parse_json_line(line) for line in lines) if r is not None]
