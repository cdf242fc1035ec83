"""Outbox and inbox rows as records: decoded where every reader decodes, verbatim where
the reader must refuse a damaged row itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.engine.inbox import pending, store_delivery
from bot.outbox import writes as w
from bot.records import Delivery, OutboxEntry
from bot.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "k.db")


def outbox_row(store: Store, args: str, **extra: Any) -> int:
    with store.transaction():
        return store.insert(
            "outbox",
            {"repo": "lab/x", "op": "close", "args": args, "created_at": 1.0} | extra,
        )


def test_an_enqueued_write_reads_back_as_its_entry(store: Store) -> None:
    with store.transaction():
        row_id = w.enqueue(
            store, "lab/x", 7, w.Comment(number=3, kind="result", key="1-0", body="r")
        )
    entry = store.get(OutboxEntry, row_id)
    assert entry is not None
    assert (entry.repo, entry.installation_id, entry.op, entry.state) == (
        "lab/x",
        7,
        "comment",
        "pending",
    )
    assert entry.args == {"number": 3, "kind": "result", "key": "1-0", "body": "r"}
    assert entry.marker == "<!-- kohai:result:1-0 -->"
    assert (entry.attempts, entry.next_attempt_at, entry.result, entry.done_at) == (
        0,
        0,
        None,
        None,
    )
    assert w.decode(entry.op, entry.args) == w.Comment(number=3, kind="result", key="1-0", body="r")


def test_a_done_entry_carries_githubs_answer(store: Store) -> None:
    row_id = outbox_row(store, '{"number": 2}', state="done", result='{"comment_id": 9}')
    entry = store.get(OutboxEntry, row_id)
    assert entry is not None and entry.result == {"comment_id": 9}


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        ('"not an object"', TypeError),
        ("[1, 2]", TypeError),
        ("{broken", ValueError),
        ("", ValueError),
        ("null", TypeError),
    ],
)
def test_arguments_that_are_not_an_object_stay_as_stored(
    store: Store, stored: str, error: type[Exception]
) -> None:
    """Read as `{}`, a damaged row could become a write with no arguments; kept as
    text, the worker refuses it as malformed, for the reason it is."""
    entry = store.get(OutboxEntry, outbox_row(store, stored))
    assert entry is not None and entry.args == stored
    with pytest.raises(error):
        w.decode(entry.op, entry.args)


def test_a_broken_result_reads_as_empty(store: Store) -> None:
    entry = store.get(OutboxEntry, outbox_row(store, "{}", result="{oops"))
    assert entry is not None and entry.result == {}


def test_a_delivery_keeps_its_body_as_github_sent_it(store: Store) -> None:
    body = b'{"action": "created", "comment": {"id": 5, "body": "/rerun \\u00e9"}}'
    assert store_delivery(store, "d-1", "issue_comment", "created", body)
    assert not store_delivery(store, "d-1", "issue_comment", "created", body)
    assert store_delivery(store, "d-2", "push", None, b"not json at all")
    first, second = pending(store)
    assert (first.delivery_id, first.event, first.action, first.status) == (
        "d-1",
        "issue_comment",
        "created",
        "pending",
    )
    assert first.payload == body.decode() and first.note is None and first.processed_at is None
    assert first.received_at > 0
    assert (second.action, second.payload) == (None, "not json at all")


def test_pending_deliveries_come_oldest_first_and_limited(store: Store) -> None:
    for n in range(5):
        store_delivery(store, f"d-{n}", "ping", None, b"{}")
    with store.transaction():
        store.update("inbox", 2, {"status": "routed"})
    assert [d.delivery_id for d in pending(store, limit=3)] == ["d-0", "d-2", "d-3"]
    assert [d.id for d in store.rows(Delivery, order_by="id DESC", limit=2)] == [5, 4]
