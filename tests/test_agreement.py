"""LocalAgreement-2 over successive partial transcripts (capsearch.voice.agreement)."""

from __future__ import annotations

import pytest

from capsearch.voice.agreement import Settled, Settler, normalise


def feed(*partials: str) -> list[Settled]:
    settler = Settler()
    return [settler.update(p) for p in partials]


def test_the_first_partial_is_all_tentative() -> None:
    assert feed("a dog running") == [Settled("", "a dog running", settled_changed=False)]


def test_words_two_partials_agree_on_settle() -> None:
    _, second, third = feed("a dog", "a dog run", "a dog running on the")
    assert second == Settled("a dog", "run", settled_changed=True)
    # "run" became "running": only the words both agree on settle, nothing new here.
    assert third == Settled("a dog", "running on the", settled_changed=False)


def test_settled_words_grow_as_the_hypotheses_agree_further() -> None:
    results = feed("a dog", "a dog running", "a dog running on", "a dog running on the beach")
    assert [r.settled for r in results] == ["", "a dog", "a dog running", "a dog running on"]
    assert [r.tentative for r in results] == ["a dog", "running", "on", "the beach"]
    assert [r.settled_changed for r in results] == [False, True, True, True]


def test_the_same_text_again_settles_all_of_it_once() -> None:
    results = feed("a red rocket", "a red rocket", "a red rocket")
    assert results[1] == Settled("a red rocket", "", settled_changed=True)
    assert results[2] == Settled("a red rocket", "", settled_changed=False)


def test_case_and_trailing_punctuation_do_not_count_but_the_latest_spelling_is_kept() -> None:
    _, second = feed("A dog.", "a Dog running")
    assert second == Settled("a Dog", "running", settled_changed=True)
    _, second = feed("a cat, on", "a cat on the sofa!")
    assert second.settled == "a cat on"
    assert second.tentative == "the sofa!"


def test_leading_punctuation_and_inner_characters_still_count() -> None:
    assert feed("dogs on", "dog's on")[1] == Settled("", "dog's on", settled_changed=False)
    assert feed("the 'beach", "the beach")[1] == Settled("the", "beach", settled_changed=True)


def test_a_disagreement_at_the_start_settles_nothing() -> None:
    results = feed("not running", "a dog running", "a dog running")
    assert [r.settled for r in results] == ["", "", "a dog running"]


def test_settled_words_never_change_when_a_later_partial_rewrites_them() -> None:
    settler = Settler()
    settler.update("a dog running")
    assert settler.update("a dog running on").settled == "a dog running"
    # Whisper changes its mind about a settled word: the settled words stay, and the new hypothesis's
    # words after the settled count are what is tentative.
    changed = settler.update("a frog running on the")
    assert changed == Settled("a dog running on", "the", settled_changed=True)
    assert changed.text == "a dog running on the"
    # Aligned by count: "over" stands for the settled "on", and "the" agrees with the last one's.
    assert settler.update("a frog jumping over the beach") == Settled(
        "a dog running on the", "beach", settled_changed=True
    )
    assert settler.update("a frog jumping over the beach") == Settled(
        "a dog running on the beach", "", settled_changed=True
    )


def test_a_shrinking_hypothesis_keeps_the_settled_words_and_has_no_tentative_part() -> None:
    settler = Settler()
    settler.update("a dog running on")
    settler.update("a dog running on the")
    assert settler.update("a dog") == Settled("a dog running on", "", settled_changed=False)
    # The words after the settled count are compared with that shorter hypothesis's (none).
    assert settler.update("a dog running on the beach") == Settled(
        "a dog running on", "the beach", settled_changed=False
    )
    assert settler.update("a dog running on the beach").settled == "a dog running on the beach"


@pytest.mark.parametrize("empty", ["", "   ", "\n"])
def test_empty_partials(empty: str) -> None:
    assert feed(empty) == [Settled("", "", settled_changed=False)]
    assert feed(empty, empty) == [Settled("", ""), Settled("", "")]
    # An empty hypothesis agrees with nothing: it only delays settling by one partial.
    results = feed("a dog", empty, "a dog", "a dog")
    assert [r.settled for r in results] == ["", "", "", "a dog"]
    settler = Settler()
    settler.update("a dog")
    settler.update("a dog")
    assert settler.update(empty) == Settled("a dog", "", settled_changed=False)


def test_whitespace_is_normalised_to_single_spaces() -> None:
    _, second = feed("  a   dog\trunning ", "a dog  running\non")
    assert second == Settled("a dog running", "on", settled_changed=True)
    assert second.text == "a dog running on"


def test_text_joins_the_parts() -> None:
    assert Settled("", "a dog").text == "a dog"
    assert Settled("a dog", "").text == "a dog"
    assert Settled("", "").text == ""


def test_the_settled_property_is_the_words_so_far() -> None:
    settler = Settler()
    assert settler.settled == ""
    settler.update("a dog")
    settler.update("a dog running")
    assert settler.settled == "a dog"


@pytest.mark.parametrize(
    ("word", "key"),
    [("Dog", "dog"), ("dog,", "dog"), ("dog?!", "dog"), ("dog…", "dog"), ("'dog'", "'dog"), ("...", "")],
)
def test_normalise(word: str, key: str) -> None:
    assert normalise(word) == key


def test_casefolding_is_unicode_aware() -> None:
    assert feed("die Straße", "DIE STRASSE entlang")[1].settled == "DIE STRASSE"
