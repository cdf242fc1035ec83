"""Every intent the router can return has exactly one engine method that applies it."""

import typing

from bot.core import intents as i
from bot.engine.engine import HANDLERS, Engine, handles


def test_every_intent_type_has_a_handler_and_nothing_else_does() -> None:
    assert set(HANDLERS) == set(typing.get_args(i.Intent))


def test_handlers_are_engine_methods() -> None:
    for kind, method in HANDLERS.items():
        assert getattr(Engine, method.__name__) is method, kind


def test_a_second_handler_for_one_intent_is_refused() -> None:
    try:
        handles(i.Merge)(lambda engine, intent, event, repo: None)
    except TypeError as exc:
        assert "Merge" in str(exc)
    else:
        raise AssertionError("a second handler for Merge was accepted")
