"""Novelty: the similarity measure's calibration, repeats of knob values, and the screen."""

from __future__ import annotations

import pytest

from bot.core.novelty import TEXT_THRESHOLD, Prior, find_repeat, numbers, screen, trigram_cosine

COSINE = (
    "Use cosine learning-rate decay to zero over the training budget instead of a constant "
    "learning rate after warmup."
)
COSINE_PARAPHRASE = (
    "Replace the constant learning rate after warmup with a cosine decay of the learning rate "
    "to zero over the budget."
)
COSINE_TERSE = (
    "Cosine learning rate decay to zero over the budget instead of constant LR after warmup"
)
RESTARTS = "Use a cosine learning-rate schedule with warm restarts every 100 steps."
DROPOUT = "Add dropout of 0.1 to the attention and MLP layers to reduce overfitting."
WIDER = "Increase the model width from 64 to 128 embedding dimensions."
WIDER_PARAPHRASE = "Increase the embedding width of the model from 64 to 128."
WIDER_STILL = "Increase the model width from 64 to 256 embedding dimensions."
DEEPER = "Increase the model depth from 2 to 4 layers."
TIE = "Tie the input embedding and output projection weights to save parameters."
TIE_PARAPHRASE = "Tie the weights of the output projection and the input embedding."


@pytest.mark.parametrize(
    ("a", "b", "duplicate"),
    [
        (COSINE, COSINE_PARAPHRASE, True),
        (COSINE, COSINE_TERSE, True),
        (COSINE_PARAPHRASE, COSINE_TERSE, True),
        (WIDER, WIDER_PARAPHRASE, True),
        (TIE, TIE_PARAPHRASE, True),
        (COSINE, RESTARTS, False),  # same family, another idea
        (COSINE, DROPOUT, False),
        (WIDER, DEEPER, False),  # same template, another knob
        (DROPOUT, TIE, False),
        (RESTARTS, COSINE_PARAPHRASE, False),
        (DEEPER, WIDER_PARAPHRASE, False),
    ],
)
def test_trigram_cosine_separates_paraphrases_from_other_ideas(
    a: str, b: str, duplicate: bool
) -> None:
    """The calibration the threshold rests on (the numbers are in bot/core/novelty.py's docstring)."""
    score = trigram_cosine(a, b)
    assert (score >= TEXT_THRESHOLD) is duplicate, score
    assert trigram_cosine(a, b) == pytest.approx(trigram_cosine(b, a))


def test_same_words_other_numbers_is_another_experiment() -> None:
    assert trigram_cosine(WIDER, WIDER_STILL) >= TEXT_THRESHOLD
    assert numbers(WIDER) != numbers(WIDER_STILL)
    assert find_repeat("Wider", WIDER_STILL, {}, [Prior("#3", "Wider", WIDER, {})]) is None
    assert numbers("lr 3e-3, then 0.003 and 10") == frozenset({0.003, 10.0})


def test_empty_and_hostile_text_is_not_a_duplicate_of_everything() -> None:
    assert trigram_cosine("", COSINE) == 0.0
    assert trigram_cosine("!!! ??? <!-- -->", "### ***") == 0.0
    huge = "learning rate " * 20_000
    assert find_repeat("x", huge, {}, [Prior("#1", "y", COSINE, {})]) is None


PRIORS = [
    Prior(
        "#4", "LEARNING_RATE = 0.003162", "Set LEARNING_RATE ...", {"LEARNING_RATE": 0.003162}, "b1"
    ),
    Prior("#5", "Cosine decay", COSINE, {}, "b1"),
    Prior("#6", "N_EMBD = 96", "Set N_EMBD ...", {"N_EMBD": 96}, None),
]


@pytest.mark.parametrize(
    ("knobs", "text", "base", "label", "why"),
    [
        ({"LEARNING_RATE": 0.00316}, "any text", "b1", "#4", "the same knob values"),
        ({"LEARNING_RATE": 0.00316}, "any text", "b2", None, None),  # the base moved
        ({"LEARNING_RATE": 0.01}, "any text", "b1", None, None),
        ({"N_EMBD": 96}, "x", "b2", "#6", "the same knob values"),  # not measured yet: same
        ({"N_EMBD": 96, "N_LAYER": 3}, "x", "b1", None, None),
        ({}, COSINE_PARAPHRASE, "b1", "#5", "a near-duplicate hypothesis"),
        ({}, RESTARTS, "b1", None, None),
        # a knob proposal is its values: similar template text is not a repeat
        ({"LEARNING_RATE": 0.01}, COSINE, "b1", None, None),
    ],
)
def test_find_repeat(knobs, text, base, label, why) -> None:
    repeat = find_repeat("title", text, knobs, PRIORS, base_sha=base)
    if label is None:
        assert repeat is None
    else:
        assert repeat is not None and repeat.prior.label == label
        assert repeat.why.startswith(why)


def test_screen_sends_a_repeat_back_once_then_wants_the_difference() -> None:
    first = screen("Cosine", COSINE_PARAPHRASE, {}, PRIORS, base_sha="b1")
    assert first.verdict == "send_back"
    assert "#5" in first.feedback and "what is different" in first.feedback
    insisted = screen(
        "Cosine", COSINE_PARAPHRASE, {}, PRIORS, base_sha="b1", sent_back=True, difference=""
    )
    assert insisted.verdict == "refuse" and "#5" in insisted.feedback
    explained = screen(
        "Cosine",
        COSINE_PARAPHRASE,
        {},
        PRIORS,
        base_sha="b1",
        sent_back=True,
        difference="#5 crashed on a bug in the scheduler; this one clamps the step.",
    )
    assert explained.verdict == "accept"
    assert explained.note.startswith("**Repeats #5**")
    assert "clamps the step" in explained.note
    assert screen("Dropout", DROPOUT, {}, PRIORS).verdict == "accept"
