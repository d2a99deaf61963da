"""The `capsearch` command: serve, worker, migrate, models, reindex, import, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from capsearch.config import Settings, get_settings
from capsearch.errors import ModelUnavailableError


def _fail(message: str) -> int:
    print(f"capsearch: {message}", file=sys.stderr)
    return 2


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.db.migrate import downgrade, upgrade

    if args.revision.startswith("-") or args.down:
        downgrade(settings.database.url, args.revision if not args.down else args.down)
    else:
        upgrade(settings.database.url, args.revision)
    print(f"database at {args.down or args.revision}: {_safe_url(settings.database.url)}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.startup import StartupTimer

    # Counts from the process's start, so the breakdown logged at ready covers all of it.
    timer = StartupTimer(from_process_start=True)
    timer.lap("python and settings")
    from capsearch.app import SchemaOutOfDateError, check_schema, create_app
    from capsearch.ml.registry import ensure_available, profile_specs
    from capsearch.server import Server, uvicorn_config

    timer.lap("app imports")
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    # The app answers to the name it is served on (capsearch.hosts), so it must know a --host given here.
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"host": host})})
    # Checked before uvicorn starts so a missing model or schema is one clear line, not a traceback.
    try:
        with timer.step("model files check"):
            # Distributed mode: the models are the workers' (`capsearch worker`), not this process's.
            for spec in [] if settings.broker.enabled else profile_specs(settings.models):
                ensure_available(spec, settings.models)
        with timer.step("schema check"):
            asyncio.run(check_schema(settings.database.url))
        if settings.broker.enabled and (why := _broker_down(settings)):
            return _fail(why)
    except (ModelUnavailableError, SchemaOutOfDateError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot reach the database at {_safe_url(settings.database.url)}: {e}")
    print(f"capsearch serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    app = create_app(settings, startup=timer)
    Server(uvicorn_config(app, settings.server, host=host, port=port, log_level=args.log_level)).run()
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.app import SchemaOutOfDateError, check_schema
    from capsearch.broker.worker import main as worker_main
    from capsearch.broker.worker import parse_models
    from capsearch.ml.registry import ensure_available, profile_specs

    if not settings.broker.enabled:
        return _fail("a worker needs the broker: set CAPSEARCH_BROKER__URL (e.g. redis://127.0.0.1:6379/0)")
    if why := _broker_down(settings):
        return _fail(why)
    try:
        models = parse_models(args.models)
        if args.fake_batch_s is None:
            for spec in profile_specs(settings.models):
                if spec.role in models:
                    ensure_available(spec, settings.models)
        if "captioner" in models:  # it writes captions to the database
            asyncio.run(check_schema(settings.database.url))
    except (ValueError, ModelUnavailableError, SchemaOutOfDateError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot reach the database at {_safe_url(settings.database.url)}: {e}")
    return worker_main(settings, models, args.fake_batch_s)


def _broker_down(settings: Settings) -> str | None:
    """Why Redis cannot be used (one clear line instead of a traceback), or None."""
    import redis

    url = settings.broker.url or ""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as e:
        return f"Redis does not answer at {_safe_url(url)} (CAPSEARCH_BROKER__URL): {e}"
    return None


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.ml.catalog import download_profile, list_models

    if args.action == "download":
        profile = args.profile or settings.models.profile
        try:
            done = download_profile(settings.models, profile)
        except ModelUnavailableError as e:
            return _fail(str(e))
        for what, spec, where in done:
            print(f"{what:<12} {spec.model_id}  →  {where}")
        return 0
    rows = list_models(settings.models)
    cols = ["profile", "role", "id", "cached"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from capsearch.app import SchemaOutOfDateError
    from capsearch.importer import (
        Importer,
        ImportReport,
        ImportTargetError,
        api_client,
        find_files,
        format_report,
    )

    root = Path(args.directory).expanduser()
    if not root.exists():
        return _fail(f"{root} does not exist")
    files = find_files(root)
    report = ImportReport(found=len(files))

    async def run() -> None:
        nonlocal report
        async with api_client(settings, args.server, args.local) as (client, target):
            print(f"Importing {len(files)} file(s) from {root} into {target}", file=sys.stderr)
            with tqdm(total=len(files), unit="file", dynamic_ncols=True) as bar:

                def advance(n: int) -> None:
                    bar.update(n)

                importer = Importer(client, settings.limits, batch_size=args.batch, on_progress=advance)
                report = importer.report
                await importer.run(files)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        print(format_report(report, root, interrupted=True))
        return 130
    except (ModelUnavailableError, SchemaOutOfDateError, ImportTargetError) as e:
        return _fail(str(e))
    print(format_report(report, root))
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.bench.run import run_benchmarks

    return run_benchmarks(settings, quick=args.quick, only=args.only)


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.app import SchemaOutOfDateError, check_schema
    from capsearch.compose import index_dir
    from capsearch.db.session import create_engine, session_factory
    from capsearch.ml.registry import embedder_dim, spec_for
    from capsearch.services.reindex import rebuild_saved_index

    spec = spec_for(settings.models, "embedder")
    try:
        dim = embedder_dim(spec, settings.models)
    except ModelUnavailableError as e:
        return _fail(str(e))
    where = index_dir(settings)

    async def run() -> tuple[int, str, int]:
        await check_schema(settings.database.url)
        engine = create_engine(settings.database.url)
        try:
            sessions = session_factory(engine)
            return await rebuild_saved_index(
                settings.search, sessions, model=spec.name, dim=dim, index_dir=where
            )
        finally:
            await engine.dispose()

    try:
        count, kind, missing = asyncio.run(run())
    except SchemaOutOfDateError as e:
        return _fail(str(e))
    print(f"search index rebuilt from the database: {count} vectors ({kind}, {spec.name}) in {where}")
    if missing:
        print(f"{missing} caption(s) have no vector yet; the server embeds them when it next starts.")
    # A server that is running keeps its own (equally complete) index in memory and saves it again.
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="capsearch", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the web app and API")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="serve models to the web replicas over Redis (distributed mode)")
    w.add_argument("--models", default="captioner,transcriber,embedder", help="comma-separated subset")
    w.add_argument(
        "--fake-batch-s",
        type=float,
        metavar="S",
        help="stand-in models costing S seconds per batch (benchmarks and tests; no weights needed)",
    )
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("migrate", help="bring the database schema up to date (Alembic)")
    m.add_argument("revision", nargs="?", default="head")
    m.add_argument("--down", metavar="REV", help="downgrade to REV (e.g. base)")
    m.set_defaults(func=cmd_migrate)

    mo = sub.add_parser("models", help="download or list the models of a profile")
    mo.add_argument("action", choices=["download", "list"])
    mo.add_argument("--profile", choices=["default", "tiny"])
    mo.set_defaults(func=cmd_models)

    r = sub.add_parser("reindex", help="rebuild the search index from the embeddings in the database")
    r.set_defaults(func=cmd_reindex)

    im = sub.add_parser("import", help="add every image below a folder (skips what is already there)")
    im.add_argument("directory")
    im.add_argument("--batch", type=int, default=8, help="files per request (default 8)")
    im.add_argument("--server", help="URL of the capsearch server (default: from settings)")
    im.add_argument("--local", action="store_true", help="do not use a running server; import in-process")
    im.set_defaults(func=cmd_import)

    b = sub.add_parser("bench", help="print benchmark tables (see docs/benchmarks.md)")
    b.add_argument("--quick", action="store_true", help="tiny profile only, fewer requests")
    b.add_argument(
        "--only",
        choices=["captioner", "models", "uploads", "search", "relevance", "voice", "feed", "scale"],
        help="run one group",
    )
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything loads OpenMP (torch, FAISS): its idle threads would otherwise spin after every
    # small call (a query embedding, a FAISS search) on cores the captioner is using. Measured on 2
    # cores, 32 uploading clients: the OpenVINO captioner 0.91 -> 0.86 s per image under load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces every plugin it loads at INFO; only its migration lines are worth showing.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # One line per HTTP request (the import's, the benchmarks') would bury progress bars and tables.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # FAISS narrates which of its builds it loads (and that the AVX2 one is absent: dispatch is dynamic).
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    return func(get_settings(), args)


if __name__ == "__main__":
    raise SystemExit(main())
