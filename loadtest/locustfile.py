"""Simulated people against a running capsearch (docs/benchmarks.md "Load"); `make load` runs it.

Four kinds of user: uploaders (REST multipart, a fresh JPEG each time), typists (the search box: a
request per growing prefix, ~250 ms apart, over the page's /ui/search or the API's /api/search),
voice searchers (POST /api/search/voice with one spoken WAV) and socket watchers (a page's /ws held
open, pinged, counting the live `fragment` messages every upload causes).

Outcomes: a coded refusal (429/503 with a JSON `code`) is not a failure; it is reported to Locust as a
failure whose message starts with "coded " so the summary (loadtest/report.py) counts it apart. A
voice query answered 422 `no_speech` is an expected answer (the tiny Whisper hears random things).
At the end the ids of every acknowledged upload and the socket counts go to $LOAD_RESULTS_FILE.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from typing import Any

import websocket  # websocket-client: synchronous, so gevent's patched sockets make it cooperative
from locust import HttpUser, User, between, constant, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment
from media import distinct_jpeg, spoken_wav

PHRASES = [
    "a dog running on the beach",
    "two people riding bikes on the street",
    "a red car near a tree",
    "a cat sitting on a table",
    "a boat on the water",
]
KEYSTROKE_S = 0.25  # the page's hx-trigger "input changed delay:250ms"
PING_EVERY_S = 5.0

acked_ids: set[int] = set()
counts: Counter[str] = Counter()
voice_wav, voice_source = spoken_wav(PHRASES[0])


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return str(code) if code else None


def settle(response: ResponseContextManager, ok: tuple[int, ...]) -> bool:
    """Mark the response: True when it is one of `ok`; coded refusals get a "coded ..." failure."""
    status = response.status_code
    if status in ok:
        response.success()
        return True
    code = _code(response)
    if status in (429, 503) and code:
        counts[f"refused {status} {code}"] += 1
        response.failure(f"coded {status} {code}")
    elif status == 0:  # no HTTP answer at all: say what the connection did
        response.failure(f"no response: {response.error!r}"[:200])
    else:
        response.failure(f"HTTP {status} {code or (response.text or '')[:80]}")
    return False


class Uploader(HttpUser):
    weight = 3
    wait_time = between(1, 3)

    @task
    def upload(self) -> None:
        files = {"files": (f"load-{random.getrandbits(48):012x}.jpg", distinct_jpeg(), "image/jpeg")}
        with self.client.post("/api/images", files=files, name="/api/images", catch_response=True) as r:
            if settle(r, (201, 202)):
                for item in r.json().get("items", []):
                    image = item.get("image") or {}
                    if item.get("ok") and image.get("id") is not None:
                        acked_ids.add(int(image["id"]))


class Typist(HttpUser):
    weight = 4
    wait_time = between(1, 4)

    @task
    def type_a_query(self) -> None:
        phrase = random.choice(PHRASES)
        # The page's box hits /ui/search (HTML); an API client types against /api/search (JSON).
        page = random.random() < 0.5
        path = "/ui/search" if page else "/api/search"
        for end in range(1, len(phrase) + 1):
            if phrase[end - 1] == " " and end < len(phrase):
                continue  # a trailing space does not change the query
            with self.client.get(path, params={"q": phrase[:end]}, name=path, catch_response=True) as r:
                settle(r, (200,))
            time.sleep(KEYSTROKE_S)


class VoiceSearcher(HttpUser):
    weight = 1
    wait_time = between(3, 8)

    @task
    def speak(self) -> None:
        files = {"file": ("query.wav", voice_wav, "audio/wav")}
        name = "/api/search/voice"
        with self.client.post("/api/search/voice", files=files, name=name, catch_response=True) as r:
            if r.status_code == 422 and _code(r) == "no_speech":
                counts["voice no_speech"] += 1
                r.success()
            elif settle(r, (200,)):
                counts["voice transcribed"] += 1


class SocketWatcher(User):
    """A page left open: holds /ws, pings every few seconds, counts the fragments pushed to it."""

    weight = 2
    wait_time = constant(0)

    def on_start(self) -> None:
        self.ws: websocket.WebSocket | None = None

    def _connect(self) -> websocket.WebSocket | None:
        url = self.environment.host.replace("http", "ws", 1).rstrip("/") + "/ws"
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(url, timeout=10)
        except Exception as e:  # any failure to connect is a failure of this request
            self._report("WS", "connect /ws", started, e)
            return None
        self._report("WS", "connect /ws", started)
        counts["ws connects"] += 1
        return ws

    def _report(self, kind: str, name: str, started: float, error: BaseException | None = None) -> None:
        events.request.fire(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    @task
    def watch(self) -> None:
        if self.ws is None:
            self.ws = self._connect()
            if self.ws is None:
                time.sleep(1)
                return
        ws = self.ws
        sent = time.perf_counter()
        pong = False
        try:
            ws.send(json.dumps({"type": "ping"}))
            while (left := sent + PING_EVERY_S - time.perf_counter()) > 0:
                ws.settimeout(left)
                try:
                    message = json.loads(ws.recv())
                except websocket.WebSocketTimeoutException:
                    break
                kind = message.get("type")
                if kind == "pong" and not pong:
                    pong = True
                    self._report("WS", "ping -> pong", sent)
                elif kind == "fragment":
                    counts["ws fragments"] += 1
                else:
                    counts[f"ws {kind}"] += 1
            if not pong:
                self._report("WS", "ping -> pong", sent, TimeoutError(f"no pong in {PING_EVERY_S:g} s"))
        except (websocket.WebSocketException, OSError) as e:
            counts["ws dropped"] += 1
            self._report("WS", "ping -> pong", sent, e)
            self.ws = None

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None


@events.init.add_listener
def _announce(environment: Environment, **_kwargs: Any) -> None:
    print(f"voice query: {len(voice_wav)} bytes of WAV ({voice_source}: {PHRASES[0]!r})")


@events.quitting.add_listener
def _save_results(environment: Environment, **_kwargs: Any) -> None:
    path = os.environ.get("LOAD_RESULTS_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"acked_ids": sorted(acked_ids), "counts": dict(counts), "voice": voice_source}, f)
