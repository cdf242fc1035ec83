"""The advisor's and the student's prompt templates, shipped as package data.

Templates are markdown files with `$name` placeholders (`string.Template`:
`$$` is a literal dollar sign). Keeping them as files lets a lab tune the
wording without touching code; the rules they state are enforced elsewhere
(the trainer, the gate, `enforce_editable`), so a prompt can explain the rules
but never relax them.
"""

from __future__ import annotations

from importlib import resources
from string import Template

NAMES = (
    "advisor_system",
    "advisor_propose",
    "advisor_review",
    "advisor_plateau",
    "advisor_agent_system",
    "advisor_agent_propose",
    "advisor_agent_review",
    "student_system",
    "student_implement",
    "student_debug",
)


class PromptError(KeyError):
    """A template that does not exist, or one filled without all of its placeholders."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "prompt error"


def template(name: str) -> Template:
    if name not in NAMES:
        raise PromptError(f"no prompt template {name!r}; known: {', '.join(NAMES)}")
    source = resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(source)


def placeholders(name: str) -> list[str]:
    """The placeholder names template `name` needs, in order of first use."""
    return list(dict.fromkeys(template(name).get_identifiers()))


def load(name: str, **values: object) -> str:
    """Template `name` filled with `values`; every placeholder must be given.

    Extra values are allowed (callers may pass one set of facts to several
    templates); a missing one raises `PromptError` naming it.
    """
    missing = [key for key in placeholders(name) if key not in values]
    if missing:
        raise PromptError(f"prompt {name!r} needs values for: {', '.join(missing)}")
    return template(name).substitute({key: str(value) for key, value in values.items()})
