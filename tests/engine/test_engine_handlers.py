"""Every intent the router can return has exactly one handler that applies it."""

import typing

from bot.core import intents as i
from bot.engine import handlers
from bot.engine.handlers import HANDLERS, handles


def test_every_intent_type_has_a_handler_and_nothing_else_does() -> None:
    assert set(HANDLERS) == set(typing.get_args(i.Intent))


def test_handlers_live_in_the_handlers_module() -> None:
    for kind, function in HANDLERS.items():
        assert getattr(handlers, function.__name__) is function, kind


def test_a_second_handler_for_one_intent_is_refused() -> None:
    try:
        handles(i.Merge)(lambda engine, intent, event, repo: None)
    except TypeError as exc:
        assert "Merge" in str(exc)
    else:
        raise AssertionError("a second handler for Merge was accepted")
