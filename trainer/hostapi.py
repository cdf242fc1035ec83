"""The host side of the bot's host API: lease, events, complete, release.

Hosts must ride out bot restarts: every call retries connection errors, 429
and 5xx answers with exponential backoff (capped at ~10 s) while the job keeps
running. A 401 is not retried: the token is wrong and waiting will not fix it.

Every lease has an id; the client remembers it per job and puts it in each
event, result and release, so the bot can tell this lease from a later one of
the same job (a 409 then means "not yours any more": stop and drop it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import httpx

from bot.protocol import Job, JobEvent, JobResult

log = logging.getLogger(__name__)

LEASE_WAIT_S = 25
BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 10.0


class HostAuthError(RuntimeError):
    """The bot refused the host token (401)."""


class PushRefused(RuntimeError):
    """The bot would not publish the commit (wrong branch, not a fast-forward, ...)."""


class JobGone(RuntimeError):
    """The bot no longer knows this job as ours (404/409/410): stop working on it."""


@dataclass
class EventReply:
    lease_expires_at: float | None
    cancel: bool


def backoff_delays(start: float = BACKOFF_START_S, cap: float = BACKOFF_CAP_S):
    """0.5, 1, 2, 4, 8, 10, 10, ... seconds."""
    delay = start
    while True:
        yield delay
        delay = min(cap, delay * 2)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


class HostClient:
    """One student's authenticated client; safe to share between a job's threads."""

    def __init__(
        self,
        bot_url: str,
        name: str,
        token: str,
        *,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        defences: str = "",
    ) -> None:
        self.bot_url = bot_url.rstrip("/")
        self.name = name
        self.defences = defences  # what this host enforces; sent with each lease request
        self.stop = stop or threading.Event()
        self.leases: dict[int, str] = {}  # job id -> the lease id it was handed out under
        self._http = httpx.Client(
            base_url=self.bot_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"kohai-host/{name}"},
            timeout=httpx.Timeout(10.0, read=LEASE_WAIT_S + 15.0),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _wait(seconds: float, stop: threading.Event | None) -> bool:
        """Sleep between retries; True when `stop` was set meanwhile (give up)."""
        if stop is not None:
            return stop.wait(seconds)
        time.sleep(seconds)
        return False

    def request(
        self, method: str, path: str, *, stop: threading.Event | None = None, **kwargs
    ) -> httpx.Response | None:
        """The first non-retryable answer; None if `stop` was set while retrying."""
        for delay in backoff_delays():
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                log.warning("%s %s: %s; retrying in %.1fs", method, path, exc, delay)
            else:
                if response.status_code == 401:
                    raise HostAuthError(
                        f"the bot at {self.bot_url} refused the token for host {self.name!r} (401)"
                    )
                if not _retryable(response):
                    return response
                log.warning(
                    "%s %s: HTTP %s; retrying in %.1fs", method, path, response.status_code, delay
                )
            if self._wait(delay, stop):
                return None
        return None  # unreachable: backoff_delays never ends

    def lease(self, wait_s: int = LEASE_WAIT_S) -> Job | None:
        """A job, or None after `wait_s` seconds without one (or when stopping)."""
        response = self.request(
            "POST",
            f"/api/hosts/{self.name}/lease",
            params={"wait": wait_s, **({"defences": self.defences} if self.defences else {})},
            stop=self.stop,
        )
        if response is None or response.status_code == 204:
            return None
        response.raise_for_status()
        job = Job.from_dict(response.json())
        self.leases[job.id] = job.lease_id
        return job

    def event(
        self, job_id: int, event: JobEvent, *, stop: threading.Event | None = None
    ) -> EventReply | None:
        event.lease_id = event.lease_id or self.leases.get(job_id, "")
        response = self.request(
            "POST", f"/api/jobs/{job_id}/events", json=event.to_dict(), stop=stop
        )
        if response is None:
            return None
        if response.status_code in (404, 409, 410):
            raise JobGone(f"job {job_id}: HTTP {response.status_code}")
        response.raise_for_status()
        body = response.json() if response.content else {}
        return EventReply(body.get("lease_expires_at"), bool(body.get("cancel", False)))

    def complete(
        self, job_id: int, result: JobResult, *, stop: threading.Event | None = None
    ) -> bool:
        """Post the result until acknowledged; False only if `stop` was set first."""
        result.lease_id = result.lease_id or self.leases.get(job_id, "")
        response = self.request(
            "POST", f"/api/jobs/{job_id}/complete", json=result.to_dict(), stop=stop
        )
        if response is None:
            return False
        if response.status_code in (404, 409, 410):
            log.warning(
                "job %s: the bot refused the result (HTTP %s)", job_id, response.status_code
            )
            return True
        response.raise_for_status()
        return True

    def push(
        self, job_id: int, branch: str, bundle: bytes, *, stop: threading.Event | None = None
    ) -> str:
        """Send a git bundle of the job's new commit; the sha the bot pushed to `branch`.

        Hosts hold read-only tokens: the bot checks the bundle and pushes it
        as the App. Raises PushRefused with the bot's reason when it will not.
        """
        response = self.request(
            "POST",
            f"/api/jobs/{job_id}/push",
            params={"branch": branch, "lease_id": self.leases.get(job_id, "")},
            content=bundle,
            headers={"Content-Type": "application/x-git-bundle"},
            stop=stop,
        )
        if response is None:
            raise PushRefused("the host is stopping")
        if response.status_code >= 400:
            try:
                reason = response.json().get("error", "")
            except ValueError:
                reason = response.text[:300]
            raise PushRefused(f"the bot refused the push (HTTP {response.status_code}): {reason}")
        return str(response.json()["sha"])

    def release(self, job_id: int, *, stop: threading.Event | None = None) -> bool:
        params = {"lease_id": self.leases.get(job_id, "")}
        response = self.request("POST", f"/api/jobs/{job_id}/release", params=params, stop=stop)
        return response is not None and response.status_code < 400
