"""Catching up after downtime: which deliveries to ask for again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from bot.github.catchup import catch_up, delivery_ok, select_redeliveries
from bot.github.client import GitHubApp

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def attempt(
    id: int, guid: str, minute: int, status_code: int, status: str | None = None
) -> dict[str, Any]:
    at = datetime.fromtimestamp(T0 + 60 * minute, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": id,
        "guid": guid,
        "delivered_at": at,
        "redelivery": False,
        "status_code": status_code,
        "status": status or ("OK" if 200 <= status_code < 300 else "Invalid HTTP Response"),
        "event": "issues",
        "action": "labeled",
    }


CASES = [
    pytest.param([attempt(1, "a", 5, 502)], None, set(), ["a"], id="failed-once"),
    pytest.param([attempt(1, "a", 5, 0, "timed out")], None, set(), ["a"], id="no-response"),
    pytest.param([attempt(1, "a", 5, 202)], None, set(), [], id="accepted"),
    pytest.param(
        [attempt(2, "a", 9, 202), attempt(1, "a", 5, 503)],
        None,
        set(),
        [],
        id="later-redelivery-ok",
    ),
    pytest.param([attempt(1, "a", 5, 503)], None, {"a"}, [], id="already-in-inbox"),
    pytest.param([attempt(1, "a", 5, 503)], T0 + 600, set(), [], id="before-since"),
    pytest.param(
        [attempt(3, "a", 20, 503), attempt(1, "a", 5, 503)],
        T0 + 600,
        set(),
        ["a"],
        id="retried-after-since",
    ),
    pytest.param(
        [attempt(3, "b", 7, 500), attempt(2, "a", 6, 401), attempt(1, "c", 1, 200)],
        None,
        set(),
        ["a", "b"],
        id="oldest-first",
    ),
    pytest.param([attempt(1, "a", 5, 200, "failed")], None, set(), ["a"], id="status-not-ok"),
    pytest.param([{"id": 1, "status_code": 500}], None, set(), [], id="no-guid"),
]


@pytest.mark.parametrize(("deliveries", "since", "inbox", "expected"), CASES)
def test_select_redeliveries(
    deliveries: list[dict[str, Any]], since: float | None, inbox: set[str], expected: list[str]
) -> None:
    chosen = select_redeliveries(deliveries, since, inbox.__contains__)
    assert [d["guid"] for d in chosen] == expected


def test_the_newest_failed_attempt_is_the_one_redelivered() -> None:
    deliveries = [attempt(3, "a", 20, 503), attempt(1, "a", 5, 502)]
    [chosen] = select_redeliveries(deliveries, None, lambda guid: False)
    assert chosen["id"] == 3


def test_delivery_ok() -> None:
    assert delivery_ok({"status_code": 202, "status": "OK"})
    assert not delivery_ok({"status_code": 0})
    assert not delivery_ok({"status_code": 404, "status": "Not Found"})


async def test_catch_up_redelivers_missed_deliveries(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get("/app/hook/deliveries").respond(
        200,
        json=[
            attempt(14, "gone", 4, 502),
            attempt(13, "known", 3, 502),
            attempt(12, "missed", 2, 503),
            attempt(11, "fine", 1, 202),
        ],
    )
    asked = gh_mock.post("/app/hook/deliveries/12/attempts").respond(202, json={})
    gh_mock.post("/app/hook/deliveries/14/attempts").respond(
        422, json={"message": "Delivery too old to redeliver"}
    )
    result = await catch_up(github, T0, known_delivery_ids={"known"})
    assert result == ["missed"]
    assert asked.call_count == 1
    assert await catch_up(github, T0, known_delivery_ids=lambda guid: guid != "gone") == []
