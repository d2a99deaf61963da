"""Errors that reach a person: each has a stable machine `code`, a plain sentence and an HTTP status."""

from __future__ import annotations

from typing import ClassVar


class CapsearchError(Exception):
    """Base for errors shown to users. `code` is stable API; `message` is a plain sentence."""

    code: str = "error"
    status_code: int = 400
    # Seconds after which trying again may succeed (sent as `Retry-After`); None: retrying won't help.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        if retry_after is not None:
            self.retry_after = retry_after


class IntakeError(CapsearchError):
    """A file was refused before anything was stored.

    Codes: empty_file, too_large, unsupported_type, type_mismatch, corrupt_image, too_many_pixels.
    """

    STATUS_BY_CODE: ClassVar[dict[str, int]] = {
        "empty_file": 422,
        "too_large": 413,
        "unsupported_type": 415,
        "type_mismatch": 415,
        "corrupt_image": 422,
        "too_many_pixels": 413,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, status_code=self.STATUS_BY_CODE.get(code, 422))


class BusyError(CapsearchError):
    """A model queue is full; the caller should retry later."""

    code = "busy"
    status_code = 503
    retry_after = 2.0


class ShuttingDownError(CapsearchError):
    """The server is stopping and no longer accepts model work."""

    code = "shutting_down"
    status_code = 503
    retry_after = 5.0


class RateLimitedError(CapsearchError):
    """One client sent more of one kind of request than its limit allows (`retry_after` says when)."""

    code = "rate_limited"
    status_code = 429


class DatabaseUnavailableError(CapsearchError):
    """The database cannot be reached right now; nothing was changed, and retrying later will work."""

    code = "database_unavailable"
    status_code = 503
    retry_after = 5.0


class ModelError(CapsearchError):
    """A model batch failed; only the requests of that batch see this."""

    code = "model_error"
    status_code = 500


class NotFoundError(CapsearchError):
    code = "not_found"
    status_code = 404


class ModelUnavailableError(CapsearchError):
    """A configured model is neither cached nor downloadable. Its message names the model and the fix."""

    code = "model_unavailable"
    status_code = 503


class NoWorkersError(CapsearchError):
    """Distributed mode: no live worker serves the model this request needs (none has heartbeated)."""

    code = "no_workers"
    status_code = 503
    retry_after = 5.0


class ModelTimeoutError(CapsearchError):
    """Distributed mode: a model worker did not answer before the request's deadline."""

    code = "model_timeout"
    status_code = 504
    retry_after = 2.0


class BrokerUnavailableError(CapsearchError):
    """Distributed mode: Redis does not answer, so no model work can be handed out right now."""

    code = "broker_unavailable"
    status_code = 503
    retry_after = 5.0
