"""Reading what a training script reports, in either of the two protocols.

1. JSON lines appended to `KOHAI_METRICS_FILE`: step points such as
   `{"step": 100, "train_loss": 1.9}` and one line with `"final": true`.
2. Autoresearch-style `name: value` summary lines printed at the end
   (`val_bpb: 0.9979`), for scripts that do not know kohai.

The parsers are pure functions of text, so the harness's decisions about a
run can be tested without running anything; the file itself is read only
through `trainer.safeio` (the job controls it), with byte caps, in a thread
of its own (`MetricsWatch`).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.safeio import NotRegular, read_from, read_tail

MAX_METRICS_BYTES = 64 << 20  # read per run; past it progress stops (the tail is still read)
MAX_LINE_BYTES = 64 << 10  # a longer line is no metrics record
MAX_CURVE_POINTS = 5000  # past it the curve is thinned to every other point
READ_CHUNK = 1 << 20
TAIL_BYTES = 64 << 10

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
    """The whole metrics file, read as a regular file only and at most MAX_METRICS_BYTES."""
    follower = MetricsFollower(path, curve_key=curve_key)
    return follower.finish()


class MetricsFollower:
    """The complete new lines of a growing metrics file, read the way the job cannot steer.

    The file is the job's: it may be replaced by a FIFO, a device or a symlink
    to a host file, or grow without end. Each read opens it afresh through
    `trainer.safeio` (a regular file only, no link followed, never blocking),
    reads at most READ_CHUNK, and the whole run at most `max_bytes`; a line
    longer than MAX_LINE_BYTES is dropped. Anything but a regular file is a
    `finding` and the file is not read again. `reading` accumulates the final
    line, the last step point and the curve (thinned past MAX_CURVE_POINTS).
    """

    def __init__(
        self,
        path: Path,
        *,
        root: Path | None = None,
        curve_key: str = "train_loss",
        max_bytes: int = MAX_METRICS_BYTES,
    ) -> None:
        self.path = path
        self.root = root
        self.curve_key = curve_key
        self.max_bytes = max_bytes
        self.reading = MetricsReading()
        self.finding: str | None = None
        self.capped = False
        self._offset = 0
        self._partial = b""
        self._overlong = False
        self._stride = 1
        self._points = 0

    def new_records(self) -> list[dict[str, Any]]:
        """Every complete record appended since the last call (up to the caps)."""
        records: list[dict[str, Any]] = []
        while not (self.finding or self.capped):
            try:
                room = min(READ_CHUNK, self.max_bytes - self._offset)
                data, size = read_from(self.path, self._offset, room, root=self.root)
            except FileNotFoundError:
                break
            except NotRegular as exc:
                self.finding = f"KOHAI_METRICS_FILE: {exc}"
                break
            except OSError:
                break
            if size < self._offset:  # truncated or replaced: start again from its beginning
                self._offset, self._partial, self._overlong = 0, b"", False
                continue
            if not data:
                break
            self._offset += len(data)
            records += self._lines(data)
            if self._offset >= self.max_bytes:
                self.capped = True
        return records

    def _lines(self, data: bytes) -> list[dict[str, Any]]:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an unterminated last line waits for its end
        if self._overlong and lines:  # the rest of a line already found too long
            lines.pop(0)
            self._overlong = False
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial, self._overlong = b"", True
        out = []
        for raw in lines:
            if len(raw) > MAX_LINE_BYTES:
                continue
            record = parse_json_line(raw.decode("utf-8", errors="replace"))
            if record is not None:
                self._absorb(record)
                out.append(record)
        return out

    def _absorb(self, record: dict[str, Any]) -> None:
        reading = self.reading
        if record.get("final") is True:
            reading.final = record
            return
        step = record.get("step")
        if isinstance(step, int | float) and not isinstance(step, bool):
            reading.last_step = record
            value = record.get(self.curve_key)
            if isinstance(value, int | float) and math.isfinite(value):
                self._points += 1
                if self._points % self._stride == 0:
                    reading.curve.append([float(step), float(value)])
                if len(reading.curve) > MAX_CURVE_POINTS:
                    reading.curve = reading.curve[::2]  # a new list: readers keep a whole one
                    self._stride *= 2

    def finish(self) -> MetricsReading:
        """Read what is left (a last line without its newline counts: the run is over).

        Past the byte cap, the final line is looked for in the file's tail.
        """
        self.new_records()
        if self._partial and not self._overlong and not self.capped:
            record = parse_json_line(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
            if record is not None:
                self._absorb(record)
        if self.capped and self.finding is None:
            try:
                tail = read_tail(self.path, TAIL_BYTES, root=self.root)
            except OSError:
                tail = b""
            for raw in tail.split(b"\n")[1:]:
                record = parse_json_line(raw.decode("utf-8", errors="replace"))
                if record is not None and record.get("final") is True:
                    self.reading.final = record
        return self.reading


class MetricsWatch(threading.Thread):
    """Follows the metrics file in a thread of its own, so the budget's clock never waits on it.

    Every `interval_s` it reads what is new (bounded by the follower's caps)
    and hands each record to `on_record`; `stop()` ends it and returns the
    reading, without waiting longer than `join_s` for a read in flight.
    """

    def __init__(
        self,
        follower: MetricsFollower,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        *,
        interval_s: float = 0.25,
    ) -> None:
        super().__init__(name="kohai-metrics", daemon=True)
        self.follower = follower
        self.on_record = on_record
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            stopping = self._stop_event.wait(self.interval_s)
            for record in self.follower.new_records():
                if self.on_record is not None:
                    try:
                        self.on_record(record)
                    except Exception:  # noqa: BLE001 - progress is best effort; the run goes on
                        pass
            if stopping:
                return

    def curve(self) -> list[list[float]]:
        return list(self.follower.reading.curve)

    def stop(self, join_s: float = 10.0) -> MetricsReading:
        """The reading so far, after a last read (the thread's own, when it answers in time)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=join_s)
        if not self.is_alive():
            return self.follower.finish()
        return self.follower.reading
