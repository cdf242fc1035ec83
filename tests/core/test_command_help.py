"""`/help` lists every command with its usage, and each example is a working line of its command."""

from bot.core import intents as i
from bot.core.commands import COMMANDS, Target, build_intents, help_text, parse_commands


def test_help_names_every_command_and_its_example() -> None:
    text = help_text()
    for command in COMMANDS.values():
        assert f"`{command.usage}`" in text
        if command.example:
            assert f"`{command.example}`" in text


def test_every_example_parses_to_its_command_and_is_accepted() -> None:
    target = Target(number=3, is_experiment=True, is_pull_request=True)
    for command in COMMANDS.values():
        if not command.example:
            continue
        [invocation] = parse_commands(command.example)
        assert invocation.name == command.name
        intents = build_intents([invocation], target, "bob", frozenset({"fern"}))
        refusals = [x for x in intents if isinstance(x, i.Reply) and "help" not in x.key]
        assert intents and not refusals, (command.example, intents)
