"""Novelty: is a proposal a repeat of an experiment the lab has already tried?

A proposal repeats an earlier experiment when

- both set knob values and they are the same values on the same base (a knob
  experiment is exactly its values; its text is a template and says nothing
  more), or
- the proposal is free text (no knobs) and its title and hypothesis are a
  near-duplicate of the earlier one's: the cosine similarity of their
  character-trigram counts is at least `TEXT_THRESHOLD`, and they name the same
  numbers.

Why character trigrams and not word shingles: an advisor that repeats itself
paraphrases ("cosine decay of the learning rate to zero" / "cosine
learning-rate decay to zero"). Word-bigram Jaccard scores such paraphrases 0.1
to 0.4, no higher than unrelated ideas; trigram cosine, which survives
inflection, hyphenation and word order within phrases, scores them 0.74 to
0.86 while distinct ideas of the same lab ("add dropout" / "tie the
embeddings", "widen the model" / "deepen the model", cosine decay / warm
restarts) score 0.17 to 0.54 (the examples are in tests/core/test_novelty.py).
0.65 sits in the gap. The numbers rule keeps "width 64 to 128" and "width 64
to 256" apart: same words, different experiment.

The decision of what to do with a repeat (`screen`) is pure too: the first
repeat goes back to the advisor once, naming the earlier PR; a repeat the
advisor still wants must say what is different, and that note goes on the PR;
a repeat without one is refused.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TEXT_THRESHOLD = 0.65
NGRAM = 3
_WORD = re.compile(r"[0-9]+(?:[.][0-9]+)?(?:e[-+]?[0-9]+)?(?![a-z0-9])|[a-z0-9]+")
_NUMBER = re.compile(r"^[0-9]+(?:[.][0-9]+)?(?:e[-+]?[0-9]+)?$")


@dataclass(frozen=True)
class Prior:
    """An experiment already in the notebook, as novelty needs it."""

    label: str  # "#12" (its PR) or "exp-7"
    title: str
    hypothesis: str
    knobs: dict[str, Any]
    base_sha: str | None = None  # the base it was measured on (None: not measured yet)


@dataclass(frozen=True)
class Repeat:
    """The earlier experiment a proposal repeats, and how it was recognised."""

    prior: Prior
    why: str  # "the same knob values" or "a near-duplicate hypothesis (similarity 0.81)"
    similarity: float = 1.0


Verdict = Literal["accept", "send_back", "refuse"]


@dataclass(frozen=True)
class Screen:
    """What to do with a proposal: open it, send it back to the advisor once, or refuse it.

    `note` is the line for the PR body when a repeat is accepted (what is different),
    `feedback` the message the advisor gets when it is sent back or refused.
    """

    verdict: Verdict
    repeat: Repeat | None = None
    feedback: str = ""
    note: str = ""


def normalized_words(text: str) -> list[str]:
    """Lower-case words and numbers (`3e-3`, `0.01` kept whole); punctuation dropped."""
    return _WORD.findall(text.lower())


def trigram_cosine(a: str, b: str) -> float:
    """Cosine similarity of the character-trigram counts of two texts' normalized words."""
    ga, gb = _grams(a), _grams(b)
    if not ga or not gb:
        return 0.0
    dot = sum(count * gb[g] for g, count in ga.items())
    norm = math.sqrt(sum(v * v for v in ga.values()) * sum(v * v for v in gb.values()))
    return dot / norm if norm else 0.0


def numbers(text: str) -> frozenset[float]:
    """The numbers a text names, as values (3e-3 and 0.003 are one number)."""
    out = set()
    for word in normalized_words(text):
        if _NUMBER.match(word):
            try:
                out.add(round(float(word), 12))
            except ValueError:
                continue
    return frozenset(out)


def find_repeat(
    title: str,
    hypothesis: str,
    knobs: dict[str, Any],
    priors: Iterable[Prior],
    *,
    base_sha: str | None = None,
    threshold: float = TEXT_THRESHOLD,
) -> Repeat | None:
    """The earlier experiment this proposal repeats (the closest one), or None."""
    text = f"{title}\n{hypothesis}"
    best: Repeat | None = None
    for prior in priors:
        if knobs:
            if prior.knobs and _same_knobs(knobs, prior.knobs) and _same_base(base_sha, prior):
                return Repeat(prior, "the same knob values")
            continue
        if prior.knobs and not prior.hypothesis.strip():
            continue
        other = f"{prior.title}\n{prior.hypothesis}"
        score = trigram_cosine(text, other)
        if score >= threshold and numbers(text) == numbers(other):
            if best is None or score > best.similarity:
                best = Repeat(prior, f"a near-duplicate hypothesis (similarity {score:.2f})", score)
    return best


def screen(
    title: str,
    hypothesis: str,
    knobs: dict[str, Any],
    priors: Sequence[Prior],
    *,
    base_sha: str | None = None,
    sent_back: bool = False,
    difference: str = "",
) -> Screen:
    """Accept a new proposal; send a repeat back once; accept a repeat that says what differs.

    `sent_back` is True on the advisor's second answer, after it was told about
    the earlier experiment; `difference` is what it says is different this time.
    """
    repeat = find_repeat(title, hypothesis, knobs, priors, base_sha=base_sha)
    if repeat is None:
        return Screen("accept")
    label = repeat.prior.label
    if not sent_back:
        return Screen(
            "send_back",
            repeat,
            feedback=(
                f"This proposal repeats {label} ({repeat.prior.title!r}): {repeat.why}. "
                f"Propose something else, or, if you still want it, say what is different "
                f"from {label} this time."
            ),
        )
    if difference.strip():
        return Screen(
            "accept",
            repeat,
            note=f"**Repeats {label}** ({repeat.why}). What is different: {difference.strip()}",
        )
    return Screen(
        "refuse",
        repeat,
        feedback=f"Refused: it repeats {label} ({repeat.why}) and does not say what is different.",
    )


def _grams(text: str) -> Counter[str]:
    padded = f" {' '.join(normalized_words(text))} "
    return Counter(padded[i : i + NGRAM] for i in range(len(padded) - NGRAM + 1))


def _same_knobs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    return all(_same_value(a[k], b[k]) for k in a)


def _same_value(a: Any, b: Any) -> bool:
    """Floats within 0.1 % are one setting (3e-3 and 0.003001 are the same experiment)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-12)
    return bool(a == b)


def _same_base(base_sha: str | None, prior: Prior) -> bool:
    """A result on another base does not make the same change a repeat (the code moved)."""
    return base_sha is None or prior.base_sha is None or prior.base_sha == base_sha
