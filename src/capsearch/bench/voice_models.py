"""The transcriber alone, per backend: what one pass costs (a final's full window, a partial's
shortened one) and how many words it gets wrong on spoken photo searches, with and without a lead-in
of silence before the first word.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import numpy as np

from capsearch.bench.voice_wer import PHRASES, festival_missing, festival_speech, score, trim
from capsearch.config import Settings
from capsearch.ml.speech import Clip
from capsearch.voice.audio import SAMPLE_RATE

# (label, backend, model settings): the default CTranslate2 setup runs partials on an int8 copy.
VARIANTS: tuple[tuple[str, str, dict[str, bool]], ...] = (
    ("transformers", "transformers", {}),
    ("ctranslate2 (int8 partials)", "ctranslate2", {}),
    ("ctranslate2 float32", "ctranslate2", {"transcriber_partials_int8": False}),
    ("ctranslate2 int8", "ctranslate2", {"transcriber_int8": True}),
)
LEAD_INS_MS = (0, 250)
PARTIAL_SECONDS = (1.0, 2.0, 3.0, 5.0)
# Targets of issue 12.
WER_SLACK = 0.02


def _transcriber(settings: Settings, model_dir: str, backend: str, extra: dict[str, bool]) -> Any:
    from capsearch.ml.factory import build_transcriber

    models = settings.models.model_copy(
        update={"profile": "tiny", "transcriber_id": model_dir, "transcriber_backend": backend, **extra}
    )
    transcriber = build_transcriber(settings.model_copy(update={"models": models}))
    transcriber.load()
    return transcriber


def _fastest(fn: Any, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _measure(
    settings_json: str, model_dir: str, variant: tuple[str, str, dict[str, bool]], quick: bool
) -> dict[str, Any]:
    """In a child: pass times and word error rates of one backend."""
    settings = Settings.model_validate_json(settings_json)
    label, backend, extra = variant
    model = _transcriber(settings, model_dir, backend, extra)
    speech = [trim(festival_speech(p)) for p in (PHRASES[:8] if quick else PHRASES)]
    long = np.concatenate([speech[0], np.zeros(SAMPLE_RATE // 4, np.float32), speech[1], speech[2]])
    repeat = 2 if quick else 4
    row: dict[str, Any] = {"backend": label}
    row["final_pass_s"] = _fastest(lambda: model.predict([Clip(speech[0])]), repeat)
    for seconds in PARTIAL_SECONDS:
        part = Clip(long[: int(seconds * SAMPLE_RATE)], final=False)
        row[f"partial_{seconds:g}s_pass_s"] = _fastest(lambda part=part: model.predict([part]), repeat)
    for lead_ms in LEAD_INS_MS:
        lead = np.zeros(int(lead_ms * SAMPLE_RATE / 1000), np.float32)
        clips = [np.concatenate([lead, s]) for s in speech]
        row[f"final_wer_lead_{lead_ms}"], texts = score(
            lambda batch: model.predict([Clip(c) for c in batch]), clips
        )
        row[f"partial_wer_lead_{lead_ms}"], _ = score(
            lambda batch: model.predict([Clip(c, final=False) for c in batch]), clips
        )
        row[f"example_lead_{lead_ms}"] = texts[0]
    row["phrases"] = len(speech)
    model.close()
    return row


def bench_transcriber_models(
    settings: Settings, model_dir: str, quick: bool
) -> tuple[list[dict[str, Any]], str]:
    """One row per backend; a note with the verdicts on word error rate and the lead-in."""
    missing = festival_missing()
    if missing:
        return [], f"word error rates skipped: {missing}"
    rows = []
    for variant in VARIANTS:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            rows.append(pool.apply(_measure, (settings.model_dump_json(), model_dir, variant, quick)))
    base = next(r for r in rows if r["backend"] == "transformers")
    lines = []
    for r in rows:
        if r["backend"] == "transformers":
            continue
        for lead_ms in LEAD_INS_MS:
            today = base["final_wer_lead_0"]  # the transformers full-window path, no lead-in
            got = r[f"final_wer_lead_{lead_ms}"]
            ok = "ok" if got <= today + WER_SLACK else "MISS"
            same = base[f"final_wer_lead_{lead_ms}"]
            lines.append(
                f"{r['backend']} finals, lead-in {lead_ms} ms: WER {got:.3f} vs transformers {today:.3f} "
                f"(today's path, no lead-in; ≤ +{WER_SLACK}: {ok}; {same:.3f} with this lead-in); "
                f"partials {r[f'partial_wer_lead_{lead_ms}']:.3f}"
            )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    phrases = rows[0]["phrases"]
    lines.append(f"load average {load}; {os.cpu_count()} CPUs; {phrases} phrases, Festival HTS voice")
    table = [
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if not k.startswith("example")}
        for r in rows
    ]
    return table, "\n".join(lines)
