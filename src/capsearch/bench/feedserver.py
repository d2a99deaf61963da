"""The server half of `capsearch bench --only feed`: the app in a child process with models of negligible
cost, and a probe that counts what the live feed costs there.

The probe wraps `EventBus.publish` (counting image events and stamping each one's publish time with
`time.monotonic()`, CLOCK_MONOTONIC on Linux: the same clock the pages read in the parent process)
and jinja2's `Template.render` (counting renders by template name).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import uvicorn

from capsearch.bench.fullstack import LoopLagMonitor
from capsearch.config import Settings
from capsearch.events import AppEvent, ImageChanged
from capsearch.server import uvicorn_config


def event_fields(event: AppEvent) -> tuple[int, str, str | None]:
    """(image id, kind, status) of a bus event; deletions have no status."""
    status = event.image.status.value if isinstance(event, ImageChanged) else None
    return event.image_id, event.type, status


class Probe(logging.Handler):
    """Counts image events (stamping when each was published), template renders by name, queue-full
    drops and queue depth on today's bus, CPU time, loop lag and the server's warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reset()

    def reset(self) -> None:
        self.events: Counter[str] = Counter()
        self.published: dict[int, list[tuple[float, str, str | None]]] = {}
        self.renders: Counter[str] = Counter()
        self.drops = 0
        self.depth = self.queue_size = 0  # deepest subscriber queue seen (with this event), its bound
        self.warnings: Counter[str] = Counter()
        self.cpu0 = time.process_time()
        self.lag = LoopLagMonitor()

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings[f"{record.name}: {record.msg}"] += 1

    def on_publish(self, bus: Any, event: Any) -> None:
        now = time.monotonic()
        image_id, kind, status = event_fields(event)
        self.events[kind] += 1
        self.published.setdefault(image_id, []).append((now, kind, status))
        # The bus drops the oldest event of a subscriber whose queue is full (a subscriber is its
        # queue, or holds it as `.queue`).
        subscribers = [getattr(q, "queue", q) for q in getattr(bus, "_subscribers", ())]
        queues = [q for q in subscribers if isinstance(q, asyncio.Queue)]
        self.drops += sum(1 for q in queues if q.full())
        self.depth = max([self.depth, *(q.qsize() + 1 for q in queues)])
        self.queue_size = max([self.queue_size, *(q.maxsize for q in queues)])

    def install(self) -> None:
        import inspect

        import jinja2

        from capsearch.events import EventBus

        # Through Any: the wrappers take whatever the bus and jinja2 take, before and after a refactor.
        bus_class: Any = EventBus
        template_class: Any = jinja2.Template
        probe, publish, render = self, bus_class.publish, template_class.render
        if inspect.iscoroutinefunction(publish):

            async def apublish(bus: Any, *args: Any, **kwargs: Any) -> Any:
                probe.on_publish(bus, args[0] if args else kwargs.get("event"))
                return await publish(bus, *args, **kwargs)

            bus_class.publish = apublish
        else:

            def spublish(bus: Any, *args: Any, **kwargs: Any) -> Any:
                probe.on_publish(bus, args[0] if args else kwargs.get("event"))
                return publish(bus, *args, **kwargs)

            bus_class.publish = spublish

        def counted(template: jinja2.Template, *args: Any, **kwargs: Any) -> Any:
            probe.renders[template.name or "<string>"] += 1
            return render(template, *args, **kwargs)

        template_class.render = counted
        logging.getLogger().addHandler(self)

    def snapshot(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "published": self.published,
            "renders": dict(self.renders),
            "drops": self.drops,
            "depth": self.depth,
            "queue_size": self.queue_size,
            "warnings": dict(self.warnings),
            "cpu_s": time.process_time() - self.cpu0,
            "lag_p99_ms": self.lag.p99_ms(),
        }


def serve_main(settings_json: str, conn: Connection) -> None:
    from capsearch.app import create_app
    from capsearch.bench.fakemodels import FakeCaptioner, FakeEmbedder, FakeTranscriber

    probe = Probe()
    probe.install()
    settings = Settings.model_validate_json(settings_json)
    app = create_app(
        settings,
        captioner_factory=lambda _s: FakeCaptioner(),
        embedder_factory=lambda _s: FakeEmbedder(),
        transcriber_factory=lambda _s: FakeTranscriber(),
    )
    server = uvicorn.Server(
        uvicorn_config(app, settings.server, host="127.0.0.1", port=0, log_level="warning")
    )

    async def control() -> None:
        while not server.started:  # noqa: ASYNC110 — uvicorn exposes no "started" event
            await asyncio.sleep(0.05)
        conn.send(server.servers[0].sockets[0].getsockname()[1])
        while (command := await asyncio.get_running_loop().run_in_executor(None, conn.recv)) != "stop":
            if command == "reset":
                probe.lag.stop()
                probe.reset()
                probe.lag.start()
            conn.send(probe.snapshot())
        server.should_exit = True

    async def main() -> None:
        task = asyncio.create_task(control())
        await server.serve()
        task.cancel()
        probe.lag.stop()

    asyncio.run(main())
