"""The voice benchmark's word error rate: Levenshtein over normalised words."""

from __future__ import annotations

import pytest

from capsearch.bench.voice_wer import PHRASES, wer, word_errors, words


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Sunset over the mountains.") == ["sunset", "over", "the", "mountains"]
    assert words("A black-and-white photo, isn't it?") == [
        "a",
        "black",
        "and",
        "white",
        "photo",
        "isn't",
        "it",
    ]


@pytest.mark.parametrize(
    ("hypothesis", "errors"),
    [
        ("a dog running on the beach", 0),
        ("a dog running on the meat", 1),  # substitution
        ("dog running on the beach", 1),  # deletion (the lost first word)
        ("a dog running on the beach today", 1),  # insertion
        ("", 6),
        ("the beach", 4),
    ],
)
def test_word_errors(hypothesis: str, errors: int) -> None:
    assert word_errors("a dog running on the beach", hypothesis) == (errors, 6)


def test_wer_pools_errors_over_all_words() -> None:
    assert wer(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)


def test_the_phrase_set_is_big_enough_and_distinct() -> None:
    assert len(PHRASES) >= 30 and len(set(PHRASES)) == len(PHRASES)
