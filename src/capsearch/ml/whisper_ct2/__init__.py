"""Whisper on CTranslate2: converted once from the checkpoint, cached, partials on a shortened window."""

from capsearch.ml.whisper_ct2.transcriber import CT2WhisperTranscriber

__all__ = ["CT2WhisperTranscriber"]
