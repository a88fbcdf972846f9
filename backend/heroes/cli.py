"""The `heroes` command: migrate, serve, check."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sqlalchemy import create_engine, pool, text

from heroes.config import Settings, settings_or_exit
from heroes.db import migrate
from heroes.db.postgres import connect_options
from heroes.logs import configure_if_unconfigured, logging_config


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    # alembic's progress lines at INFO, in the service's log format (JSON by default).
    configure_if_unconfigured("info", settings.log_format)
    migrate.upgrade(settings, getattr(args, "revision", "head"))
    return 0


def _downgrade(settings: Settings, args: argparse.Namespace) -> int:
    configure_if_unconfigured("info", settings.log_format)
    migrate.downgrade(settings, args.revision)
    return 0


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    url = settings.sync_url
    connect_args = connect_options(settings) if not settings.is_sqlite else {}
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            revision = connection.execute(
                text("SELECT version_num FROM alembic_version")
            ).scalar_one_or_none()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"heroes: database check failed: {reason}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    schema = migrate.SchemaExpectation.of(settings)
    if not schema.accepts(revision):
        print(f"heroes: {schema.describe(revision)}: run `heroes migrate`", file=sys.stderr)
        return 1
    print(f"ok: {settings.environment} on {url.get_backend_name()}, schema at {revision}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    # One process: prometheus_client's ordinary registry, even where the image's environment
    # names a multiprocess directory for gunicorn.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if settings.is_sqlite:
        # The embedded default should give a working API in one command.
        _migrate(settings, args)
    uvicorn.run(
        "heroes.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        reload=args.reload,
        log_level=settings.log_level,
        # The application writes the access line itself (heroes.access, with the request id).
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heroes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    upgrade = sub.add_parser(
        "migrate", help="upgrade the database schema to head (safe to run concurrently)"
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    downgrade = sub.add_parser(
        "downgrade", help="roll the schema back to REVISION (e.g. before rolling back the image)"
    )
    downgrade.add_argument("revision", help="target revision, e.g. 0001, -1 or base")
    sub.add_parser("check", help="validate settings and database connectivity")
    serve = sub.add_parser("serve", help="run a local development server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--reload", action="store_true")
    return parser


COMMANDS = {"migrate": _migrate, "downgrade": _downgrade, "check": _check, "serve": _serve}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](settings_or_exit(), args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
