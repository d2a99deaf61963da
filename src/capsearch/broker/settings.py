"""Distributed mode's settings (`CAPSEARCH_BROKER__*`); without `url`, everything runs in one process."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BrokerSettings(BaseModel):
    # e.g. redis://127.0.0.1:6379/0. Unset: the embedded single-process mode (no Redis needed).
    url: str | None = None
    # Every key this deployment uses starts with it: several deployments (or tests) share one Redis.
    prefix: str = Field("capsearch", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    # A caption job a worker took and did not acknowledge for this long (it died) goes to another.
    visibility_timeout_s: float = Field(30.0, gt=0)
    # A caption job delivered this many times without success fails its image with a clear error.
    max_attempts: int = Field(3, ge=1)
    # Workers announce themselves this often; one silent for `worker_ttl_s` counts as gone.
    heartbeat_s: float = Field(1.0, gt=0)
    worker_ttl_s: float = Field(5.0, gt=0)
    # A voice pass or query embedding not answered by then fails (`model_timeout`); a late answer is dropped.
    request_deadline_s: float = Field(30.0, gt=0)
    # How often a web replica looks for index changes when no doorbell rang (a missed pub/sub message).
    feed_poll_s: float = Field(1.0, gt=0)
    # Index changes older than this are pruned from the feed (a replica down longer rebuilds at start).
    feed_keep_s: float = Field(3600.0, gt=0)

    # A replica's folder of partial socket uploads, untouched this long, is deleted (the replica is gone).
    stale_partials_s: float = Field(3600.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.url)
