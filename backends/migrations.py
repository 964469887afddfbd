"""`python main.py --migrate`: create the queue tables, or upgrade the ones an older version made,
and create the app's own tables.

The tables and their DDL live in backends/sql_tables.py; this module is the
command an operator (or the compose file's one-shot `migrate` service) runs.
The app's tables come from the metadata the command line passes in (cli.py:
the tables of `app.models.AppBase`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import MetaData

from backends.errors import BackendError
from backends.sql_engine import engine_from_url, masked, settings_url, tls_connect_args
from backends.sql_tables import create_missing_tables, create_tables, upgrade_tables
from config.settings import Settings


def migrate_command(
    args: argparse.Namespace, settings: Settings, app_tables: Sequence[MetaData] = ()
) -> int:
    """`main.py --migrate`: create or upgrade the queue tables, then create the missing
    tables of `app_tables`; print what changed and where.

    Exit code 0 on success (also when nothing was missing), 1 when the database
    failed; the message names the server, never its password.
    """
    del args
    # Not get_engine(): for SQLite that would create the tables before we look.
    engine = engine_from_url(
        settings_url(settings),
        pool_size=1,
        create_sqlite_tables=False,
        connect_args=tls_connect_args(settings),
    )
    target = masked(engine)
    try:
        added = upgrade_tables(engine)
        created = create_tables(engine)
        created_app = [name for meta in app_tables for name in create_missing_tables(engine, meta)]
    except BackendError as exc:
        print(f"migrate failed for {target}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if added:
        print(f"added columns {', '.join(added)} in {target}")
    if created:
        print(f"created tables {', '.join(created)} in {target}")
    if created_app:
        print(f"created app tables {', '.join(created_app)} in {target}")
    if not added and not created and not created_app:
        print(f"tables already present in {target}: nothing to do")
    return 0
