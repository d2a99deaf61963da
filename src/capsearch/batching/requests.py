"""What a batcher queues: one request, and how urgent it is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1


@dataclass(eq=False)  # identity equality: deque.remove must find this exact request
class Request(Generic[I, O]):
    item: I
    priority: Priority
    enqueued: float
    future: asyncio.Future[O] = field(repr=False)
    # Called on the loop as the batch goes to the model (to show "captioning"); may return the item
    # to run instead (a live partial: with the audio that arrived while it queued).
    on_start: Callable[[], I | None] | None = field(default=None, repr=False)
