"""The `capsearch` command: serve, migrate, models, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

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
    import uvicorn

    from capsearch.app import SchemaOutOfDateError, check_schema, create_app
    from capsearch.server import uvicorn_config
    from capsearch.ml.registry import ensure_available, profile_specs

    host = args.host or settings.server.host
    port = args.port or settings.server.port
    # Checked before uvicorn starts so a missing model or schema is one clear line, not a traceback.
    try:
        for spec in profile_specs(settings.models):
            ensure_available(spec, settings.models)
        asyncio.run(check_schema(settings.database.url))
    except (ModelUnavailableError, SchemaOutOfDateError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot reach the database at {_safe_url(settings.database.url)}: {e}")
    print(f"capsearch serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.Server(uvicorn_config(create_app(settings), host=host, port=port, log_level=args.log_level)).run()
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.ml.registry import download_profile, list_models

    if args.action == "download":
        profile = args.profile or settings.models.profile
        try:
            done = download_profile(settings.models, profile)
        except ModelUnavailableError as e:
            return _fail(str(e))
        for spec, where in done:
            print(f"{spec.role:<12} {spec.model_id}  →  {where}")
        return 0
    rows = list_models(settings.models)
    cols = ["profile", "role", "id", "cached"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from capsearch.bench.run import run_benchmarks

    return run_benchmarks(settings, quick=args.quick, only=args.only)


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

    m = sub.add_parser("migrate", help="bring the database schema up to date (Alembic)")
    m.add_argument("revision", nargs="?", default="head")
    m.add_argument("--down", metavar="REV", help="downgrade to REV (e.g. base)")
    m.set_defaults(func=cmd_migrate)

    mo = sub.add_parser("models", help="download or list the models of a profile")
    mo.add_argument("action", choices=["download", "list"])
    mo.add_argument("--profile", choices=["default", "tiny"])
    mo.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="print benchmark tables (see docs/benchmarks.md)")
    b.add_argument("--quick", action="store_true", help="tiny profile only, fewer requests")
    b.add_argument("--only", choices=["captioner", "uploads"], help="run one group")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces every plugin it loads at INFO; only its migration lines are worth showing.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    return func(get_settings(), args)


if __name__ == "__main__":
    raise SystemExit(main())
