"""Dynamic batching of model requests, and the compute arbiter the models' batchers share."""

from capsearch.batching.arbiter import ComputeArbiter
from capsearch.batching.batcher import Batcher
from capsearch.batching.requests import Priority

__all__ = ["Batcher", "ComputeArbiter", "Priority"]
