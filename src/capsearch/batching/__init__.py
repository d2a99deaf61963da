"""Dynamic batching of model requests."""

from capsearch.batching.batcher import Batcher, Priority

__all__ = ["Batcher", "Priority"]
