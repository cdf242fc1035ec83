"""Streaming a job's life to the bot without ever slowing the job down.

The harness calls in from its own threads; this reporter queues what it is
given and one background thread posts it: phase changes in order, progress
coalesced to at most one per second, log lines batched, and a heartbeat when
nothing else was sent for a while (every event extends the lease). When the
bot is down, only this thread waits and retries; training goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from bot.protocol import MEASURED_PHASE, JobEvent
from trainer.hostapi import HostClient, JobGone
from trainer.metrics import numeric_values

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
PROGRESS_EVERY_S = 1.0
LOG_EVERY_S = 2.0
MAX_LOG_LINES = 200  # per event; older unsent lines are dropped when the bot is away


class JobReporter:
    def __init__(
        self,
        client: HostClient,
        job_id: int,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        progress_every_s: float = PROGRESS_EVERY_S,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.heartbeat_s = heartbeat_s
        self.progress_every_s = progress_every_s
        self.log_every_s = log_every_s
        self.cancel = threading.Event()  # set when the bot says stop, or the job is gone
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._phases: collections.deque[JobEvent] = collections.deque()
        self._progress: JobEvent | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self._last_sent = 0.0
        self._last_progress = 0.0
        self._last_log = 0.0
        self._thread = threading.Thread(
            target=self._loop, name=f"job-{job_id}-reporter", daemon=True
        )

    def __enter__(self) -> JobReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def phase(self, name: str, head_sha: str | None = None) -> None:
        with self._lock:
            self._phases.append(JobEvent(kind="phase", phase=name, head_sha=head_sha))

    def measured(self, seed: int, metric: str, value: float | None) -> None:
        """One seed finished while the job goes on: the bot shows it on the PR at once.

        A phase event (sent in order, never dropped as progress may be); `value`
        None is a seed that ended without a metric. The completion still
        carries every run: this is only what a researcher sees sooner.
        """
        metrics = {metric: value} if value is not None else {}
        event = JobEvent(kind="phase", phase=MEASURED_PHASE, seed=seed, metrics=metrics)
        with self._lock:
            self._phases.append(event)

    def progress(self, seed: int, record: dict) -> None:
        step = record.get("step")
        event = JobEvent(
            kind="progress",
            seed=seed,
            step=int(step)
            if isinstance(step, int | float) and not isinstance(step, bool)
            else None,
            metrics=numeric_values({k: v for k, v in record.items() if k != "step"}),
        )
        with self._lock:
            self._progress = event

    def line(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)

    def close(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is pending (briefly) and stop the thread."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=flush_timeout_s)

    def _next_event(self, now: float, final: bool) -> tuple[JobEvent | None, str]:
        with self._lock:
            if self._phases:
                return self._phases.popleft(), "phase"
            if self._progress is not None and (
                final or now - self._last_progress >= self.progress_every_s
            ):
                event, self._progress = self._progress, None
                return event, "progress"
            if self._lines and (final or now - self._last_log >= self.log_every_s):
                lines = list(self._lines)
                self._lines.clear()
                return JobEvent(kind="log", lines=lines), "log"
        if not final and now - self._last_sent >= self.heartbeat_s:
            return JobEvent(kind="heartbeat"), "heartbeat"
        return None, ""

    def _send(self, event: JobEvent, give_up: threading.Event) -> None:
        try:
            reply = self.client.event(self.job_id, event, stop=give_up)
        except JobGone as exc:
            log.warning("%s; stopping the job", exc)
            self.cancel.set()
            return
        except Exception as exc:  # noqa: BLE001 - reporting must not kill the job
            log.warning("job %s: event failed: %s", self.job_id, exc)
            return
        if reply is not None and reply.cancel:
            self.cancel.set()

    def _loop(self) -> None:
        self._last_sent = time.monotonic() - self.heartbeat_s  # first heartbeat at once
        while True:
            final = self._done.is_set()
            now = time.monotonic()
            event, kind = self._next_event(now, final)
            if event is None:
                if final:
                    return
                self._done.wait(0.2)
                continue
            self._send(event, self._done)  # retries stop once the job is over
            now = time.monotonic()
            self._last_sent = now
            if kind == "progress":
                self._last_progress = now
            elif kind == "log":
                self._last_log = now
