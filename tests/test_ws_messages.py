"""The JSON the server sends for a live recording (docs/protocol.md, "Voice"): the shapes pages read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from capsearch.voice.agreement import Settler
from capsearch.ws.messages import VoiceFinal, VoiceHits, VoicePartial, VoiceStopped


def sent(message: VoicePartial | VoiceFinal | VoiceHits | VoiceStopped) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(message.dump())
    return loaded


def test_a_partial_carries_its_settled_and_tentative_words_and_the_whole_text() -> None:
    message = VoicePartial(
        id="voice-0001", text="a dog running on", seconds=1.5, settled="a dog", tentative="running on"
    )
    assert sent(message) == {
        "type": "voice.partial",
        "id": "voice-0001",
        "text": "a dog running on",
        "seconds": 1.5,
        "settled": "a dog",
        "tentative": "running on",
    }


def test_a_partial_from_a_settler() -> None:
    settler = Settler()
    settler.update("a dog")
    split = settler.update("A dog, running")
    message = VoicePartial(
        id="voice-0001", text="A dog, running", seconds=2.0, settled=split.settled, tentative=split.tentative
    )
    assert (sent(message)["settled"], sent(message)["tentative"]) == ("A dog,", "running")


def test_a_partial_nobody_split_is_all_tentative() -> None:
    # What the server sent before LocalAgreement: nothing has settled yet, so old senders stay right.
    message = sent(VoicePartial(id="voice-0001", text="a dog", seconds=0.8))
    assert (message["settled"], message["tentative"], message["text"]) == ("", "a dog", "a dog")
    empty = sent(VoicePartial(id="voice-0001", text="", seconds=0.8))
    assert (empty["settled"], empty["tentative"]) == ("", "")


def test_a_partial_whose_hypothesis_rewrote_settled_words_keeps_them() -> None:
    rewritten = VoicePartial(
        id="voice-0001", text="a frog running", seconds=2.4, settled="a dog", tentative="running"
    )
    message = sent(rewritten)
    assert (message["text"], message["settled"], message["tentative"]) == (
        "a frog running",
        "a dog",
        "running",
    )


def hits(**fields: Any) -> VoiceHits:
    return VoiceHits(
        id="voice-0001", transcript="a dog", query="a dog", hits=[], no_match=True, html="<p>", **fields
    )


def test_hits_say_whether_they_are_partial() -> None:
    assert sent(hits())["partial"] is False  # the final's hits, as before
    live = sent(hits(partial=True))
    assert live["partial"] is True
    assert set(live) == {"type", "id", "transcript", "query", "hits", "no_match", "html", "partial"} | {
        "sort",
        "uploaded_from",
        "uploaded_to",
        "in_range",
    }


@pytest.mark.parametrize("reason", ["silence", "max_seconds"])
def test_stopped_names_the_recording_and_the_reason(reason: str) -> None:
    assert sent(VoiceStopped(id="voice-0001", reason=reason)) == {
        "type": "voice.stopped",
        "id": "voice-0001",
        "reason": reason,
    }


def test_stopped_has_only_two_reasons() -> None:
    with pytest.raises(ValidationError):
        VoiceStopped(id="voice-0001", reason="bored")


def test_final_is_unchanged() -> None:
    message = sent(VoiceFinal(id="voice-0001", text="a dog running", seconds=2.0))
    assert message == {"type": "voice.final", "id": "voice-0001", "text": "a dog running", "seconds": 2.0}
